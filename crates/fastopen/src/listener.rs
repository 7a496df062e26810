//! The TFO server: a listener builder, a blocking listener, and key rotation.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::client::read_tcp_info;
use crate::kernel::KernelFeatures;
use crate::key::FastOpenKey;
use crate::outcome::AcceptOutcome;
use crate::{sys, Error, Result};

/// Default TFO queue length: pending TFO connections (SYN received with data,
/// handshake not yet complete). nginx examples use 256 as well.
pub const DEFAULT_QUEUE_LEN: u32 = 256;

/// Builds a TFO listening socket.
///
/// ```no_run
/// let listener = fastopen::ListenerBuilder::new("127.0.0.1:8000".parse()?).queue_len(5).bind()?;
/// let (stream, peer, outcome) = listener.accept()?;
/// println!("{peer}: {outcome}"); // "data in SYN: 9 bytes" or "regular handshake"
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ListenerBuilder {
    addr: SocketAddr,
    backlog: i32,
    queue_len: u32,
    keys: Option<(FastOpenKey, Option<FastOpenKey>)>,
    no_cookie: bool,
}

impl ListenerBuilder {
    /// A listener on `addr` (IPv4 or IPv6) with backlog 1024 and TFO queue 256.
    pub fn new(addr: SocketAddr) -> ListenerBuilder {
        ListenerBuilder { addr, backlog: 1024, queue_len: DEFAULT_QUEUE_LEN, keys: None, no_cookie: false }
    }

    /// The `listen()` backlog.
    pub fn backlog(mut self, backlog: i32) -> ListenerBuilder {
        self.backlog = backlog;
        self
    }

    /// `TCP_FASTOPEN` queue length (Linux caps it at `net.core.somaxconn`).
    /// 0 turns TFO off on this listener.
    pub fn queue_len(mut self, queue_len: u32) -> ListenerBuilder {
        self.queue_len = queue_len;
        self
    }

    /// This listener's own cookie key (`TCP_FASTOPEN_KEY`) instead of the
    /// namespace's; `backup` also accepts cookies made with an older key.
    pub fn keys(mut self, primary: FastOpenKey, backup: Option<FastOpenKey>) -> ListenerBuilder {
        self.keys = Some((primary, backup));
        self
    }

    /// `TCP_FASTOPEN_NO_COOKIE`: accept data in the SYN without a valid cookie.
    pub fn no_cookie(mut self, no_cookie: bool) -> ListenerBuilder {
        self.no_cookie = no_cookie;
        self
    }

    /// Creates, configures, binds and listens.
    pub(crate) fn listen_socket(&self) -> Result<Socket> {
        let socket = Socket::new(Domain::for_address(self.addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(Error::io("creating the listening socket"))?;
        socket.set_reuse_address(true).map_err(Error::io("setting SO_REUSEADDR"))?;
        if self.addr.is_ipv6() {
            socket.set_only_v6(false).map_err(Error::io("setting IPV6_V6ONLY"))?;
        }
        let queue = i32::try_from(self.queue_len).unwrap_or(i32::MAX);
        sys::set_tcp_int(socket.as_fd(), sys::TCP_FASTOPEN, queue)
            .map_err(Error::io("setting TCP_FASTOPEN on the listener"))?;
        if self.no_cookie {
            sys::set_tcp_int(socket.as_fd(), sys::TCP_FASTOPEN_NO_COOKIE, 1)
                .map_err(Error::io("setting TCP_FASTOPEN_NO_COOKIE on the listener"))?;
        }
        if let Some((primary, backup)) = &self.keys {
            set_keys(&socket, primary, backup.as_ref())?;
        }
        socket.bind(&self.addr.into()).map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => Error::AddressInUse { addr: self.addr },
            _ => Error::Io { what: "binding the listening socket", source: e },
        })?;
        socket.listen(self.backlog).map_err(Error::io("listen()"))?;
        Ok(socket)
    }

    /// A blocking listener.
    pub fn bind(self) -> Result<Listener> {
        Ok(Listener { inner: self.listen_socket()?.into() })
    }
}

/// Sets a listener's primary (and backup) key.
pub(crate) fn set_keys(socket: &impl AsFd, primary: &FastOpenKey, backup: Option<&FastOpenKey>) -> Result<()> {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(&primary.0);
    if let Some(b) = backup {
        bytes.extend_from_slice(&b.0);
    }
    sys::set_fastopen_key(socket.as_fd(), &bytes).map_err(|e| match sys::key_errno(&e) {
        sys::KeyErrno::NoOption => Error::KernelTooOld { option: "TCP_FASTOPEN_KEY", since: "4.15" },
        sys::KeyErrno::BadLength if backup.is_some() => {
            Error::KernelTooOld { option: "a backup TCP_FASTOPEN_KEY", since: "5.3" }
        }
        _ => Error::io("setting TCP_FASTOPEN_KEY")(e),
    })
}

/// Reads what `tcp_info` says about an accepted connection (call it right after accept).
pub fn accept_outcome(stream: &impl AsFd) -> Result<AcceptOutcome> {
    let first = read_tcp_info(stream)?;
    let later = read_tcp_info(stream)?;
    Ok(AcceptOutcome::derive(&first, &later, KernelFeatures::current()))
}

/// The TFO settings a listener has (read back from the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerTfo {
    /// `getsockopt(TCP_FASTOPEN)`: the queue length in effect (0 = off).
    pub queue_len: u32,
    /// How many keys the listener holds itself (0: it uses the namespace key; 1; or 2 with a backup).
    pub own_keys: usize,
}

pub(crate) fn listener_tfo(socket: &impl AsFd) -> Result<ListenerTfo> {
    let queue = sys::get_tcp_int(socket.as_fd(), sys::TCP_FASTOPEN).map_err(Error::io("reading TCP_FASTOPEN"))?;
    let keys = sys::get_fastopen_key(socket.as_fd()).map_err(Error::io("reading TCP_FASTOPEN_KEY"))?;
    Ok(ListenerTfo { queue_len: u32::try_from(queue).unwrap_or(0), own_keys: keys.len() / 16 })
}

/// A blocking TFO listener.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
}

impl Listener {
    /// Accepts a connection and reports whether its data came in the SYN.
    pub fn accept(&self) -> Result<(TcpStream, SocketAddr, AcceptOutcome)> {
        let (stream, peer) = self.inner.accept().map_err(Error::io("accept()"))?;
        let outcome = accept_outcome(&stream)?;
        Ok((stream, peer, outcome))
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner.local_addr().map_err(Error::io("reading the listener address"))
    }

    /// Replaces the keys on the live listener (rotation): new cookies come from
    /// `primary`; cookies from `backup` are still accepted (and counted as
    /// TCPFastOpenPassiveAltKey). A call without a backup drops the old key.
    pub fn set_keys(&self, primary: &FastOpenKey, backup: Option<&FastOpenKey>) -> Result<()> {
        set_keys(&self.inner, primary, backup)
    }

    /// The TFO settings in effect on this listener.
    pub fn tfo(&self) -> Result<ListenerTfo> {
        listener_tfo(&self.inner)
    }

    /// The std listener inside.
    pub fn into_std(self) -> TcpListener {
        self.inner
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_refuses_a_key_of_a_wrong_length() {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        for bad in [15usize, 17, 31, 33] {
            let err = sys::set_fastopen_key(socket.as_fd(), &vec![7u8; bad]).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{bad} bytes");
            assert_eq!(sys::key_errno(&err), sys::KeyErrno::BadLength);
        }
        sys::set_fastopen_key(socket.as_fd(), &[7u8; 16]).unwrap();
        assert_eq!(sys::get_fastopen_key(socket.as_fd()).unwrap(), vec![7u8; 16]);
        let two = [[1u8; 16], [2u8; 16]].concat();
        set_keys(&socket, &FastOpenKey([1; 16]), Some(&FastOpenKey([2; 16]))).unwrap();
        assert_eq!(sys::get_fastopen_key(socket.as_fd()).unwrap(), two);
    }
}
