//! Fallback for targets other than Linux: every call fails with `Unsupported`.
//! It exists so that a crate depending on `fastopen` still compiles there.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

pub(crate) const TCP_FASTOPEN: i32 = 23;
pub(crate) const TCP_FASTOPEN_CONNECT: i32 = 30;
pub(crate) const TCP_FASTOPEN_NO_COOKIE: i32 = 34;
pub(crate) const MSG_FASTOPEN: i32 = 0x2000_0000;
pub(crate) const TCP_INFO_BUF: usize = 512;

/// Marks this backend's error, so that [`crate::Error`] says "not supported
/// on this platform" for it and for nothing else.
#[derive(Debug)]
pub(crate) struct PlatformUnsupported;

impl std::fmt::Display for PlatformUnsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TCP Fast Open support in fastopen is Linux-only")
    }
}

impl std::error::Error for PlatformUnsupported {}

fn unsupported<T>() -> io::Result<T> {
    Err(io::Error::new(io::ErrorKind::Unsupported, PlatformUnsupported))
}

pub(crate) fn set_tcp_int(_: BorrowedFd<'_>, _: i32, _: i32) -> io::Result<()> {
    unsupported()
}
pub(crate) fn get_tcp_int(_: BorrowedFd<'_>, _: i32) -> io::Result<i32> {
    unsupported()
}
pub(crate) fn set_fastopen_key(_: BorrowedFd<'_>, _: &[u8]) -> io::Result<()> {
    unsupported()
}
pub(crate) fn get_fastopen_key(_: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    unsupported()
}
pub(crate) fn tcp_info_bytes(_: BorrowedFd<'_>) -> io::Result<([u8; TCP_INFO_BUF], usize)> {
    unsupported()
}
/// See the Linux backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub(crate) enum Wait {
    Ready,
    TimedOut,
    Cancelled,
}
pub(crate) fn wait_ready(
    _: BorrowedFd<'_>,
    _: bool,
    _: Option<std::time::Instant>,
    _: Option<BorrowedFd<'_>>,
) -> io::Result<Wait> {
    unsupported()
}
pub(crate) fn kernel_release() -> io::Result<String> {
    unsupported()
}

/// See the Linux backend; nothing here ever succeeds, so every error is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub(crate) enum ClientErrno {
    InProgress,
    TfoDisabled,
    Other,
}
pub(crate) fn client_errno(_: &io::Error) -> ClientErrno {
    ClientErrno::Other
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub(crate) enum KeyErrno {
    NoOption,
    BadLength,
    Other,
}
pub(crate) fn key_errno(_: &io::Error) -> KeyErrno {
    KeyErrno::Other
}
pub(crate) fn nonblocking_tcp_socket(domain: socket2::Domain) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}
pub(crate) fn out_of_resources(_: &io::Error) -> bool {
    false
}
pub(crate) fn accept_starved(_: &io::Error) -> bool {
    false
}
pub(crate) fn receive_queue_overflowed(_: &io::Error) -> bool {
    false
}

/// See the Linux backend.
#[derive(Debug)]
pub(crate) struct StateWatch;

impl StateWatch {
    pub(crate) fn new(_: BorrowedFd<'_>) -> io::Result<StateWatch> {
        unsupported()
    }
    pub(crate) fn wait(&self, _: Duration) -> io::Result<bool> {
        unsupported()
    }
}

#[cfg(feature = "tokio")]
#[derive(Debug)]
pub(crate) struct AsyncStateWatch;

#[cfg(feature = "tokio")]
impl AsyncStateWatch {
    pub(crate) fn new(_: StateWatch) -> io::Result<AsyncStateWatch> {
        unsupported()
    }
    pub(crate) async fn next(&self) -> io::Result<()> {
        unsupported()
    }
}

pub(crate) const NETLINK_SOCK_DIAG: i32 = 4;
pub(crate) const NETLINK_GENERIC: i32 = 16;
pub(crate) fn netlink_socket(_: i32, _: u32) -> io::Result<std::os::fd::OwnedFd> {
    unsupported()
}
pub(crate) fn netlink_send(_: BorrowedFd<'_>, _: &[u8]) -> io::Result<()> {
    unsupported()
}
pub(crate) fn is_no_entry(_: &io::Error) -> bool {
    false
}
pub(crate) fn netlink_rcvbuf(_: BorrowedFd<'_>) -> io::Result<usize> {
    unsupported()
}
pub(crate) fn netlink_recv(_: BorrowedFd<'_>, _: &mut [u8], _: Option<Duration>) -> io::Result<usize> {
    unsupported()
}

/// No BPF off Linux.
pub(crate) mod bpf {
    use std::io;
    use std::os::fd::{BorrowedFd, OwnedFd};

    #[allow(dead_code)] // built by the caller, read only by the Linux backend
    pub(crate) struct Program<'a> {
        pub(crate) prog_type: u32,
        pub(crate) expected_attach_type: u32,
        pub(crate) attach_btf_id: u32,
        pub(crate) insns: &'a [u64],
        pub(crate) license: &'a [u8],
    }

    pub(crate) fn map_create(_: u32, _: u32, _: u32, _: u32) -> io::Result<OwnedFd> {
        super::unsupported()
    }
    pub(crate) fn map_lookup(_: BorrowedFd<'_>, _: &[u8], _: &mut [u8]) -> io::Result<bool> {
        super::unsupported()
    }
    pub(crate) fn map_delete(_: BorrowedFd<'_>, _: &[u8]) -> io::Result<()> {
        super::unsupported()
    }
    pub(crate) fn prog_load(_: &Program<'_>) -> io::Result<OwnedFd> {
        super::unsupported()
    }
    pub(crate) fn raw_tracepoint_open(_: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        super::unsupported()
    }
    pub(crate) fn is_permission(_: &io::Error) -> bool {
        false
    }
}
