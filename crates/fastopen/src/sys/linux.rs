//! Linux socket options and calls for TCP Fast Open.
//!
//! Every libc call goes through [`syscall!`], which turns `-1` into
//! `io::Error::last_os_error()`. Constants are spelled out here rather than
//! taken from libc because older libc releases lack some of them; their values
//! are part of the kernel's stable ABI (`include/uapi/linux/tcp.h`).
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Marks the "not on this platform" error of the fallback backend; never made here.
#[derive(Debug)]
pub(crate) struct PlatformUnsupported;

impl std::fmt::Display for PlatformUnsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not supported on this platform")
    }
}

impl std::error::Error for PlatformUnsupported {}

/// `TCP_FASTOPEN` (tcp(7), Linux 3.7): enable server-side TFO with a queue length.
pub(crate) const TCP_FASTOPEN: libc::c_int = 23;
/// `TCP_FASTOPEN_CONNECT` (Linux 4.11): `connect()` defers the SYN to the first write.
pub(crate) const TCP_FASTOPEN_CONNECT: libc::c_int = 30;
/// `TCP_FASTOPEN_KEY` (Linux 4.15; primary+backup since 5.3): per-listener cookie key(s).
pub(crate) const TCP_FASTOPEN_KEY: libc::c_int = 33;
/// `TCP_FASTOPEN_NO_COOKIE` (Linux 4.15): data in SYN without a cookie.
pub(crate) const TCP_FASTOPEN_NO_COOKIE: libc::c_int = 34;
/// `MSG_FASTOPEN` (send(2), Linux 3.7): connect and send the data in the SYN.
pub(crate) const MSG_FASTOPEN: libc::c_int = 0x2000_0000;
/// Largest `struct tcp_info` we ask for; the kernel returns what it has (280 on 6.18).
pub(crate) const TCP_INFO_BUF: usize = 512;

macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)* ) ) => {{
        // SAFETY: each caller passes pointers and lengths that describe live,
        // correctly sized buffers; see the comment at the call site.
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// `setsockopt(fd, SOL_TCP, name, &value, sizeof(int))`.
pub(crate) fn set_tcp_int(fd: BorrowedFd<'_>, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // Pointer and length describe `value`, an int on this stack frame.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        libc::SOL_TCP,
        name,
        (&value as *const libc::c_int).cast(),
        size_of::<libc::c_int>() as libc::socklen_t,
    ))
    .map(drop)
}

/// `getsockopt(fd, SOL_TCP, name, &value, &len)` for an int option.
pub(crate) fn get_tcp_int(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // Pointer and length describe `value`; the kernel writes at most `len` bytes.
    syscall!(getsockopt(fd.as_raw_fd(), libc::SOL_TCP, name, (&mut value as *mut libc::c_int).cast(), &mut len,))?;
    Ok(value)
}

/// `setsockopt(fd, SOL_TCP, TCP_FASTOPEN_KEY, key, 16 | 32)`.
pub(crate) fn set_fastopen_key(fd: BorrowedFd<'_>, key_bytes: &[u8]) -> io::Result<()> {
    // Pointer and length describe the caller's slice.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        libc::SOL_TCP,
        TCP_FASTOPEN_KEY,
        key_bytes.as_ptr().cast(),
        key_bytes.len() as libc::socklen_t,
    ))
    .map(drop)
}

/// `getsockopt(fd, SOL_TCP, TCP_FASTOPEN_KEY)`: the socket's own keys (0, 16 or 32 bytes).
pub(crate) fn get_fastopen_key(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = [0u8; 32];
    let mut len = buf.len() as libc::socklen_t;
    // Pointer and length describe `buf`; the kernel writes at most `len` bytes.
    syscall!(getsockopt(fd.as_raw_fd(), libc::SOL_TCP, TCP_FASTOPEN_KEY, buf.as_mut_ptr().cast(), &mut len,))?;
    Ok(buf[..(len as usize).min(buf.len())].to_vec())
}

/// `getsockopt(fd, SOL_TCP, TCP_INFO)`: the raw bytes, as long as the kernel made them.
pub(crate) fn tcp_info_bytes(fd: BorrowedFd<'_>) -> io::Result<([u8; TCP_INFO_BUF], usize)> {
    let mut buf = [0u8; TCP_INFO_BUF];
    let mut len = buf.len() as libc::socklen_t;
    // Pointer and length describe `buf`; the kernel writes at most `len` bytes
    // and stores the count it wrote in `len`.
    syscall!(getsockopt(fd.as_raw_fd(), libc::SOL_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len,))?;
    Ok((buf, (len as usize).min(TCP_INFO_BUF)))
}

/// What ended a [`wait_ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The descriptor is ready (or in error: the next call says which).
    Ready,
    /// The deadline passed first.
    TimedOut,
    /// The cancellation descriptor became readable first.
    Cancelled,
}

/// Waits until `fd` is writable (`write`) or readable (otherwise), the
/// `deadline` passes, or `cancel` (a [`crate::Cancel`]'s pipe) becomes
/// readable. A signal (EINTR) does not restart the wait: the deadline stays
/// the deadline, and only the time left is waited again.
pub(crate) fn wait_ready(
    fd: BorrowedFd<'_>,
    write: bool,
    deadline: Option<Instant>,
    cancel: Option<BorrowedFd<'_>>,
) -> io::Result<Wait> {
    let events = if write { libc::POLLOUT } else { libc::POLLIN };
    let mut fds = [
        libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 },
        libc::pollfd { fd: cancel.map_or(-1, |c| c.as_raw_fd()), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        let millis = poll_millis(deadline.map(|d| d.saturating_duration_since(Instant::now())));
        // Pointer and count describe `fds`, two pollfds on this stack frame (a
        // negative fd is ignored by poll).
        match syscall!(poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis)) {
            Ok(0) => return Ok(Wait::TimedOut),
            Ok(_) if fds[1].revents != 0 => return Ok(Wait::Cancelled),
            Ok(_) => return Ok(Wait::Ready),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A poll(2) timeout in milliseconds, rounded up so that a wait never ends early.
fn poll_millis(left: Option<Duration>) -> libc::c_int {
    match left {
        None => -1,
        Some(t) => libc::c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX),
    }
}

/// An epoll instance watching one socket edge-triggered, so that every
/// wake-up of the socket's wait queue (new data, and the state change when the
/// handshake completes: `tcp_rcv_state_process` calls `sk_state_change`)
/// ends a wait, even while the socket stays readable and writable (a TFO
/// child in SYN_RECV already is). Separate from any other epoll (tokio's)
/// watching the same socket, so their readiness is untouched.
#[derive(Debug)]
pub(crate) struct StateWatch {
    epoll: std::os::fd::OwnedFd,
}

impl StateWatch {
    /// Watches `fd` (which must stay open while this lives).
    pub(crate) fn new(fd: BorrowedFd<'_>) -> io::Result<StateWatch> {
        use std::os::fd::FromRawFd;
        let raw = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: epoll_create1 returned a new descriptor that nothing else owns.
        let epoll = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let events =
            libc::EPOLLET | libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLERR | libc::EPOLLHUP;
        let mut event = libc::epoll_event { events: events as u32, u64: 0 };
        // Pointer describes one epoll_event on this stack frame.
        syscall!(epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut event))?;
        Ok(StateWatch { epoll })
    }

    /// Waits for the next wake-up of the socket, at most `timeout` (zero: do
    /// not wait; this also drains a pending one). Returns whether one came. A
    /// signal does not restart the wait: only the time left is waited again.
    pub(crate) fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        let deadline = Instant::now() + timeout;
        loop {
            let millis = poll_millis(Some(deadline.saturating_duration_since(Instant::now())));
            // Pointer describes one epoll_event on this stack frame; maxevents is 1.
            match syscall!(epoll_wait(self.epoll.as_raw_fd(), &mut event, 1, millis)) {
                Ok(n) => return Ok(n > 0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A [`StateWatch`] that tokio polls: readable when a wake-up is pending.
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub(crate) struct AsyncStateWatch(::tokio::io::unix::AsyncFd<StateWatch>);

#[cfg(feature = "tokio")]
impl AsRawFd for StateWatch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.epoll.as_raw_fd()
    }
}

#[cfg(feature = "tokio")]
impl AsyncStateWatch {
    /// Registers the watch with the current tokio runtime.
    pub(crate) fn new(watch: StateWatch) -> io::Result<AsyncStateWatch> {
        // SAFETY: the AsyncFd owns the StateWatch, which owns its epoll
        // descriptor and never closes or replaces it while it lives.
        let fd = unsafe { ::tokio::io::unix::AsyncFd::register_with_interest(watch, ::tokio::io::Interest::READABLE) };
        fd.map(AsyncStateWatch).map_err(io::Error::from)
    }

    /// Waits for the next wake-up of the socket, and takes it.
    pub(crate) async fn next(&self) -> io::Result<()> {
        let mut guard = self.0.readable().await?;
        self.0.get_ref().wait(Duration::ZERO)?;
        guard.clear_ready();
        Ok(())
    }
}

/// What a client-side TFO call's error means (the errno rules of tcp(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientErrno {
    /// EINPROGRESS: the SYN left (a cookie request, or data still queued).
    InProgress,
    /// EOPNOTSUPP: client TFO is off in this network namespace.
    TfoDisabled,
    /// Anything else: a real connect error.
    Other,
}

/// Classifies an error of `sendto(MSG_FASTOPEN)`, `connect()` or setting `TCP_FASTOPEN_CONNECT`.
pub(crate) fn client_errno(e: &io::Error) -> ClientErrno {
    match e.raw_os_error() {
        Some(libc::EINPROGRESS) => ClientErrno::InProgress,
        Some(libc::EOPNOTSUPP) => ClientErrno::TfoDisabled,
        _ => ClientErrno::Other,
    }
}

/// What a refused `TCP_FASTOPEN_KEY` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyErrno {
    /// ENOPROTOOPT: the kernel has no per-listener keys (before 4.15).
    NoOption,
    /// EINVAL: the length was refused (two keys before 5.3).
    BadLength,
    /// Anything else.
    Other,
}

/// Classifies an error of setting `TCP_FASTOPEN_KEY`.
pub(crate) fn key_errno(e: &io::Error) -> KeyErrno {
    match e.raw_os_error() {
        Some(libc::ENOPROTOOPT) => KeyErrno::NoOption,
        Some(libc::EINVAL) => KeyErrno::BadLength,
        _ => KeyErrno::Other,
    }
}

/// Whether an error says the host or process ran out of what a new
/// connection needs: descriptors (EMFILE, ENFILE) or local ports
/// (EADDRNOTAVAIL, the ephemeral range used up).
pub(crate) fn out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::EADDRNOTAVAIL))
}

/// Whether an accept failed for want of descriptors or kernel memory
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM): accepting again at once fails again.
pub(crate) fn accept_starved(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Whether a netlink read failed because the socket's receive queue
/// overflowed (ENOBUFS): messages were lost, the socket still works.
pub(crate) fn receive_queue_overflowed(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}

/// A TCP socket for `domain`, non-blocking and close-on-exec from its
/// creation (`SOCK_NONBLOCK | SOCK_CLOEXEC`): one socket(2) call, no fcntl.
pub(crate) fn nonblocking_tcp_socket(domain: socket2::Domain) -> io::Result<socket2::Socket> {
    socket2::Socket::new(domain, socket2::Type::STREAM.nonblocking(), Some(socket2::Protocol::TCP))
}

/// `uname(2)` release string, e.g. "6.18.44-foo".
pub(crate) fn kernel_release() -> io::Result<String> {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // Pointer describes `uts`, which the kernel fills.
    syscall!(uname(&mut uts))?;
    let bytes: Vec<u8> = uts.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The netlink protocol of sock_diag (inet_diag).
pub(crate) const NETLINK_SOCK_DIAG: libc::c_int = 4;
/// The netlink protocol of generic netlink (tcp_metrics).
pub(crate) const NETLINK_GENERIC: libc::c_int = 16;

/// A netlink socket of `protocol`, bound to the multicast `groups` (a bit
/// mask; 0 for none). Reading every socket of the namespace, or its TCP
/// metrics, needs no privilege; sock_diag's destroy groups need CAP_NET_ADMIN.
pub(crate) fn netlink_socket(protocol: libc::c_int, groups: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = syscall!(socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol))?;
    // SAFETY: socket() just returned this descriptor, which nothing else owns.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data, valid when zeroed.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = groups;
    // A socket big enough that bursts of destroy notifications are not dropped:
    // SO_RCVBUFFORCE passes net.core.rmem_max (with CAP_NET_ADMIN, which the
    // destroy groups need anyway); without it SO_RCVBUF is capped there, and
    // `netlink_rcvbuf` tells what was granted.
    let rcvbuf: libc::c_int = NETLINK_RCVBUF as libc::c_int;
    let set = |option| {
        // Pointer and length describe `rcvbuf`, an int on this stack frame.
        syscall!(setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            &rcvbuf as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        ))
    };
    if set(libc::SO_RCVBUFFORCE).is_err() {
        set(libc::SO_RCVBUF)?;
    }
    syscall!(bind(
        fd,
        &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
        size_of::<libc::sockaddr_nl>() as libc::socklen_t,
    ))?;
    Ok(owned)
}

/// The kernel has no such entry: ESRCH from a tcp_metrics delete of nothing
/// (`tcp_metrics_nl_cmd_del`), ENOENT elsewhere.
pub(crate) fn is_no_entry(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOENT))
}

/// The receive buffer asked for netlink sockets.
pub(crate) const NETLINK_RCVBUF: usize = 8 << 20;

/// The receive buffer the kernel granted (it reports twice the usable size).
pub(crate) fn netlink_rcvbuf(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // Pointer and length describe `value`; the kernel writes at most `len` bytes.
    syscall!(getsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        (&mut value as *mut libc::c_int).cast(),
        &mut len
    ))?;
    Ok(usize::try_from(value).unwrap_or(0) / 2)
}

/// `send(fd, bytes)` of one whole netlink message to the kernel.
pub(crate) fn netlink_send(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: `bytes` is a live slice of the given length.
    syscall!(send(fd.as_raw_fd(), bytes.as_ptr() as *const libc::c_void, bytes.len(), 0))?;
    Ok(())
}

/// One `recv` of netlink messages into `buf`, waiting at most `timeout`
/// (`None`: until something comes). `Ok(0)`: the wait ended empty.
/// A timeout is a deadline: a signal (EINTR) waits only the time left, and
/// one under a millisecond is rounded up (not turned into a poll of 0).
pub(crate) fn netlink_recv(fd: BorrowedFd<'_>, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
    if let Some(timeout) = timeout {
        let deadline = Instant::now() + timeout;
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            let ms = if timeout.is_zero() {
                0
            } else {
                poll_millis(Some(deadline.saturating_duration_since(Instant::now())))
            };
            // One pollfd on this stack frame, nfds 1.
            match syscall!(poll(&mut pfd, 1, ms)) {
                Ok(0) => return Ok(0),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
    loop {
        // `buf` is a live, writable slice of the given length.
        match syscall!(recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0)) {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The `bpf(2)` calls of the process-naming probe (`crate::owners`): one
/// map, one program, one attachment, lookups. The program's bytes are built
/// (and checked) in safe code; here they only cross into the kernel.
pub(crate) mod bpf {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;

    /// `union bpf_attr` for BPF_MAP_CREATE (its first fields).
    #[repr(C)]
    #[derive(Default)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }

    /// `union bpf_attr` for the element calls.
    #[repr(C)]
    #[derive(Default)]
    struct MapElem {
        map_fd: u32,
        pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }

    /// `union bpf_attr` for BPF_PROG_LOAD, up to `attach_btf_obj_fd`.
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
        prog_btf_fd: u32,
        func_info_rec_size: u32,
        func_info: u64,
        func_info_cnt: u32,
        line_info_rec_size: u32,
        line_info: u64,
        line_info_cnt: u32,
        attach_btf_id: u32,
        attach_btf_obj_fd: u32,
    }

    /// `union bpf_attr` for BPF_RAW_TRACEPOINT_OPEN.
    #[repr(C)]
    #[derive(Default)]
    struct RawTracepointOpen {
        name: u64,
        prog_fd: u32,
        pad: u32,
    }

    /// `bpf(cmd, attr, size)`, a new descriptor when it returns one.
    fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
        // SAFETY: `attr` is a live, initialised `repr(C)` prefix of `union
        // bpf_attr` for `cmd`, and its size is passed; the kernel reads (and
        // for lookups writes through) only the pointers inside it, each of
        // which the callers point at live buffers of the sizes the map or
        // program was made with.
        let res = unsafe { libc::syscall(libc::SYS_bpf, cmd, (attr as *mut T).cast::<libc::c_void>(), size_of::<T>()) };
        if res < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }

    fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf() returned no descriptor"))?;
        // SAFETY: bpf() just returned this new descriptor, which nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// A map (`BPF_MAP_TYPE_*`) with fixed key and value sizes.
    pub(crate) fn map_create(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> io::Result<OwnedFd> {
        let mut attr = MapCreate { map_type, key_size, value_size, max_entries, map_flags: 0 };
        owned(bpf(BPF_MAP_CREATE, &mut attr)?)
    }

    /// Copies the value of `key` into `value`; `Ok(false)` when there is none.
    pub(crate) fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        let mut attr = MapElem {
            map_fd: map.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_mut_ptr() as u64,
            ..MapElem::default()
        };
        match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes `key` (absent is fine).
    pub(crate) fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
        let mut attr = MapElem { map_fd: map.as_raw_fd() as u32, key: key.as_ptr() as u64, ..MapElem::default() };
        match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What loading a program needs: its type, where it attaches, its code.
    pub(crate) struct Program<'a> {
        pub(crate) prog_type: u32,
        pub(crate) expected_attach_type: u32,
        pub(crate) attach_btf_id: u32,
        /// Instructions, 8 bytes each.
        pub(crate) insns: &'a [u64],
        /// NUL-terminated.
        pub(crate) license: &'a [u8],
    }

    /// Loads a program; a refusal carries the verifier's log.
    pub(crate) fn prog_load(program: &Program<'_>) -> io::Result<OwnedFd> {
        if program.license.last() != Some(&0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the license must end with NUL"));
        }
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = ProgLoad {
            prog_type: program.prog_type,
            insn_cnt: program.insns.len() as u32,
            insns: program.insns.as_ptr() as u64,
            license: program.license.as_ptr() as u64,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            expected_attach_type: program.expected_attach_type,
            attach_btf_id: program.attach_btf_id,
            ..ProgLoad::default()
        };
        match bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => owned(fd),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string();
                Err(if last.is_empty() {
                    e
                } else {
                    io::Error::new(e.kind(), format!("{e}: the verifier says: {last}"))
                })
            }
        }
    }

    /// Attaches a tracing program to the raw tracepoint its BTF id names;
    /// closing the returned descriptor detaches it.
    pub(crate) fn raw_tracepoint_open(prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        let mut attr = RawTracepointOpen { name: 0, prog_fd: prog.as_raw_fd() as u32, pad: 0 };
        owned(bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)?)
    }

    /// Permission refused (no CAP_BPF / CAP_SYS_ADMIN).
    pub(crate) fn is_permission(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
    }

    use std::mem::size_of;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classes() {
        assert_eq!(client_errno(&io::Error::from_raw_os_error(libc::EINPROGRESS)), ClientErrno::InProgress);
        assert_eq!(client_errno(&io::Error::from_raw_os_error(libc::EOPNOTSUPP)), ClientErrno::TfoDisabled);
        assert_eq!(client_errno(&io::Error::from_raw_os_error(libc::ECONNREFUSED)), ClientErrno::Other);
        assert_eq!(key_errno(&io::Error::from_raw_os_error(libc::ENOPROTOOPT)), KeyErrno::NoOption);
        assert_eq!(key_errno(&io::Error::from_raw_os_error(libc::EINVAL)), KeyErrno::BadLength);
        assert!(out_of_resources(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(out_of_resources(&io::Error::from_raw_os_error(libc::EADDRNOTAVAIL)));
        assert!(!out_of_resources(&io::Error::from_raw_os_error(libc::ECONNREFUSED)));
    }

    use std::os::fd::AsFd;

    extern "C" fn ignore_signal(_: libc::c_int) {}

    /// Runs `wait` in a thread hit by SIGUSR1 every 20 ms for 3 s (each one
    /// an EINTR); returns how long `wait` took.
    fn under_signals(wait: impl FnOnce() + Send + 'static) -> Duration {
        // SAFETY: a zeroed sigaction is valid plain data; the handler does
        // nothing (async-signal-safe), and no SA_RESTART: each signal is an EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as *const () as libc::sighandler_t;
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            tx.send(unsafe { libc::pthread_self() }).unwrap();
            let started = Instant::now();
            wait();
            started.elapsed()
        });
        let thread = rx.recv().unwrap();
        let until = Instant::now() + Duration::from_secs(3);
        while !waiter.is_finished() && Instant::now() < until {
            // SAFETY: the thread is alive (not finished) and joined below, so its id is valid.
            unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(20));
        }
        waiter.join().unwrap()
    }

    #[test]
    fn signals_do_not_restart_a_wait() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let idle = a.try_clone().unwrap();
        // Nothing ever becomes readable: each wait ends at its timeout, 300 ms,
        // however many signals; restarting after each would last the 3 s of signals.
        let took = under_signals(move || {
            let watch = StateWatch::new(idle.as_fd()).unwrap();
            let _ = watch.wait(Duration::ZERO);
            assert!(!watch.wait(Duration::from_millis(300)).unwrap());
        });
        assert!(took < Duration::from_secs(2), "StateWatch::wait took {took:?}");
        let took = under_signals(move || {
            let mut buf = [0u8; 8];
            assert_eq!(netlink_recv(a.as_fd(), &mut buf, Some(Duration::from_millis(300))).unwrap(), 0);
        });
        assert!(took < Duration::from_secs(2), "netlink_recv took {took:?}");
    }

    #[test]
    fn poll_timeouts_round_up_and_saturate() {
        assert_eq!(poll_millis(None), -1);
        assert_eq!(poll_millis(Some(Duration::ZERO)), 0);
        assert_eq!(poll_millis(Some(Duration::from_micros(1))), 1);
        assert_eq!(poll_millis(Some(Duration::from_millis(1500))), 1500);
        assert_eq!(poll_millis(Some(Duration::from_secs(u64::MAX / 4))), libc::c_int::MAX);
    }
}
