//! Records to `tfo wrap`: one per connection at its close, one hello per
//! process image. They go through the pipe `tfo wrap` made (its write end is
//! inherited, non-blocking); a full pipe drops the record and counts it.
//!
//! Before each write the pipe is recognised by its inode: if the program
//! closed it behind the shim's back (a raw syscall) and the number now names
//! one of its own files, nothing is written there.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};

use fastopen::sock_diag::Role;
use fastopen::wrap::{encode, RecordFlags, RecordHead, RecordKind, RECORD_LEN};

use crate::fds;
use crate::sys::{self, KeepErrno};

static REPORT_FD: AtomicI32 = AtomicI32::new(-1);
static REPORT_INODE: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU32 = AtomicU32::new(0);
/// The process name, read at load (exec gives a new one; fork keeps it).
static COMM: [AtomicU8; 16] = [const { AtomicU8::new(0) }; 16];
/// This process's id, read at load and again in the child of a fork.
static PID: AtomicU32 = AtomicU32::new(0);

/// Reads the process id again: called at load and in a fork's child.
pub(crate) fn note_pid() {
    PID.store(sys::pid(), Ordering::Relaxed);
}

fn comm() -> [u8; 16] {
    let mut name = [0u8; 16];
    for (out, c) in name.iter_mut().zip(&COMM) {
        *out = c.load(Ordering::Relaxed);
    }
    name
}

/// Takes the report descriptor of the settings, if it is open.
pub(crate) fn open(fd: Option<i32>) {
    note_pid();
    for (c, b) in COMM.iter().zip(sys::process_name()) {
        c.store(b, Ordering::Relaxed);
    }
    let Some(fd) = fd else { return };
    let inode = sys::inode(fd);
    if inode != 0 {
        REPORT_INODE.store(inode, Ordering::Relaxed);
        REPORT_FD.store(fd, Ordering::Release);
    }
}

/// The report descriptor: the shim pretends to close it.
pub(crate) fn is_report_fd(fd: libc::c_int) -> bool {
    fd >= 0 && REPORT_FD.load(Ordering::Acquire) == fd
}

/// The report descriptor, if any.
pub(crate) fn report_fd() -> Option<libc::c_int> {
    Some(REPORT_FD.load(Ordering::Acquire)).filter(|&fd| fd >= 0)
}

fn send(buf: &[u8; RECORD_LEN]) {
    let Some(fd) = report_fd() else { return };
    if sys::inode(fd) != REPORT_INODE.load(Ordering::Relaxed) {
        REPORT_FD.store(-1, Ordering::Release); // no longer ours
        return;
    }
    if !sys::write_all_once(fd, buf) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

fn head(kind: RecordKind, role: Role, flags: u8, inode: u64) -> RecordHead {
    RecordHead {
        kind,
        role,
        flags: RecordFlags(flags),
        pid: PID.load(Ordering::Relaxed),
        dropped: DROPPED.swap(0, Ordering::Relaxed),
        inode,
        comm: comm(),
    }
}

/// Says that the shim loaded in this process.
pub(crate) fn hello() {
    let _errno = KeepErrno::new();
    let mut buf = [0u8; RECORD_LEN];
    encode(&mut buf, &head(RecordKind::Hello, Role::Client, 0, 0), None, None, &[], &[]);
    send(&buf);
}

/// Reports the connection on `fd` (with these state bits) before it closes.
/// A socket that never exchanged a packet (a deferred SYN never sent, a
/// connect that failed at once) is not a connection and is not reported.
pub(crate) fn connection(fd: libc::c_int, bits: u32, extra: u8) {
    if bits & (fds::CLIENT | fds::SERVER) == 0 || report_fd().is_none() {
        return;
    }
    let _errno = KeepErrno::new();
    let mut info = [0u8; sys::TCP_INFO_LEN];
    let len = sys::tcp_info(fd, &mut info);
    let segs_out = sys::info_u32(&info, len, sys::OFF_SEGS_OUT).unwrap_or(1);
    let segs_in = sys::info_u32(&info, len, sys::OFF_SEGS_IN).unwrap_or(1);
    if len == 0 || segs_out == 0 || segs_in == 0 {
        return;
    }
    let role = if bits & fds::SERVER != 0 { Role::Server } else { Role::Client };
    let mut flags = extra;
    if bits & fds::DEFERRED != 0 {
        flags |= RecordFlags::DEFERRED;
    }
    if bits & fds::KICKED != 0 {
        flags |= RecordFlags::KICKED;
    }
    // A server's outcome is the one at accept: rebuild those fields of tcp_info.
    let mut at_accept = [0u8; sys::OFF_DATA_SEGS_IN + 4];
    let at_accept_len = match fds::accept_facts(fd) {
        Some((state, options, data_segs_in, bytes_received)) if role == Role::Server => {
            at_accept[0] = state;
            at_accept[5] = options;
            at_accept[sys::OFF_BYTES_RECEIVED..sys::OFF_BYTES_RECEIVED + 8]
                .copy_from_slice(&bytes_received.to_ne_bytes());
            at_accept[sys::OFF_DATA_SEGS_IN..].copy_from_slice(&data_segs_in.to_ne_bytes());
            at_accept.len()
        }
        _ => 0,
    };
    let local = sys::local_addr(fd);
    // The peer was kept at connect or accept (a closed peer has no address any more).
    let peer = fds::peer(fd).or_else(|| sys::peer_addr(fd));
    let mut buf = [0u8; RECORD_LEN];
    // The inode is asked for only when another descriptor or process may report the socket too.
    let inode = if bits & fds::SHARED != 0 { sys::inode(fd) } else { 0 };
    let head = head(RecordKind::Connection, role, flags, inode);
    encode(&mut buf, &head, local, peer, &info[..len], &at_accept[..at_accept_len]);
    send(&buf);
}

/// At exit: reports every connection still open.
pub(crate) fn all_open() {
    for fd in 0..fds::high() {
        let bits = fds::state(fd);
        if bits & (fds::CLIENT | fds::SERVER) != 0 {
            connection(fd, bits, RecordFlags::AT_EXIT);
            fds::take(fd);
        }
    }
}
