//! The libc functions the shim replaces. Each does its small part and calls
//! libc's own function ([`crate::real`]) with the program's arguments.
//!
//! # Safety of every hook
//! The program calls these exactly as it would call libc's functions of the
//! same names, with the same contracts on pointers and lengths; the hooks pass
//! them through unchanged and read them only where libc would (a `pollfd`
//! array of `nfds` entries, `fd_set`s below `nfds`, an address of `len` bytes).
#![allow(clippy::missing_safety_doc)]

use libc::{c_char, c_int, c_uint, c_void, fd_set, nfds_t, pollfd, sigset_t, size_t, sockaddr, socklen_t, ssize_t};
use libc::{timespec, timeval};

use crate::fds::{
    self, CLIENT, DEFERRED, EPOLL_IN, EPOLL_INOUT, EPOLL_WAITED, KICKED, LISTENER, SELF_MANAGED, SERVER, STARTED, TCP,
};
use crate::sys::{self, KeepErrno};
use crate::{config, real, report};

/// Starts the handshake of a deferred socket that has sent nothing: the
/// program is about to read before it wrote. Checked with the kernel (a SYN
/// with data may have left through any write call), then remembered.
fn ensure_started(fd: c_int) {
    let bits = fds::state(fd);
    if bits & DEFERRED == 0 || bits & STARTED != 0 {
        return;
    }
    let _errno = KeepErrno::new();
    let mut info = [0u8; sys::TCP_INFO_LEN];
    let len = sys::tcp_info(fd, &mut info);
    let unsent = len > 0 && info[0] == sys::TCP_SYN_SENT && sys::info_u32(&info, len, sys::OFF_SEGS_OUT) == Some(0);
    if unsent {
        sys::send_empty(fd);
        fds::set(fd, KICKED | STARTED);
    } else {
        fds::set(fd, STARTED);
    }
}

/// Before a read on `fd`.
fn before_read(fd: c_int) {
    if fds::any_pending() {
        ensure_started(fd);
    }
}

/// A send with `MSG_FASTOPEN`: the program's own TFO, reported and not touched.
fn own_fastopen(fd: c_int, flags: c_int) {
    if flags & sys::MSG_FASTOPEN != 0 && fds::state(fd) & TCP != 0 {
        fds::set(fd, SELF_MANAGED | CLIENT);
    }
}

/// After a send through the socket calls (`send`, `sendto`, `sendmsg`) that
/// returned `result`: a deferred socket that took bytes has sent its SYN, so
/// a later read need not ask the kernel. (A `write` is not seen; the read
/// then asks, as [`ensure_started`] does.)
fn wrote(fd: c_int, result: ssize_t) {
    if result >= 0 && fds::any_pending() && fds::state(fd) & (DEFERRED | STARTED) == DEFERRED {
        fds::set(fd, STARTED);
    }
}

/// Reports `fd`'s connection if it is one, and forgets it: it is about to close.
fn closing(fd: c_int) {
    let bits = fds::take(fd);
    if bits & (CLIENT | SERVER) != 0 {
        report::connection(fd, bits, 0);
    }
}

#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: see the module's note.
    let fd = unsafe { real::socket()(domain, ty, protocol) };
    if fd >= 0 {
        fds::take(fd);
        let inet = domain == libc::AF_INET || domain == libc::AF_INET6;
        let stream = ty & 0xf == libc::SOCK_STREAM;
        if inet && stream && (protocol == 0 || protocol == libc::IPPROTO_TCP) {
            fds::set(fd, TCP);
        }
    }
    fd
}

#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let real = real::connect();
    let bits = fds::state(fd);
    let wanted = config().filter(|c| c.client && bits & TCP != 0 && bits & (SELF_MANAGED | CLIENT) == 0);
    // SAFETY: the program's address of `len` bytes.
    let peer = wanted.and_then(|_| unsafe { sys::from_c(addr, len) });
    let Some(peer) = peer.filter(|p| wanted.is_some_and(|c| c.wants_port(p.port()))) else {
        if bits & SELF_MANAGED != 0 && bits & CLIENT != 0 {
            // SAFETY: the program's address of `len` bytes.
            if let Some(peer) = unsafe { sys::from_c(addr, len) } {
                fds::set_peer(fd, peer); // for its record
            }
        }
        // SAFETY: see the module's note.
        return unsafe { real(fd, addr, len) };
    };
    let keep = KeepErrno::new();
    let tfo = sys::set_int(fd, libc::IPPROTO_TCP, sys::TCP_FASTOPEN_CONNECT, 1);
    drop(keep);
    // SAFETY: see the module's note.
    let r = unsafe { real(fd, addr, len) };
    if !tfo || (r != 0 && sys::errno() != libc::EINPROGRESS) {
        return r;
    }
    fds::set(fd, CLIENT);
    fds::set_peer(fd, peer);
    if r == 0 {
        let keep = KeepErrno::new();
        let mut info = [0u8; sys::TCP_INFO_LEN];
        let n = sys::tcp_info(fd, &mut info);
        if n > 0 && info[0] == sys::TCP_SYN_SENT {
            // Deferred: the SYN waits for the first write (or a read: ensure_started).
            fds::set(fd, DEFERRED);
            if sys::nonblocking(fd) {
                // What a non-blocking connect says without TFO; the socket
                // is writable at once, SO_ERROR is 0: the usual protocol.
                drop(keep);
                sys::set_errno(libc::EINPROGRESS);
                return -1;
            }
        }
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let bits = fds::state(fd);
    if let Some(c) = config().filter(|c| c.server && bits & TCP != 0 && bits & SELF_MANAGED == 0) {
        let _errno = KeepErrno::new();
        let port = sys::local_addr(fd).map_or(0, |a| a.port());
        let wanted = if port == 0 { c.ports.is_empty() } else { c.wants_port(port) };
        let queue = c_int::try_from(c.queue).unwrap_or(c_int::MAX);
        if wanted && sys::set_int(fd, libc::IPPROTO_TCP, sys::TCP_FASTOPEN, queue) {
            fds::set(fd, LISTENER);
        }
    }
    // SAFETY: see the module's note.
    unsafe { real::listen()(fd, backlog) }
}

fn accepted(listener: c_int, fd: c_int) {
    if fd < 0 {
        return;
    }
    fds::take(fd);
    if fds::state(listener) & LISTENER == 0 || config().is_none() {
        return;
    }
    let _errno = KeepErrno::new();
    let mut info = [0u8; sys::TCP_INFO_LEN];
    let len = sys::tcp_info(fd, &mut info);
    if len > 0 {
        let segs = sys::info_u32(&info, len, sys::OFF_DATA_SEGS_IN).unwrap_or(0);
        let bytes = sys::info_u64(&info, len, sys::OFF_BYTES_RECEIVED).unwrap_or(0);
        fds::set_accept_facts(fd, info[0], info[5], segs, bytes);
    }
    if let Some(peer) = sys::peer_addr(fd) {
        fds::set_peer(fd, peer); // for the record: a closed peer has no address any more
    }
    fds::set(fd, SERVER);
}

#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: see the module's note.
    let new = unsafe { real::accept()(fd, addr, len) };
    accepted(fd, new);
    new
}

#[no_mangle]
pub unsafe extern "C" fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    // SAFETY: see the module's note.
    let new = unsafe { real::accept4()(fd, addr, len, flags) };
    accepted(fd, new);
    new
}

#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    if level == libc::IPPROTO_TCP {
        match name {
            sys::TCP_FASTOPEN => {
                fds::set(fd, SELF_MANAGED | LISTENER);
            }
            sys::TCP_FASTOPEN_CONNECT if fds::state(fd) & TCP != 0 => {
                fds::set(fd, SELF_MANAGED | CLIENT); // the program's own TFO: reported, not touched
            }
            sys::TCP_FASTOPEN_CONNECT | sys::TCP_FASTOPEN_NO_COOKIE => {
                fds::set(fd, SELF_MANAGED);
            }
            _ => {}
        }
    }
    // SAFETY: see the module's note.
    unsafe { real::setsockopt()(fd, level, name, value, len) }
}

#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addr_len: socklen_t,
) -> ssize_t {
    own_fastopen(fd, flags);
    // SAFETY: see the module's note.
    let r = unsafe { real::sendto()(fd, buf, len, flags, addr, addr_len) };
    wrote(fd, r);
    r
}

#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    own_fastopen(fd, flags);
    // SAFETY: see the module's note.
    let r = unsafe { real::send()(fd, buf, len, flags) };
    wrote(fd, r);
    r
}

#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> ssize_t {
    own_fastopen(fd, flags);
    // SAFETY: see the module's note.
    let r = unsafe { real::sendmsg()(fd, msg, flags) };
    wrote(fd, r);
    r
}

#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: see the module's note.
    let r = unsafe { real::getpeername()(fd, addr, len) };
    if r == 0 || sys::errno() != libc::ENOTCONN || fds::state(fd) & DEFERRED == 0 || addr.is_null() || len.is_null() {
        return r;
    }
    // Connected as far as the program knows (connect said so), the SYN deferred
    // or on its way: the peer is the one it connected to.
    let mut info = [0u8; sys::TCP_INFO_LEN];
    let keep = KeepErrno::new();
    let syn_sent = sys::tcp_info(fd, &mut info) > 0 && info[0] == sys::TCP_SYN_SENT;
    drop(keep);
    let Some(peer) = fds::peer(fd).filter(|_| syn_sent) else { return r };
    let (storage, n) = sys::to_c(peer);
    // SAFETY: `len` points to the size of the program's buffer at `addr`; at
    // most that many bytes are copied, and `len` gets the full size, as getpeername(2) does.
    unsafe {
        let room = (*len as usize).min(n as usize);
        std::ptr::copy_nonoverlapping(
            (&storage as *const libc::sockaddr_storage).cast::<u8>(),
            addr.cast::<u8>(),
            room,
        );
        *len = n;
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if report::is_report_fd(fd) {
        return 0; // tfo wrap's pipe stays open for the program's children
    }
    closing(fd);
    // SAFETY: see the module's note.
    unsafe { real::close()(fd) }
}

#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let cloexec_only = flags & libc::CLOSE_RANGE_CLOEXEC as c_int != 0;
    if !cloexec_only {
        let end = last.min(fds::high().max(0) as c_uint);
        for fd in first..end {
            closing(fd as c_int);
        }
    }
    let real = real::close_range();
    match report::report_fd().map(|fd| fd as c_uint).filter(|fd| (first..=last).contains(fd)) {
        Some(keep) => {
            let mut r = 0;
            if keep > first {
                // SAFETY: see the module's note.
                r = unsafe { real(first, keep - 1, flags) };
            }
            if r == 0 && keep < last {
                // SAFETY: see the module's note.
                r = unsafe { real(keep + 1, last, flags) };
            }
            r
        }
        // SAFETY: see the module's note.
        None => unsafe { real(first, last, flags) },
    }
}

fn duplicated(old: c_int, new: c_int) {
    if new >= 0 && new != old {
        fds::take(new);
        fds::copy(old, new);
    }
}

#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: see the module's note.
    let new = unsafe { real::dup()(fd) };
    duplicated(fd, new);
    new
}

#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old != new {
        closing(new); // dup2 closes what `new` was
    }
    // SAFETY: see the module's note.
    let r = unsafe { real::dup2()(old, new) };
    duplicated(old, r);
    r
}

#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if old != new {
        closing(new);
    }
    // SAFETY: see the module's note.
    let r = unsafe { real::dup3()(old, new, flags) };
    duplicated(old, r);
    r
}

fn fcntl_common(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: libc's fcntl reads the third argument as the command's type
    // (an int or a pointer, passed in the same register on Linux's 64-bit
    // ABIs); the program passed it for this command.
    let r = unsafe { real::fcntl()(fd, cmd, arg) };
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        duplicated(fd, r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    fcntl_common(fd, cmd, arg)
}

#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    fcntl_common(fd, cmd, arg)
}

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    before_read(fd);
    // SAFETY: see the module's note.
    unsafe { real::read()(fd, buf, n) }
}

#[no_mangle]
pub unsafe extern "C" fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t {
    before_read(fd);
    // SAFETY: see the module's note.
    unsafe { real::__read_chk()(fd, buf, n, buflen) }
}

#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, count: c_int) -> ssize_t {
    before_read(fd);
    // SAFETY: see the module's note.
    unsafe { real::readv()(fd, iov, count) }
}

#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    before_read(fd);
    // SAFETY: see the module's note.
    unsafe { real::recv()(fd, buf, n, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t {
    before_read(fd);
    // SAFETY: see the module's note.
    unsafe { real::__recv_chk()(fd, buf, n, buflen, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    before_read(fd);
    // SAFETY: see the module's note.
    unsafe { real::recvfrom()(fd, buf, n, flags, addr, len) }
}

#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    before_read(fd);
    // SAFETY: see the module's note.
    unsafe { real::__recvfrom_chk()(fd, buf, n, buflen, flags, addr, len) }
}

#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> ssize_t {
    before_read(fd);
    // SAFETY: see the module's note.
    unsafe { real::recvmsg()(fd, msg, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    n: c_uint,
    flags: c_int,
    timeout: *mut timespec,
) -> c_int {
    before_read(fd);
    // SAFETY: see the module's note.
    unsafe { real::recvmmsg()(fd, msgs, n, flags, timeout) }
}

#[no_mangle]
pub unsafe extern "C" fn fdopen(fd: c_int, mode: *const c_char) -> *mut libc::FILE {
    // A stream opened for reading only reads through libc's inner calls,
    // which the shim does not see: start the handshake now.
    if fds::any_pending() && !mode.is_null() {
        // SAFETY: fdopen's mode is a NUL-terminated string.
        let mode = unsafe { std::ffi::CStr::from_ptr(mode) }.to_bytes();
        if mode.first() == Some(&b'r') && !mode.contains(&b'+') {
            ensure_started(fd);
        }
    }
    // SAFETY: see the module's note.
    unsafe { real::fdopen()(fd, mode) }
}

/// Poll entries that wait for input and not output: the program reads first.
///
/// # Safety
/// `fds` points to `n` entries (or is null).
unsafe fn before_poll(entries: *const pollfd, n: nfds_t) {
    if !fds::any_pending() || entries.is_null() {
        return;
    }
    // SAFETY: the caller's array of `n` pollfd, as poll(2) reads it.
    let entries = unsafe { std::slice::from_raw_parts(entries, n as usize) };
    for p in entries {
        if p.events & libc::POLLIN != 0 && p.events & libc::POLLOUT == 0 {
            ensure_started(p.fd);
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn poll(entries: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: see the module's note.
    unsafe {
        before_poll(entries, n);
        real::poll()(entries, n, timeout)
    }
}

#[no_mangle]
pub unsafe extern "C" fn __poll_chk(entries: *mut pollfd, n: nfds_t, timeout: c_int, len: size_t) -> c_int {
    // SAFETY: see the module's note.
    unsafe {
        before_poll(entries, n);
        real::__poll_chk()(entries, n, timeout, len)
    }
}

#[no_mangle]
pub unsafe extern "C" fn ppoll(
    entries: *mut pollfd,
    n: nfds_t,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: see the module's note.
    unsafe {
        before_poll(entries, n);
        real::ppoll()(entries, n, timeout, mask)
    }
}

#[no_mangle]
pub unsafe extern "C" fn __ppoll_chk(
    entries: *mut pollfd,
    n: nfds_t,
    timeout: *const timespec,
    mask: *const sigset_t,
    len: size_t,
) -> c_int {
    // SAFETY: see the module's note.
    unsafe {
        before_poll(entries, n);
        real::__ppoll_chk()(entries, n, timeout, mask, len)
    }
}

/// Descriptors in `read` and not in `write`: the program reads first.
///
/// # Safety
/// The sets are null or valid `fd_set`s.
unsafe fn before_select(n: c_int, read: *mut fd_set, write: *mut fd_set) {
    if !fds::any_pending() || read.is_null() {
        return;
    }
    let end = n.min(fds::high()).min(libc::FD_SETSIZE as c_int);
    for fd in 0..end {
        // SAFETY: fd is below FD_SETSIZE and the sets are valid.
        let (reads, writes) = unsafe { (libc::FD_ISSET(fd, read), !write.is_null() && libc::FD_ISSET(fd, write)) };
        if reads && !writes {
            ensure_started(fd);
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn select(
    n: c_int,
    read: *mut fd_set,
    write: *mut fd_set,
    except: *mut fd_set,
    timeout: *mut timeval,
) -> c_int {
    // SAFETY: see the module's note.
    unsafe {
        before_select(n, read, write);
        real::select()(n, read, write, except, timeout)
    }
}

#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    read: *mut fd_set,
    write: *mut fd_set,
    except: *mut fd_set,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: see the module's note.
    unsafe {
        before_select(n, read, write);
        real::pselect()(n, read, write, except, timeout, mask)
    }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut libc::epoll_event) -> c_int {
    // SAFETY: see the module's note.
    let r = unsafe { real::epoll_ctl()(epfd, op, fd, event) };
    if r == 0 && fds::state(fd) & CLIENT != 0 {
        match op {
            // SAFETY: ADD and MOD take a valid event (libc just read it).
            libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD if !event.is_null() => {
                fds::set_epoll(fd, Some(epfd), unsafe { (*event).events })
            }
            libc::EPOLL_CTL_DEL => fds::set_epoll(fd, None, 0),
            _ => {}
        }
    }
    r
}

/// Deferred sockets of the set `epfd` that wait for input only start now;
/// those that wait for input and output start at the second blocking wait
/// (the first told them they could write, and they did not).
fn before_epoll_wait(epfd: c_int, blocking: bool) {
    if !fds::any_pending() {
        return;
    }
    for fd in 0..fds::high() {
        let bits = fds::state(fd);
        if bits & DEFERRED == 0 || bits & STARTED != 0 || fds::epoll_set(fd) != Some(epfd) {
            continue;
        }
        if bits & EPOLL_IN != 0 || (bits & EPOLL_INOUT != 0 && blocking && bits & EPOLL_WAITED != 0) {
            ensure_started(fd);
        } else if bits & EPOLL_INOUT != 0 && blocking {
            fds::set(fd, EPOLL_WAITED);
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_wait(epfd: c_int, events: *mut libc::epoll_event, max: c_int, timeout: c_int) -> c_int {
    before_epoll_wait(epfd, timeout != 0);
    // SAFETY: see the module's note.
    unsafe { real::epoll_wait()(epfd, events, max, timeout) }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const sigset_t,
) -> c_int {
    before_epoll_wait(epfd, timeout != 0);
    // SAFETY: see the module's note.
    unsafe { real::epoll_pwait()(epfd, events, max, timeout, mask) }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: a non-null timeout is a valid timespec.
    let blocking = timeout.is_null() || unsafe { (*timeout).tv_sec != 0 || (*timeout).tv_nsec != 0 };
    before_epoll_wait(epfd, blocking);
    // SAFETY: see the module's note.
    unsafe { real::epoll_pwait2()(epfd, events, max, timeout, mask) }
}
