//! Every TCP socket of a network namespace, as the kernel's sock_diag
//! (inet_diag) reports it over netlink: a dump of all sockets with their
//! `tcp_info`, and the notifications sent when a socket is destroyed (so a
//! connection that lives for a millisecond is still seen). The messages are
//! encoded and decoded in `wire.rs` (pure); the socket calls are in `sys`.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::{netlink, sys};

mod wire;
pub use wire::*;

/// `SKNLGRP_INET_TCP_DESTROY` (1) and `SKNLGRP_INET6_TCP_DESTROY` (3), as a bind mask.
const DESTROY_GROUPS: u32 = group_bit(1) | group_bit(3);

/// A multicast group's bit in `nl_groups` (group N is bit N - 1).
const fn group_bit(group: u32) -> u32 {
    1 << (group - 1)
}
/// A sock_diag netlink socket for dumps.
#[derive(Debug)]
pub struct SockDiag {
    fd: OwnedFd,
    seq: u32,
}

impl SockDiag {
    /// Opens one in the calling thread's network namespace.
    pub fn open() -> Result<SockDiag> {
        let fd =
            sys::netlink_socket(sys::NETLINK_SOCK_DIAG, 0).map_err(Error::io("opening a sock_diag netlink socket"))?;
        Ok(SockDiag { fd, seq: 0 })
    }

    /// Every TCP socket of the namespace, IPv4 and IPv6, with its `tcp_info`.
    pub fn dump(&mut self) -> Result<Vec<DiagSocket>> {
        let mut sockets = Vec::new();
        for family in [2u8, 10] {
            self.seq = self.seq.wrapping_add(1);
            netlink::exchange(
                &self.fd,
                &dump_request(family, self.seq),
                "dumping sockets through sock_diag",
                |kind, body| {
                    if let Some(s) = (kind == SOCK_DIAG_BY_FAMILY).then(|| diag_socket(body)).flatten() {
                        sockets.push(s);
                    }
                },
            )?;
        }
        Ok(sockets)
    }
}

/// The kernel's notifications of destroyed TCP sockets (IPv4 and IPv6), each
/// with its last `tcp_info`: how connections that open and close between two
/// dumps are still seen. Needs CAP_NET_ADMIN.
#[derive(Debug)]
pub struct DestroyFeed {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl DestroyFeed {
    /// Subscribes in the calling thread's network namespace.
    pub fn open() -> Result<DestroyFeed> {
        let fd = sys::netlink_socket(sys::NETLINK_SOCK_DIAG, DESTROY_GROUPS)
            .map_err(Error::io("subscribing to sock_diag's destroy notifications (needs CAP_NET_ADMIN)"))?;
        Ok(DestroyFeed { fd, buf: vec![0u8; 256 << 10] })
    }

    /// The sockets destroyed since the last call, waiting up to `timeout` for
    /// the first. If the kernel's queue overflowed (the reader fell behind),
    /// notifications were lost and [`Destroyed::overflowed`] says so.
    pub fn recv(&mut self, timeout: Duration) -> Result<Destroyed> {
        let mut out = Destroyed::default();
        let mut wait = Some(timeout);
        let mut reads = 0;
        loop {
            let n = match sys::netlink_recv(self.fd.as_fd(), &mut self.buf, wait) {
                Ok(n) => n,
                Err(e) if sys::receive_queue_overflowed(&e) => {
                    out.overflowed = true;
                    continue;
                }
                Err(e) => return Err(Error::io("reading sock_diag's destroy notifications")(e)),
            };
            if n == 0 {
                return Ok(out);
            }
            out.sockets.extend(parse(&self.buf[..n]).into_iter().filter_map(|m| match m {
                Message::Socket(s) => Some(s),
                _ => None,
            }));
            // Take what else is queued, without waiting; at most DRAIN_READS
            // reads per call, so a flood cannot hold the caller (the rest waits
            // in the socket for the next call).
            reads += 1;
            if reads >= DRAIN_READS {
                return Ok(out);
            }
            wait = Some(Duration::ZERO);
        }
    }

    /// The receive buffer the kernel granted the subscription, in bytes (8 MiB
    /// asked; less when net.core.rmem_max caps it and CAP_NET_ADMIN cannot pass it).
    pub fn receive_buffer(&self) -> Result<usize> {
        sys::netlink_rcvbuf(self.fd.as_fd()).map_err(Error::io("reading the notification socket's buffer size"))
    }
}

/// The most reads one [`DestroyFeed::recv`] makes (each up to 256 KiB).
const DRAIN_READS: usize = 64;

/// What one [`DestroyFeed::recv`] got.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Destroyed {
    /// The destroyed sockets, each with its last `tcp_info`.
    pub sockets: Vec<DiagSocket>,
    /// The kernel dropped notifications before these (ENOBUFS): some
    /// connections closed unseen.
    pub overflowed: bool,
}
