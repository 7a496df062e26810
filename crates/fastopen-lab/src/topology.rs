//! The lab topology: a client namespace and a server namespace joined by the
//! userspace link, with addresses from the benchmarking range and a ULA prefix.
//!
//! ```text
//!  [client ns]  tfo0 198.18.0.1 / fdf0:7466:6f00::1
//!        |  TUN fd
//!   forwarder thread (delay, jitter, loss, rate, middleboxes)
//!        |  TUN fd
//!  [server ns]  tfo0 198.18.0.2 / fdf0:7466:6f00::2
//! ```
//!
//! Nothing is routed to or from the host's namespace: the two namespaces have
//! only loopback and the link, and no default route. `net.ipv4.tcp_fastopen`
//! is set inside them. Dropping the [`Lab`] stops the link and deletes both
//! namespaces (also during a panic's unwinding); namespaces left by a crashed
//! run are removed when the next lab starts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::link::{Forwarder, LinkCounters, LinkStats, PathConfig};
use crate::netns::{ip, remove_leftovers, unique_base, LabLock, NamedNetnsError, Netns};

/// The client's IPv4 address (198.18.0.0/15, RFC 2544 benchmarking range).
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The server's IPv4 address.
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The client's IPv6 address (a unique-local prefix of the lab's own).
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfdf0, 0x7466, 0x6f00, 0, 0, 0, 0, 1);
/// The server's IPv6 address.
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfdf0, 0x7466, 0x6f00, 0, 0, 0, 0, 2);
/// Whether `ip` is in the lab's ranges (198.18.0.0/15, fdf0:7466:6f00::/48):
/// addresses that exist only inside namespaces the lab creates.
pub fn is_lab_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 198 && v4.octets()[1] & 0xfe == 18,
        IpAddr::V6(v6) => v6.segments()[..3] == CLIENT_V6.segments()[..3],
    }
}

/// The link device's name in both namespaces.
pub const LINK_DEVICE: &str = "tfo0";

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The emulated path.
    pub path: PathConfig,
    /// `net.ipv4.tcp_fastopen` in both namespaces (3: client and server).
    pub tcp_fastopen: u32,
    /// MTU of the link (1500 like Ethernet; up to 65535).
    pub mtu: u16,
    /// TSO/GSO across the link: the kernels pass 64 KiB GSO packets, the
    /// link splits them into MTU segments (each delayed, lost, inspected
    /// alone) and coalesces them again: bulk TCP at several times the rate.
    /// Captures on the lab's devices then show the GSO packets.
    pub offload: bool,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig { path: PathConfig::default(), tcp_fastopen: 3, mtu: 1500, offload: false }
    }
}

/// Why a lab could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A namespace step failed.
    #[error(transparent)]
    Netns(#[from] NamedNetnsError),
    /// Creating a TUN device failed.
    #[error("creating the TUN device in {namespace}: {source} (is /dev/net/tun there? `modprobe tun`)")]
    Tun {
        /// Which namespace.
        namespace: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Starting the forwarder failed.
    #[error("starting the link forwarder: {0}")]
    Link(#[source] std::io::Error),
    /// Opening the sockets of a fleet's replayer failed.
    #[error("starting the fleet's SYN replayer: {0}")]
    Replayer(#[source] std::io::Error),
    /// A fleet's replays need backends that own the VIP.
    #[error("replaying a SYN to another backend needs the VIP mode (under DNAT each backend has its own address)")]
    ReplayNeedsVip,
}

/// A running lab. Field order matters: the link stops before the namespaces
/// go, and the ownership lock is released last.
#[derive(Debug)]
pub struct Lab {
    forwarder: Forwarder,
    client: Netns,
    server: Netns,
    config: LabConfig,
    _lock: LabLock,
}

fn tun_in(ns: &Netns, mtu: u16, offload: bool) -> Result<tun_rs::SyncDevice, LabError> {
    let made = ns.run(|| tun_rs::DeviceBuilder::new().name(LINK_DEVICE).mtu(mtu).offload(offload).build_sync())?;
    made.map_err(|source| LabError::Tun { namespace: ns.name().to_string(), source })
}

fn configure(ns: &Netns, local: (Ipv4Addr, Ipv6Addr), peer: Ipv4Addr, mtu: u16) -> Result<(), NamedNetnsError> {
    let n = ns.name();
    ip(&["-n", n, "link", "set", LINK_DEVICE, "mtu", &mtu.to_string(), "up"])?;
    ip(&["-n", n, "addr", "add", &local.0.to_string(), "peer", &peer.to_string(), "dev", LINK_DEVICE])?;
    ip(&["-n", n, "-6", "addr", "add", &format!("{}/64", local.1), "dev", LINK_DEVICE, "nodad"])?;
    Ok(())
}

impl Lab {
    /// Builds the namespaces, the link and its forwarder. Needs root.
    pub fn start(config: LabConfig) -> Result<Lab, LabError> {
        if !crate::netns::is_root() {
            return Err(NamedNetnsError::NotRoot.into());
        }
        remove_leftovers();
        let base = unique_base();
        let lock = LabLock::acquire(&base)?;
        let client = Netns::create(&format!("{base}-client"))?;
        let server = Netns::create(&format!("{base}-server"))?;
        for ns in [&client, &server] {
            ns.set_sysctl("net.ipv4.tcp_fastopen", &config.tcp_fastopen.to_string())?;
        }
        let client_dev = tun_in(&client, config.mtu, config.offload)?;
        let server_dev = tun_in(&server, config.mtu, config.offload)?;
        configure(&client, (CLIENT_V4, CLIENT_V6), SERVER_V4, config.mtu)?;
        configure(&server, (SERVER_V4, SERVER_V6), CLIENT_V4, config.mtu)?;
        let start = if config.offload { Forwarder::start_offloaded } else { Forwarder::start };
        let forwarder = start(client_dev, server_dev, config.mtu, config.path.clone()).map_err(LabError::Link)?;
        Ok(Lab { forwarder, client, server, config, _lock: lock })
    }

    /// The client's namespace.
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The server's namespace.
    pub fn server(&self) -> &Netns {
        &self.server
    }

    /// The server's address, IPv4 or IPv6.
    pub fn server_ip(&self, ipv6: bool) -> IpAddr {
        if ipv6 {
            IpAddr::V6(SERVER_V6)
        } else {
            IpAddr::V4(SERVER_V4)
        }
    }

    /// The configuration the lab was built with.
    pub fn config(&self) -> &LabConfig {
        &self.config
    }

    /// The link's live counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        self.forwarder.stats()
    }

    /// Why the link stopped, if it failed; while this is `Some`, nothing crosses.
    pub fn link_failure(&self) -> Option<String> {
        self.forwarder.failure()
    }

    /// A copy of the link's counters.
    pub fn counters(&self) -> LinkCounters {
        self.forwarder.stats().snapshot()
    }

    /// Forgets the client's cached TFO cookies (its tcp_metrics), so that the
    /// next connection asks for a cookie again: a "cold" start.
    pub fn flush_cookies(&self) -> Result<(), NamedNetnsError> {
        ip(&["-n", self.client.name(), "tcp_metrics", "flush", "all"])
    }
}
