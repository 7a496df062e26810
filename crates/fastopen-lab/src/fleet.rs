//! A fleet: a client namespace, a load-balancer namespace that is a real
//! Linux one (iptables), and N backend namespaces, joined by veth pairs.
//!
//! ```text
//!  [client] lb 198.18.1.2 ── c 198.18.1.1 [balancer] b0 198.18.16.1 ── lb 198.18.16.2 [backend 0]
//!                                                    b1 198.18.17.1 ── lb 198.18.17.2 [backend 1] ...
//!  clients connect to the VIP 198.19.0.1
//! ```
//!
//! Two ways to balance, both round robin per connection (iptables `statistic
//! --mode nth`):
//! - [`BalancerMode::Vip`] (direct server return, anycast): every backend owns
//!   the VIP; the balancer marks each new connection (CONNMARK) and routes it
//!   by mark to one backend. A backend sees (client, VIP), so backends that
//!   share a key issue the same cookie.
//! - [`BalancerMode::Dnat`]: the balancer rewrites the VIP to a backend's own
//!   address; a backend sees (client, its address), so cookies differ even
//!   with one key.
//!
//! [`Fleet::replay_syn_data_to_next`] is the fleet's replaying network: each
//! SYN with data that reaches backend *i* is sent again, a little later, to
//! backend *i+1*, which does not hold the original connection.
//! Everything is removed on drop, like the [`Lab`](crate::Lab).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fastopen_wire::packet::TcpPacket;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::{ip, remove_leftovers, unique_base, LabLock, NamedNetnsError, Netns};
use crate::topology::LabError;

/// The address clients connect to (198.18.0.0/15, RFC 2544 benchmarking range).
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The client's address.
pub const FLEET_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const BALANCER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The most backends a fleet has.
pub const MAX_BACKENDS: usize = 64;

/// How the balancer spreads connections over the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalancerMode {
    /// Every backend owns the VIP; connections are routed to one (DSR).
    Vip,
    /// The VIP is rewritten to a backend's own address (DNAT).
    Dnat,
}

/// How to build a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// How many backends (1 to [`MAX_BACKENDS`]).
    pub backends: usize,
    /// How the balancer balances.
    pub mode: BalancerMode,
    /// `net.ipv4.tcp_fastopen` in the client and the backends.
    pub tcp_fastopen: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig { backends: 2, mode: BalancerMode::Vip, tcp_fastopen: 3 }
    }
}

/// A running fleet. The lock is released last, after the namespaces go.
#[derive(Debug)]
pub struct Fleet {
    client: Netns,
    balancer: Netns,
    backends: Vec<Netns>,
    config: FleetConfig,
    _lock: LabLock,
}

/// Backend `i`'s own address.
pub fn backend_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 16 + i as u8, 2)
}

fn balancer_side(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 16 + i as u8, 1)
}

/// The firewall mark (and routing table − 100) that sends a packet to backend `i`.
fn mark_of(i: usize) -> u32 {
    i as u32 + 1
}

fn veth(a: &Netns, a_dev: &str, a_ip: Ipv4Addr, b: &Netns, b_dev: &str, b_ip: Ipv4Addr) -> Result<(), LabError> {
    ip(&["-n", a.name(), "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b.name()])?;
    for (ns, dev, addr) in [(a, a_dev, a_ip), (b, b_dev, b_ip)] {
        ip(&["-n", ns.name(), "addr", "add", &format!("{addr}/24"), "dev", dev])?;
        ip(&["-n", ns.name(), "link", "set", dev, "up"])?;
    }
    Ok(())
}

fn iptables(ns: &Netns, rule: &str) -> Result<(), NamedNetnsError> {
    ns.exec("iptables", &rule.split(' ').collect::<Vec<_>>(), "iptables")
}

impl Fleet {
    /// Builds the namespaces, links, routes and the balancer's rules. Needs
    /// root and `iptables`.
    pub fn start(config: FleetConfig) -> Result<Fleet, LabError> {
        if !crate::netns::is_root() {
            return Err(NamedNetnsError::NotRoot.into());
        }
        let n = config.backends.clamp(1, MAX_BACKENDS);
        remove_leftovers();
        let base = unique_base();
        let lock = LabLock::acquire(&base)?;
        let client = Netns::create(&format!("{base}-client"))?;
        let balancer = Netns::create(&format!("{base}-lb"))?;
        let backends = (0..n).map(|i| Netns::create(&format!("{base}-b{i}"))).collect::<Result<Vec<_>, _>>()?;
        let fleet = Fleet { client, balancer, backends, config: FleetConfig { backends: n, ..config }, _lock: lock };
        fleet.wire()?;
        Ok(fleet)
    }

    fn wire(&self) -> Result<(), LabError> {
        let (lb, vip, n) = (&self.balancer, VIP.to_string(), self.backends.len());
        // The balancer forwards, and replies from any backend come back with
        // the VIP as source on another device: no reverse-path filter.
        lb.set_sysctl("net.ipv4.ip_forward", "1")?;
        lb.set_sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        lb.set_sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        for ns in std::iter::once(&self.client).chain(&self.backends) {
            ns.set_sysctl("net.ipv4.tcp_fastopen", &self.config.tcp_fastopen.to_string())?;
        }
        veth(&self.client, "lb", FLEET_CLIENT_V4, lb, "c", BALANCER_CLIENT_SIDE)?;
        ip(&["-n", self.client.name(), "route", "add", "default", "via", &BALANCER_CLIENT_SIDE.to_string()])?;
        for (i, backend) in self.backends.iter().enumerate() {
            veth(lb, &format!("b{i}"), balancer_side(i), backend, "lb", backend_ip(i))?;
            ip(&["-n", backend.name(), "route", "add", "default", "via", &balancer_side(i).to_string()])?;
            let via = backend_ip(i).to_string();
            match self.config.mode {
                BalancerMode::Vip => {
                    ip(&["-n", backend.name(), "addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
                    // A route to the VIP through this backend, for packets marked for it
                    // (new connections by CONNMARK, the replayer's packets by SO_MARK).
                    let table = (100 + mark_of(i)).to_string();
                    ip(&["-n", lb.name(), "route", "add", &vip, "via", &via, "table", &table])?;
                    ip(&["-n", lb.name(), "rule", "add", "fwmark", &mark_of(i).to_string(), "table", &table])?;
                    // CONNMARK does not end the chain: every rule sees every new connection.
                    let nth = format!("--mode nth --every {n} --packet {i}");
                    iptables(
                        lb,
                        &format!(
                            "-t mangle -A PREROUTING -d {vip} -p tcp -m conntrack --ctstate NEW -m statistic {nth} \
                             -j CONNMARK --set-mark {}",
                            mark_of(i)
                        ),
                    )?;
                }
                // DNAT ends the chain: rule i sees only what rules before it left,
                // so it takes one in N - i of those.
                BalancerMode::Dnat => iptables(
                    lb,
                    &format!(
                        "-t nat -A PREROUTING -d {vip} -p tcp -m statistic --mode nth --every {} --packet 0 \
                         -j DNAT --to-destination {via}",
                        n - i
                    ),
                )?,
            }
        }
        if self.config.mode == BalancerMode::Vip {
            iptables(lb, &format!("-t mangle -A PREROUTING -d {vip} -j CONNMARK --restore-mark"))?;
        }
        Ok(())
    }

    /// The client's namespace.
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The balancer's namespace.
    pub fn balancer(&self) -> &Netns {
        &self.balancer
    }

    /// The backends' namespaces.
    pub fn backends(&self) -> &[Netns] {
        &self.backends
    }

    /// Where clients connect: the VIP.
    pub fn vip(&self) -> IpAddr {
        IpAddr::V4(VIP)
    }

    /// The address a backend's servers bind: the VIP in VIP mode, the
    /// backend's own address under DNAT (`0.0.0.0` works in both).
    pub fn bind_ip(&self, backend: usize) -> IpAddr {
        match self.config.mode {
            BalancerMode::Vip => IpAddr::V4(VIP),
            BalancerMode::Dnat => IpAddr::V4(backend_ip(backend)),
        }
    }

    /// The configuration the fleet runs with.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Forgets the client's cached cookies.
    pub fn flush_cookies(&self) -> Result<(), NamedNetnsError> {
        ip(&["-n", self.client.name(), "tcp_metrics", "flush", "all"])
    }

    /// Starts the fleet's replaying network: each SYN with data that reaches
    /// backend *i* is sent again `after` later to backend *i+1* (mod N), as a
    /// duplicated or re-sent SYN would arrive at a server that does not hold
    /// the original connection. VIP mode only. Stops when dropped.
    pub fn replay_syn_data_to_next(&self, after: Duration) -> Result<Replayer, LabError> {
        if self.config.mode != BalancerMode::Vip {
            return Err(LabError::ReplayNeedsVip);
        }
        // Raw IPv4 out of the balancer (IPPROTO_RAW: the packet carries its
        // header), routed by its mark.
        let raw = self.balancer.run(|| Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))))?;
        let raw = raw.map_err(LabError::Replayer)?;
        let stop = Arc::new(AtomicBool::new(false));
        let replayed = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let (tx, rx) = mpsc::channel::<(Instant, usize, Vec<u8>)>();
        let mut threads = Vec::new();
        let n = self.backends.len();
        for (i, backend) in self.backends.iter().enumerate() {
            // ETH_P_IP in network byte order: every IPv4 packet the backend sees.
            let capture = backend.run(|| Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(0x0008))))?;
            let capture = capture.map_err(LabError::Replayer)?;
            capture.set_read_timeout(Some(Duration::from_millis(50))).map_err(LabError::Replayer)?;
            let (stop, seen, tx) = (stop.clone(), seen.clone(), tx.clone());
            threads.push(std::thread::spawn(move || {
                capture_syn_data(&capture, &stop, &seen, |packet| {
                    let _ = tx.send((Instant::now() + after, (i + 1) % n, packet));
                })
            }));
        }
        drop(tx);
        let (stop_sender, count) = (stop.clone(), replayed.clone());
        threads.push(std::thread::spawn(move || {
            let destination = SockAddr::from(SocketAddr::new(IpAddr::V4(VIP), 0));
            while !stop_sender.load(Ordering::Relaxed) {
                let Ok((due, backend, packet)) = rx.recv_timeout(Duration::from_millis(50)) else { continue };
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if raw.set_mark(mark_of(backend)).is_ok() && raw.send_to(&packet, &destination).is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        Ok(Replayer { stop, threads, replayed })
    }
}

/// Reads packets until `stop`, passing each SYN with data for the VIP that
/// was not seen before (the replay itself is seen again at its target) to `replay`.
fn capture_syn_data(
    capture: &Socket,
    stop: &AtomicBool,
    seen: &Mutex<HashSet<(IpAddr, u16, u32)>>,
    replay: impl Fn(Vec<u8>),
) {
    use std::io::Read;
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok(len) = (&*capture).read(&mut buf) else { continue };
        let Ok(p) = TcpPacket::parse_ip(&buf[..len]) else { continue };
        if p.dst != IpAddr::V4(VIP) || !p.flags.is_syn() || p.flags.is_syn_ack() || p.payload.is_empty() {
            continue;
        }
        let first = seen.lock().is_ok_and(|mut seen| seen.insert((p.src, p.src_port, p.seq)));
        // Captured on a veth, the checksum may be left to offload (partial).
        let mut packet = buf[..len].to_vec();
        if first && fastopen_wire::rewrite::fix_tcp_checksum(&mut packet).is_ok() {
            replay(packet);
        }
    }
}

/// The fleet's replaying network, running until dropped.
#[derive(Debug)]
pub struct Replayer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    replayed: Arc<AtomicU64>,
}

impl Replayer {
    /// How many SYNs were replayed so far.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }
}

impl Drop for Replayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
