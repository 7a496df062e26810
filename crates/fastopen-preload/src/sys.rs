//! The kernel calls the shim makes for itself, as small safe functions. Calls
//! to functions the shim also replaces go to libc's own ([`crate::real`]);
//! `errno` is saved and restored around all of them ([`KeepErrno`]).

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use libc::{c_int, sockaddr, sockaddr_storage, socklen_t};

use crate::real;

/// `TCP_FASTOPEN` (Linux 3.7).
pub(crate) const TCP_FASTOPEN: c_int = 23;
/// `TCP_FASTOPEN_CONNECT` (Linux 4.11).
pub(crate) const TCP_FASTOPEN_CONNECT: c_int = 30;
/// `TCP_FASTOPEN_NO_COOKIE` (Linux 4.15).
pub(crate) const TCP_FASTOPEN_NO_COOKIE: c_int = 34;
/// `MSG_FASTOPEN`.
pub(crate) const MSG_FASTOPEN: c_int = 0x2000_0000;
/// `tcpi_state` of a socket whose SYN is sent, or deferred.
pub(crate) const TCP_SYN_SENT: u8 = 2;
/// The `tcp_info` bytes a record keeps (the kernel returns 280 on 6.18).
pub(crate) const TCP_INFO_LEN: usize = fastopen::wrap::MAX_TCP_INFO;
/// Offsets in `struct tcp_info` (include/uapi/linux/tcp.h).
pub(crate) const OFF_BYTES_RECEIVED: usize = 128;
pub(crate) const OFF_SEGS_OUT: usize = 136;
pub(crate) const OFF_SEGS_IN: usize = 140;
pub(crate) const OFF_DATA_SEGS_IN: usize = 152;

/// Restores `errno` when dropped: the shim's own calls never change what the program sees.
pub(crate) struct KeepErrno(c_int);

impl KeepErrno {
    pub(crate) fn new() -> KeepErrno {
        KeepErrno(errno())
    }
}

impl Drop for KeepErrno {
    fn drop(&mut self) {
        set_errno(self.0);
    }
}

pub(crate) fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

pub(crate) fn set_errno(value: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value };
}

/// `tcp_info` of `fd` into `buf`; the length the kernel wrote (0 on error).
pub(crate) fn tcp_info(fd: c_int, buf: &mut [u8; TCP_INFO_LEN]) -> usize {
    let mut len = TCP_INFO_LEN as socklen_t;
    // SAFETY: pointer and length describe `buf`; the kernel writes at most `len` bytes.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len) };
    if r == 0 {
        (len as usize).min(TCP_INFO_LEN)
    } else {
        0
    }
}

/// A u32 of `tcp_info` at `offset`, if the kernel wrote it.
pub(crate) fn info_u32(buf: &[u8], len: usize, offset: usize) -> Option<u32> {
    (offset + 4 <= len).then(|| u32::from_ne_bytes([buf[offset], buf[offset + 1], buf[offset + 2], buf[offset + 3]]))
}

/// A u64 of `tcp_info` at `offset`, if the kernel wrote it.
pub(crate) fn info_u64(buf: &[u8], len: usize, offset: usize) -> Option<u64> {
    let b = buf.get(offset..offset + 8).filter(|_| offset + 8 <= len)?;
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}

/// An int socket option.
pub(crate) fn set_int(fd: c_int, level: c_int, name: c_int, value: c_int) -> bool {
    // SAFETY: pointer and length describe `value`, an int on this frame.
    let r = unsafe {
        real::setsockopt()(fd, level, name, (&value as *const c_int).cast(), size_of::<c_int>() as socklen_t)
    };
    r == 0
}

/// Whether `fd` is in non-blocking mode.
pub(crate) fn nonblocking(fd: c_int) -> bool {
    // SAFETY: F_GETFL takes no argument and reads nothing from memory.
    let flags = unsafe { real::fcntl()(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

/// The empty send that starts a deferred handshake: a SYN with the cookie and no data.
pub(crate) fn send_empty(fd: c_int) {
    let byte = 0u8;
    // SAFETY: a zero length: the kernel reads nothing from the pointer.
    unsafe { real::send()(fd, (&byte as *const u8).cast(), 0, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
}

/// A C socket address as a Rust one (IPv4 and IPv6 only).
///
/// # Safety
/// `addr` must point to `len` readable bytes (or be null).
pub(crate) unsafe fn from_c(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() || (len as usize) < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: the caller's pointer has at least the family field.
    let family = unsafe { (*addr).sa_family } as c_int;
    match family {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the length covers a sockaddr_in; read_unaligned needs no alignment.
            let a = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the length covers a sockaddr_in6.
            let a = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>()) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

/// A Rust socket address as a C one: the storage and its length.
pub(crate) fn to_c(addr: SocketAddr) -> (sockaddr_storage, socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as socklen_t)
}

/// The socket's own address.
pub(crate) fn local_addr(fd: c_int) -> Option<SocketAddr> {
    // SAFETY: plain data; zero is valid.
    let mut storage: sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<sockaddr_storage>() as socklen_t;
    // SAFETY: pointer and length describe `storage`.
    let r = unsafe { libc::getsockname(fd, (&mut storage as *mut sockaddr_storage).cast(), &mut len) };
    if r != 0 {
        return None;
    }
    // SAFETY: the kernel wrote `len` bytes (at most the storage's size) into `storage`.
    unsafe { from_c((&storage as *const sockaddr_storage).cast(), len.min(size_of::<sockaddr_storage>() as socklen_t)) }
}

/// The peer's address, from libc's own getpeername.
pub(crate) fn peer_addr(fd: c_int) -> Option<SocketAddr> {
    // SAFETY: plain data; zero is valid.
    let mut storage: sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<sockaddr_storage>() as socklen_t;
    // SAFETY: pointer and length describe `storage`.
    let r = unsafe { real::getpeername()(fd, (&mut storage as *mut sockaddr_storage).cast(), &mut len) };
    if r != 0 {
        return None;
    }
    // SAFETY: the kernel wrote `len` bytes into `storage`.
    unsafe { from_c((&storage as *const sockaddr_storage).cast(), len.min(size_of::<sockaddr_storage>() as socklen_t)) }
}

/// The inode of whatever `fd` is (0 if it is not open).
pub(crate) fn inode(fd: c_int) -> u64 {
    // SAFETY: plain data; zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid stat buffer.
    let r = unsafe { libc::fstat(fd, &mut st) };
    if r == 0 {
        st.st_ino
    } else {
        0
    }
}

/// The calling process's name (`comm`).
pub(crate) fn process_name() -> [u8; 16] {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into the buffer.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    name
}

/// This process's id.
pub(crate) fn pid() -> u32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// One `write(2)`; false unless all of `buf` went.
pub(crate) fn write_all_once(fd: c_int, buf: &[u8]) -> bool {
    // SAFETY: pointer and length describe `buf`.
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    r == buf.len() as isize
}
