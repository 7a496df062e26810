//! What the shim knows of each file descriptor: a table of atomics indexed by
//! the descriptor (no allocation, no lock: hooks may run in signal handlers),
//! the peer of a deferred connect, the epoll set a socket waits in, and how
//! many deferred sockets have not been seen to start.
//!
//! Descriptors at or above [`MAX_FD`] are not tracked: the shim leaves them alone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Descriptors below this are tracked.
pub(crate) const MAX_FD: usize = 65536;

/// A TCP socket over IPv4 or IPv6 (made by `socket()` here).
pub(crate) const TCP: u32 = 1 << 0;
/// The program set TFO itself (`TCP_FASTOPEN*`, `MSG_FASTOPEN`): left alone.
pub(crate) const SELF_MANAGED: u32 = 1 << 1;
/// A client connection to report at its close.
pub(crate) const CLIENT: u32 = 1 << 2;
/// An accepted connection to report at its close.
pub(crate) const SERVER: u32 = 1 << 3;
/// A listener with TFO: its connections are reported.
pub(crate) const LISTENER: u32 = 1 << 4;
/// `connect()` was deferred to the first write (a cookie was cached).
pub(crate) const DEFERRED: u32 = 1 << 5;
/// The handshake is known to have started (checked with the kernel).
pub(crate) const STARTED: u32 = 1 << 6;
/// The shim started it with an empty send (the program read first).
pub(crate) const KICKED: u32 = 1 << 7;
/// Waits in an epoll set for input only.
pub(crate) const EPOLL_IN: u32 = 1 << 8;
/// Waits in an epoll set for input and output.
pub(crate) const EPOLL_INOUT: u32 = 1 << 9;
/// A blocking epoll wait has already returned while it waited for input and output.
pub(crate) const EPOLL_WAITED: u32 = 1 << 10;
/// Another descriptor or process may report the same socket (dup, fork): its
/// record carries the socket's inode, so `tfo wrap` counts it once.
pub(crate) const SHARED: u32 = 1 << 11;

static STATE: [AtomicU32; MAX_FD] = [const { AtomicU32::new(0) }; MAX_FD];
/// The peer of a deferred connect: family+port+scope, then the address.
static PEER: [[AtomicU64; 3]; MAX_FD] = [const { [const { AtomicU64::new(0) }; 3] }; MAX_FD];
/// Accepted connections: `tcpi_bytes_received` at accept.
static ACCEPT_BYTES: [AtomicU64; MAX_FD] = [const { AtomicU64::new(0) }; MAX_FD];
/// Accepted connections: state, options and `tcpi_data_segs_in` (low 16 bits) at accept.
static ACCEPT_FACTS: [AtomicU64; MAX_FD] = [const { AtomicU64::new(0) }; MAX_FD];
/// The epoll set a socket was added to.
static EPOLL_SET: [AtomicI32; MAX_FD] = [const { AtomicI32::new(-1) }; MAX_FD];
/// Deferred sockets not yet seen to start: hooks skip all checks while it is 0.
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// One more than the highest descriptor ever tracked: scans stop there.
static HIGH: AtomicUsize = AtomicUsize::new(0);

fn slot(fd: libc::c_int) -> Option<usize> {
    usize::try_from(fd).ok().filter(|&i| i < MAX_FD)
}

/// The state bits of `fd` (0 when untracked).
pub(crate) fn state(fd: libc::c_int) -> u32 {
    slot(fd).map_or(0, |i| STATE[i].load(Ordering::Acquire))
}

/// Sets bits of `fd`; returns the bits before.
pub(crate) fn set(fd: libc::c_int, bits: u32) -> u32 {
    let Some(i) = slot(fd) else { return 0 };
    HIGH.fetch_max(i + 1, Ordering::Relaxed);
    let before = STATE[i].fetch_or(bits, Ordering::AcqRel);
    if bits & DEFERRED != 0 && before & (DEFERRED | STARTED) == 0 {
        PENDING.fetch_add(1, Ordering::AcqRel);
    }
    if bits & STARTED != 0 && before & DEFERRED != 0 && before & STARTED == 0 {
        PENDING.fetch_sub(1, Ordering::AcqRel);
    }
    before
}

/// Clears bits of `fd`.
pub(crate) fn clear(fd: libc::c_int, bits: u32) {
    if let Some(i) = slot(fd) {
        STATE[i].fetch_and(!bits, Ordering::AcqRel);
    }
}

/// Forgets `fd` (it was closed, or its number is reused); returns its bits.
pub(crate) fn take(fd: libc::c_int) -> u32 {
    let Some(i) = slot(fd) else { return 0 };
    let before = STATE[i].swap(0, Ordering::AcqRel);
    EPOLL_SET[i].store(-1, Ordering::Relaxed);
    ACCEPT_FACTS[i].store(0, Ordering::Relaxed);
    if before & DEFERRED != 0 && before & STARTED == 0 {
        PENDING.fetch_sub(1, Ordering::AcqRel);
    }
    before
}

/// `new` is a duplicate of `old` (dup, dup2, dup3, F_DUPFD).
pub(crate) fn copy(old: libc::c_int, new: libc::c_int) {
    let (Some(o), Some(n)) = (slot(old), slot(new)) else { return };
    for (to, from) in PEER[n].iter().zip(&PEER[o]) {
        to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    ACCEPT_BYTES[n].store(ACCEPT_BYTES[o].load(Ordering::Relaxed), Ordering::Relaxed);
    ACCEPT_FACTS[n].store(ACCEPT_FACTS[o].load(Ordering::Relaxed), Ordering::Relaxed);
    // The copy is not in the original's epoll registration.
    let bits = STATE[o].load(Ordering::Acquire) & !(EPOLL_IN | EPOLL_INOUT | EPOLL_WAITED);
    if bits != 0 {
        set(old, SHARED);
        set(new, bits | SHARED);
    }
}

/// A fork is about to copy every tracked socket into a second process.
pub(crate) fn all_shared() {
    for state in STATE.iter().take(HIGH.load(Ordering::Relaxed)) {
        if state.load(Ordering::Acquire) != 0 {
            state.fetch_or(SHARED, Ordering::AcqRel);
        }
    }
}

/// Whether any deferred socket has not been seen to start.
pub(crate) fn any_pending() -> bool {
    PENDING.load(Ordering::Acquire) != 0
}

/// The descriptors that may be tracked: `0..high()`.
pub(crate) fn high() -> libc::c_int {
    HIGH.load(Ordering::Relaxed) as libc::c_int
}

/// Remembers the peer of a deferred connect.
pub(crate) fn set_peer(fd: libc::c_int, peer: SocketAddr) {
    let Some(i) = slot(fd) else { return };
    let (family, ip, scope) = match peer {
        SocketAddr::V4(a) => (4u64, a.ip().to_ipv6_mapped().octets(), 0u32),
        SocketAddr::V6(a) => (6u64, a.ip().octets(), a.scope_id()),
    };
    let head = family | (u64::from(peer.port()) << 8) | (u64::from(scope) << 32);
    PEER[i][0].store(head, Ordering::Relaxed);
    PEER[i][1].store(u64::from_ne_bytes(ip[..8].try_into().unwrap_or_default()), Ordering::Relaxed);
    PEER[i][2].store(u64::from_ne_bytes(ip[8..].try_into().unwrap_or_default()), Ordering::Relaxed);
}

/// The peer remembered by [`set_peer`].
pub(crate) fn peer(fd: libc::c_int) -> Option<SocketAddr> {
    let i = slot(fd)?;
    let head = PEER[i][0].load(Ordering::Relaxed);
    let mut ip = [0u8; 16];
    ip[..8].copy_from_slice(&PEER[i][1].load(Ordering::Relaxed).to_ne_bytes());
    ip[8..].copy_from_slice(&PEER[i][2].load(Ordering::Relaxed).to_ne_bytes());
    let port = ((head >> 8) & 0xffff) as u16;
    let v6 = Ipv6Addr::from(ip);
    match head & 0xff {
        4 => Some(SocketAddr::new(IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)), port)),
        6 => Some(SocketAddr::V6(SocketAddrV6::new(v6, port, 0, (head >> 32) as u32))),
        _ => None,
    }
}

/// Remembers what `tcp_info` said of an accepted connection at accept.
pub(crate) fn set_accept_facts(fd: libc::c_int, state: u8, options: u8, data_segs_in: u32, bytes_received: u64) {
    let Some(i) = slot(fd) else { return };
    ACCEPT_BYTES[i].store(bytes_received, Ordering::Relaxed);
    let facts = u64::from(state) << 56 | u64::from(options) << 48 | 1 << 40 | u64::from(data_segs_in);
    ACCEPT_FACTS[i].store(facts, Ordering::Relaxed);
}

/// What [`set_accept_facts`] kept: (state, options, data_segs_in, bytes_received).
pub(crate) fn accept_facts(fd: libc::c_int) -> Option<(u8, u8, u32, u64)> {
    let i = slot(fd)?;
    let facts = ACCEPT_FACTS[i].load(Ordering::Relaxed);
    if facts & (1 << 40) == 0 {
        return None;
    }
    let bytes = ACCEPT_BYTES[i].load(Ordering::Relaxed);
    Some(((facts >> 56) as u8, (facts >> 48) as u8, facts as u32, bytes))
}

/// Records that `fd` waits in the epoll set `epfd` with these events (or left it).
pub(crate) fn set_epoll(fd: libc::c_int, epfd: Option<libc::c_int>, events: u32) {
    let Some(i) = slot(fd) else { return };
    clear(fd, EPOLL_IN | EPOLL_INOUT | EPOLL_WAITED);
    let Some(epfd) = epfd else {
        EPOLL_SET[i].store(-1, Ordering::Relaxed);
        return;
    };
    EPOLL_SET[i].store(epfd, Ordering::Relaxed);
    let input = events & libc::EPOLLIN as u32 != 0;
    let output = events & libc::EPOLLOUT as u32 != 0;
    match (input, output) {
        (true, false) => {
            set(fd, EPOLL_IN);
        }
        (true, true) => {
            set(fd, EPOLL_INOUT);
        }
        _ => {}
    }
}

/// The epoll set `fd` waits in.
pub(crate) fn epoll_set(fd: libc::c_int) -> Option<libc::c_int> {
    let i = slot(fd)?;
    Some(EPOLL_SET[i].load(Ordering::Relaxed)).filter(|&e| e >= 0)
}
