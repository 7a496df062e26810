//! The client's TFO cookie cache: the kernel's tcp_metrics, one entry per
//! destination (and source address), read over generic netlink as
//! `ip tcp_metrics` shows it, with the verdict "the next connection there
//! will carry data in its SYN". The messages are built and decoded in
//! `wire.rs` (pure); the socket calls are in `sys`.

use std::net::IpAddr;
use std::os::fd::OwnedFd;

use crate::error::{Error, Result};
use crate::{netlink, sys};

mod wire;
pub use wire::*;

/// A generic netlink socket on which tcp_metrics was found.
#[derive(Debug)]
pub struct TcpMetrics {
    fd: OwnedFd,
    family: u16,
    seq: u32,
}

impl TcpMetrics {
    /// Opens one in the calling thread's network namespace (no privilege needed).
    pub fn open() -> Result<TcpMetrics> {
        let fd = sys::netlink_socket(sys::NETLINK_GENERIC, 0).map_err(Error::io("opening a generic netlink socket"))?;
        let mut family = None;
        netlink::exchange(&fd, &family_request(1), "looking up generic netlink's tcp_metrics family", |kind, body| {
            if kind == GENL_ID_CTRL {
                family = family.or(family_id(body));
            }
        })?;
        let family = family.ok_or(Error::Proc { path: "genetlink", problem: "no tcp_metrics family in the answer" })?;
        Ok(TcpMetrics { fd, family, seq: 1 })
    }

    /// Every destination in the cache, IPv4 and IPv6.
    pub fn dump(&mut self) -> Result<Vec<CachedDestination>> {
        self.seq = self.seq.wrapping_add(1);
        let mut out = Vec::new();
        let request = dump_request(self.family, self.seq);
        netlink::exchange(&self.fd, &request, "dumping tcp_metrics", |kind, body| {
            if let Some(d) = (kind == self.family).then(|| destination(body)).flatten() {
                out.push(d);
            }
        })?;
        Ok(out)
    }
}

impl TcpMetrics {
    /// The cookie cached for `peer` (from any source address), if any.
    pub fn cookie_for(&mut self, peer: IpAddr) -> Result<Option<Vec<u8>>> {
        Ok(self.dump()?.into_iter().filter(|d| d.peer == peer).find_map(|d| d.cookie))
    }

    /// Forgets what is cached for `peer` (its cookie included), as `ip
    /// tcp_metrics delete PEER` does; nothing cached is not an error. Needs
    /// CAP_NET_ADMIN in the namespace.
    pub fn forget(&mut self, peer: IpAddr) -> Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let request = delete_request(self.family, self.seq, peer);
        match netlink::exchange(&self.fd, &request, "deleting a tcp_metrics entry", |_, _| {}) {
            Err(Error::Io { source, .. }) if sys::is_no_entry(&source) => Ok(()),
            other => other,
        }
    }
}
