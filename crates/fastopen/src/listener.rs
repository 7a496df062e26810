//! The TFO server: a listener builder, a blocking listener, and key rotation.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::kernel::KernelFeatures;
use crate::key::FastOpenKey;
use crate::outcome::{AcceptOutcome, ServerTfo};
use crate::socket_info::read_tcp_info;
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
    reuse_port: bool,
    only_v6: bool,
    strict: bool,
}

impl ListenerBuilder {
    /// A listener on `addr` (IPv4 or IPv6) with backlog 1024 and TFO queue 256.
    /// An IPv6 address also takes IPv4 (dual stack) unless [`only_v6`](Self::only_v6).
    pub fn new(addr: SocketAddr) -> ListenerBuilder {
        ListenerBuilder {
            addr,
            backlog: 1024,
            queue_len: DEFAULT_QUEUE_LEN,
            keys: None,
            no_cookie: false,
            reuse_port: false,
            only_v6: false,
            strict: false,
        }
    }

    /// `SO_REUSEPORT`: several listeners (processes or threads) on one port,
    /// the kernel spreading connections among them.
    pub fn reuse_port(mut self, reuse_port: bool) -> ListenerBuilder {
        self.reuse_port = reuse_port;
        self
    }

    /// `IPV6_V6ONLY` for an IPv6 address: `true` takes IPv6 only, so that
    /// `[::]:P` can sit beside `0.0.0.0:P`; `false` (the default) is dual stack.
    pub fn only_v6(mut self, only_v6: bool) -> ListenerBuilder {
        self.only_v6 = only_v6;
        self
    }

    /// In strict mode, binding fails with [`Error::ServerTfoOff`] when this
    /// listener would not do TFO (the namespace lacks the server bit 0x2 of
    /// `net.ipv4.tcp_fastopen`, or the queue is 0), instead of serving plain
    /// TCP. Either way, [`ListenerTfo::state`] tells.
    pub fn strict(mut self, strict: bool) -> ListenerBuilder {
        self.strict = strict;
        self
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
        self.check_strict()?;
        let socket = Socket::new(Domain::for_address(self.addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(Error::io("creating the listening socket"))?;
        socket.set_reuse_address(true).map_err(Error::io("setting SO_REUSEADDR"))?;
        if self.reuse_port {
            socket.set_reuse_port(true).map_err(Error::io("setting SO_REUSEPORT"))?;
        }
        if self.addr.is_ipv6() {
            socket.set_only_v6(self.only_v6).map_err(Error::io("setting IPV6_V6ONLY"))?;
        }
        self.configure_tfo(&socket)?;
        socket.bind(&self.addr.into()).map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => Error::AddressInUse { addr: self.addr },
            _ => Error::Io { what: "binding the listening socket", source: e },
        })?;
        socket.listen(self.backlog).map_err(Error::io("listen()"))?;
        Ok(socket)
    }

    /// Sets TCP_FASTOPEN (the queue), no-cookie mode and keys on a socket.
    fn configure_tfo(&self, socket: &impl AsFd) -> Result<()> {
        let queue = i32::try_from(self.queue_len).unwrap_or(i32::MAX);
        sys::set_tcp_int(socket.as_fd(), sys::TCP_FASTOPEN, queue)
            .map_err(Error::io("setting TCP_FASTOPEN on the listener"))?;
        if self.no_cookie {
            sys::set_tcp_int(socket.as_fd(), sys::TCP_FASTOPEN_NO_COOKIE, 1)
                .map_err(Error::io("setting TCP_FASTOPEN_NO_COOKIE on the listener"))?;
        }
        if let Some((primary, backup)) = &self.keys {
            set_keys(socket, primary, backup.as_ref())?;
        }
        Ok(())
    }

    /// In strict mode: an error if this listener would not do TFO.
    fn check_strict(&self) -> Result<()> {
        if !self.strict {
            return Ok(());
        }
        match ServerTfo::of(crate::host::read_mode()?, self.queue_len) {
            ServerTfo::On => Ok(()),
            state => Err(Error::ServerTfoOff(state)),
        }
    }

    /// A blocking listener.
    pub fn bind(self) -> Result<BlockingListener> {
        Ok(BlockingListener { inner: self.listen_socket()?.into() })
    }

    /// `n` listeners on one address in an SO_REUSEPORT group, each with this
    /// builder's TFO settings (so `queue_len` is per listener): one per
    /// worker thread, and the kernel spreads new connections over them, as
    /// nginx's `listen ... reuseport` does. An address where something
    /// already listens is refused ([`Error::AddressInUse`]) as a single
    /// listener's would be: SO_REUSEPORT alone would silently join another
    /// server's group (same user) and split its traffic. With port 0 they
    /// share a free port (a port 0 bind with SO_REUSEPORT set may be given
    /// a port another group of the same user holds, so it is not used).
    pub fn bind_group(self, n: usize) -> Result<Vec<BlockingListener>> {
        if n <= 1 {
            return Ok(vec![self.bind()?]);
        }
        let addr = self.check_address_free()?;
        (0..n).map(|_| ListenerBuilder { addr, ..self.clone() }.reuse_port(true).bind()).collect()
    }

    /// Binds (without listening or SO_REUSEPORT) a throwaway socket, and
    /// returns the address it got (port 0: a free port): that fails wherever
    /// anything listens, and succeeds over TIME_WAIT leftovers.
    fn check_address_free(&self) -> Result<SocketAddr> {
        let probe = Socket::new(Domain::for_address(self.addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(Error::io("creating a socket to check the address"))?;
        probe.set_reuse_address(true).map_err(Error::io("setting SO_REUSEADDR"))?;
        if self.addr.is_ipv6() {
            probe.set_only_v6(self.only_v6).map_err(Error::io("setting IPV6_V6ONLY"))?;
        }
        probe.bind(&self.addr.into()).map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => Error::AddressInUse { addr: self.addr },
            _ => Error::Io { what: "checking the address", source: e },
        })?;
        let bound = probe.local_addr().map_err(Error::io("reading the address"))?;
        bound.as_socket().ok_or(Error::Io { what: "reading the address", source: io::ErrorKind::InvalidData.into() })
    }

    /// Turns an existing listening socket (systemd socket activation, a
    /// socket inherited from a parent) into a blocking TFO listener: sets the
    /// TFO queue, no-cookie mode and keys of this builder on it. Its address,
    /// backlog and socket options stay as they are.
    pub fn adopt(self, listener: TcpListener) -> Result<BlockingListener> {
        self.check_strict()?;
        self.configure_tfo(&listener)?;
        Ok(BlockingListener { inner: listener })
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
    // The second read only settles the SYN's byte count (see `derive`): one read for the rest.
    let later = if first.syn_data() && first.data_segs_in == Some(1) { read_tcp_info(stream)? } else { first };
    Ok(AcceptOutcome::derive(&first, &later, KernelFeatures::current()))
}

/// The TFO settings a listener has (read back from the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ListenerTfo {
    /// `getsockopt(TCP_FASTOPEN)`: the queue length in effect (0 = off).
    pub queue_len: u32,
    /// How many keys the listener holds itself (0: it uses the namespace key; 1; or 2 with a backup).
    pub own_keys: usize,
    /// Whether it does TFO at all: a queue is not enough, the namespace must allow it.
    pub state: ServerTfo,
}

pub(crate) fn listener_tfo(socket: &impl AsFd) -> Result<ListenerTfo> {
    let queue = sys::get_tcp_int(socket.as_fd(), sys::TCP_FASTOPEN).map_err(Error::io("reading TCP_FASTOPEN"))?;
    let keys = sys::get_fastopen_key(socket.as_fd()).map_err(Error::io("reading TCP_FASTOPEN_KEY"))?;
    let queue_len = u32::try_from(queue).unwrap_or(0);
    let state = ServerTfo::of(crate::host::read_mode()?, queue_len);
    Ok(ListenerTfo { queue_len, own_keys: keys.len() / 16, state })
}

/// A blocking TFO listener (see [`ListenerBuilder::bind`]).
#[derive(Debug)]
pub struct BlockingListener {
    inner: TcpListener,
}

impl BlockingListener {
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

impl AsFd for BlockingListener {
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
