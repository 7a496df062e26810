//! The TFO client: connect with the first data in the SYN, then report the outcome.
//!
//! Both kernel paths are here. [`ClientMethod::SendTo`] calls
//! `sendto(MSG_FASTOPEN)` with the first data; [`ClientMethod::Connect`] sets
//! `TCP_FASTOPEN_CONNECT`, calls `connect()` (which returns at once when a
//! cookie is cached) and lets the first `write()` carry the SYN.
//!
//! Both run on a non-blocking socket so that the kernel tells us exactly how
//! many bytes it put in the SYN; the blocking API then waits for the handshake
//! with `poll`, the async one with tokio.
//!
//! # The read-before-write trap
//!
//! With `TCP_FASTOPEN_CONNECT` and a cached cookie, `connect()` sends nothing:
//! the SYN leaves with the first write. A program that reads first waits
//! forever. [`Connector::connect`] takes the first data as an argument and
//! writes all of it before returning, so the trap cannot happen here; with no
//! data, it makes a plain connect ([`FailReason::NoData`]).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket};

use crate::kernel::KernelFeatures;
use crate::outcome::{Attempt, ClientMethod, ClientOutcome, FailReason};
use crate::socket_info::read_tcp_info;
use crate::sys::ClientErrno;
use crate::{sys, Cancel, Error, Result};

/// Settings for TFO client connections. Cheap to clone; reuse one for many connections.
#[derive(Debug, Clone)]
pub struct Connector {
    method: ClientMethod,
    enabled: bool,
    strict: bool,
    no_cookie: bool,
    connect_timeout: Option<Duration>,
    local: Option<SocketAddr>,
    mark: Option<u32>,
    cancel: Option<Cancel>,
    idempotent: bool,
    nodelay: bool,
}

impl Default for Connector {
    fn default() -> Self {
        Connector {
            method: ClientMethod::SendTo,
            enabled: true,
            strict: false,
            no_cookie: false,
            connect_timeout: None,
            local: None,
            mark: None,
            cancel: None,
            idempotent: false,
            nodelay: false,
        }
    }
}

/// A failed connect, and whether the server may have the first data.
struct Failed {
    error: Error,
    data_may_have_left: bool,
}

/// A connection whose handshake has started, before waiting for it.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) socket: Socket,
    pub(crate) attempt: Attempt,
    /// Bytes of the first data already handed to the kernel.
    pub(crate) written: usize,
    pub(crate) started_at: Instant,
}

impl Connector {
    /// TFO with `sendto(MSG_FASTOPEN)`, not strict, cookies required, the kernel's connect timeout.
    pub fn new() -> Connector {
        Connector::default()
    }

    /// Which kernel path to use (default [`ClientMethod::SendTo`]).
    pub fn method(mut self, method: ClientMethod) -> Connector {
        self.method = method;
        self
    }

    /// `false` makes plain connections (connect, then write), for comparison.
    pub fn tfo(mut self, enabled: bool) -> Connector {
        self.enabled = enabled;
        self
    }

    /// In strict mode a fallback is an error: client TFO off in this namespace,
    /// the kernel skipping TFO, or SYN data not acknowledged. A cookie request
    /// (the first connection to a server) is not a fallback and is not an error.
    pub fn strict(mut self, strict: bool) -> Connector {
        self.strict = strict;
        self
    }

    /// `TCP_FASTOPEN_NO_COOKIE` (Linux 4.15): send SYN data without a cookie.
    /// Only servers in no-cookie mode accept it.
    pub fn no_cookie(mut self, no_cookie: bool) -> Connector {
        self.no_cookie = no_cookie;
        self
    }

    /// Give up if the handshake has not finished after this long
    /// (default: the kernel's SYN retries, about two minutes). It bounds the
    /// whole blocking [`connect`](Connector::connect), the writing of the rest
    /// of the first data included ([`Error::FirstDataTimeout`]).
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Connector {
        self.connect_timeout = timeout;
        self
    }

    /// Bind the client socket to this local address first (a source address
    /// or port of your choice; port 0 lets the kernel pick).
    pub fn local_addr(mut self, local: Option<SocketAddr>) -> Connector {
        self.local = local;
        self
    }

    /// `SO_MARK` on the client socket (policy routing, firewall marks; needs CAP_NET_ADMIN).
    pub fn mark(mut self, mark: Option<u32>) -> Connector {
        self.mark = mark;
        self
    }

    /// Every wait of this connector ends at once with [`Error::Cancelled`]
    /// when `cancel` is cancelled (Ctrl-C, a shutdown), not at its timeout.
    pub fn cancel_on(mut self, cancel: Option<Cancel>) -> Connector {
        self.cancel = cancel;
        self
    }

    /// `TCP_NODELAY` on the connection (default `false`): each write leaves at
    /// once instead of waiting for the previous one's ACK (Nagle). Turn it on
    /// for TLS and other protocols that write twice before reading: TLS 1.3's
    /// Finished and the request behind it otherwise cost a round trip more.
    pub fn nodelay(mut self, nodelay: bool) -> Connector {
        self.nodelay = nodelay;
        self
    }

    /// Says that the first data may be delivered twice (default `false`).
    /// [`connect_host`](Connector::connect_host) then tries the next address
    /// even when the failed attempt's SYN carried data, which the server may
    /// have received; without it, that attempt's error is returned.
    pub fn idempotent(mut self, idempotent: bool) -> Connector {
        self.idempotent = idempotent;
        self
    }

    /// Connects to the first address of `host` that answers (a name such as
    /// `("localhost", 8000)` or `"example.com:80"` is resolved, every address
    /// tried in order while the connection is refused, unreachable or times out).
    ///
    /// The next address is tried only when no byte of `first_data` can have
    /// reached the failed one (refused, unreachable, or a timeout of a SYN
    /// without data), unless the connector is [`idempotent`](Connector::idempotent):
    /// a request is never run twice behind the caller's back.
    pub fn connect_host(
        &self,
        host: impl std::net::ToSocketAddrs,
        first_data: &[u8],
    ) -> Result<(TcpStream, ClientOutcome)> {
        let addrs: Vec<SocketAddr> = host.to_socket_addrs().map_err(Error::io("resolving the host"))?.collect();
        let mut last = Error::Io {
            what: "resolving the host",
            source: io::Error::new(io::ErrorKind::NotFound, "the name has no address"),
        };
        for addr in addrs {
            match self.connect_once(addr, first_data, false) {
                Ok(done) => return Ok(done),
                Err(Failed { error, data_may_have_left }) => {
                    let next_is_safe = self.idempotent || !data_may_have_left;
                    match error {
                        e @ (Error::Connect { .. } | Error::ConnectTimeout { .. }) if next_is_safe => last = e,
                        e => return Err(e),
                    }
                }
            }
        }
        Err(last)
    }

    /// The connect timeout, if any.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// Connects to `addr` with `first_data` in the SYN when possible, waits for
    /// the handshake, writes the rest of `first_data`, and returns the stream
    /// with the outcome.
    ///
    /// The connect timeout bounds the whole call; a [`Cancel`] given with
    /// [`cancel_on`](Connector::cancel_on) ends it at once.
    pub fn connect(&self, addr: SocketAddr, first_data: &[u8]) -> Result<(TcpStream, ClientOutcome)> {
        self.connect_once(addr, first_data, false).map_err(|f| f.error)
    }

    /// Connects for a protocol where the server speaks first (SMTP, SSH, FTP,
    /// IMAP, POP3, MySQL): the program reads before it writes.
    ///
    /// With a cookie cached for the server, the SYN leaves at once with the
    /// cookie and no data ([`ClientOutcome::cookie_only_syn`]): a server with
    /// TFO creates the connection on it and its greeting comes right behind
    /// the SYN-ACK, one round trip sooner. Without one, an ordinary connect
    /// that asks for a cookie ([`FailReason::CookieUnavailable`]). Either way
    /// the stream is connected when this returns (`peer_addr` works, a read
    /// waits for the greeting, never for a write), within the connect timeout.
    ///
    /// ```no_run
    /// use std::io::{BufRead, BufReader, Write};
    /// let connector = fastopen::Connector::new().connect_timeout(Some(std::time::Duration::from_secs(5)));
    /// let (stream, outcome) = connector.connect_read_first("127.0.0.1:25".parse()?)?;
    /// let mut greeting = String::new();
    /// BufReader::new(&stream).read_line(&mut greeting)?; // "220 mail.example ESMTP"
    /// println!("{greeting}{outcome}");
    /// (&stream).write_all(b"EHLO me\r\n")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect_read_first(&self, addr: SocketAddr) -> Result<(TcpStream, ClientOutcome)> {
        self.connect_once(addr, &[], true).map_err(|f| f.error)
    }

    /// [`connect`](Connector::connect) (or, with `read_first`, the read-first
    /// connect), and on failure whether any of `first_data` may have left
    /// this host (and reached the server).
    fn connect_once(
        &self,
        addr: SocketAddr,
        first_data: &[u8],
        read_first: bool,
    ) -> std::result::Result<(TcpStream, ClientOutcome), Failed> {
        let before_syn = |error| Failed { error, data_may_have_left: false };
        if self.cancel.as_ref().is_some_and(Cancel::is_cancelled) {
            return Err(before_syn(Error::Cancelled));
        }
        let started = self.start(addr, first_data, read_first).map_err(before_syn)?;
        let in_syn = started.written > 0;
        let failed = |error| Failed { error, data_may_have_left: in_syn };
        let deadline = self.connect_timeout.map(|t| started.started_at + t);
        let millis = self.connect_timeout.map_or(0, |t| t.as_millis());
        match self.wait(started.socket.as_fd(), true, deadline).map_err(failed)? {
            sys::Wait::Ready => {}
            sys::Wait::TimedOut => return Err(failed(Error::ConnectTimeout { addr, millis })),
            sys::Wait::Cancelled => return Err(failed(Error::Cancelled)),
        }
        let outcome = self
            .finish(&started.socket, started.attempt, started.started_at, addr, first_data.len())
            .map_err(|error| {
                // A refusal answered the SYN: its data was not taken. Strict
                // mode's DataNotAcked / SynRetransmitted: the kernel sends it again.
                let refused = matches!(&error, Error::Connect { source, .. } if matches!(
                    source.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable
                ));
                Failed { error, data_may_have_left: in_syn && !refused }
            })?;
        let mut written = started.written;
        while written < first_data.len() {
            match started.socket.send(&first_data[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match self
                        .wait(started.socket.as_fd(), true, deadline)
                        .map_err(|error| Failed { error, data_may_have_left: true })?
                    {
                        sys::Wait::Ready => {}
                        sys::Wait::TimedOut => {
                            let error = Error::FirstDataTimeout { addr, written, len: first_data.len(), millis };
                            return Err(Failed { error, data_may_have_left: true });
                        }
                        sys::Wait::Cancelled => {
                            return Err(Failed { error: Error::Cancelled, data_may_have_left: true })
                        }
                    }
                }
                Err(source) => {
                    let error = Error::Connect { addr, source };
                    return Err(Failed { error, data_may_have_left: written > 0 });
                }
            }
        }
        started
            .socket
            .set_nonblocking(false)
            .map_err(|e| Failed { error: Error::io("making the socket blocking")(e), data_may_have_left: true })?;
        Ok((started.socket.into(), outcome))
    }

    /// Waits for `fd` within `deadline`, honouring the connector's [`Cancel`].
    fn wait(&self, fd: std::os::fd::BorrowedFd<'_>, write: bool, deadline: Option<Instant>) -> Result<sys::Wait> {
        let cancel = self.cancel.as_ref().map(Cancel::fd);
        sys::wait_ready(fd, write, deadline, cancel).map_err(Error::io("waiting for the handshake"))
    }

    /// The cancellation given with [`cancel_on`](Connector::cancel_on).
    pub(crate) fn cancellation(&self) -> Option<&Cancel> {
        self.cancel.as_ref()
    }

    /// Whether the caller said the first data may be delivered twice.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// Creates the socket and starts the handshake, with data in the SYN if the
    /// kernel will take it, or with `read_first` the cached cookie in a SYN
    /// without data. Never blocks.
    pub(crate) fn start(&self, addr: SocketAddr, first_data: &[u8], read_first: bool) -> Result<Started> {
        let socket =
            sys::nonblocking_tcp_socket(Domain::for_address(addr)).map_err(Error::io("creating the client socket"))?;
        if let Some(mark) = self.mark {
            socket.set_mark(mark).map_err(Error::io("setting SO_MARK"))?;
        }
        if self.nodelay {
            socket.set_tcp_nodelay(true).map_err(Error::io("setting TCP_NODELAY"))?;
        }
        if let Some(local) = self.local {
            socket.bind(&local.into()).map_err(Error::io("binding the client socket to its local address"))?;
        }
        if self.no_cookie && self.enabled {
            sys::set_tcp_int(socket.as_fd(), sys::TCP_FASTOPEN_NO_COOKIE, 1)
                .map_err(Error::io("setting TCP_FASTOPEN_NO_COOKIE"))?;
        }
        let started_at = Instant::now();
        let skip = if !self.enabled {
            Some(FailReason::NotRequested)
        } else if first_data.is_empty() && !read_first {
            Some(FailReason::NoData)
        } else {
            None
        };
        // A read-first connect always takes the TCP_FASTOPEN_CONNECT path.
        let method = if read_first { ClientMethod::Connect } else { self.method };
        let tfo_start = match skip {
            Some(reason) => Ok(TfoStart::Fallback(reason)),
            None if read_first => start_read_first(&socket, addr),
            None => match self.method {
                ClientMethod::SendTo => start_sendto(&socket, addr, first_data),
                ClientMethod::Connect => start_fastopen_connect(&socket, addr, first_data),
            },
        }
        .map_err(|source| Error::Connect { addr, source })?;
        let (attempt, written) = match tfo_start {
            TfoStart::Sent { syn_bytes, written } => (Attempt::Tried { method, syn_bytes }, written),
            TfoStart::CookieOnly => (Attempt::CookieOnly, 0),
            TfoStart::Fallback(FailReason::ClientDisabled) if self.strict => {
                return Err(Error::NotUsed(FailReason::ClientDisabled))
            }
            TfoStart::Fallback(reason) => {
                plain_connect(&socket, addr).map_err(|source| Error::Connect { addr, source })?;
                (Attempt::Skipped(reason), 0)
            }
        };
        Ok(Started { socket, attempt, written, started_at })
    }

    /// After the handshake: checks for a connect error and derives the outcome.
    /// `socket` is the started socket, or whatever now owns its descriptor.
    pub(crate) fn finish(
        &self,
        socket: &impl AsFd,
        attempt: Attempt,
        started_at: Instant,
        addr: SocketAddr,
        first_data_len: usize,
    ) -> Result<ClientOutcome> {
        if let Some(source) = socket2::SockRef::from(socket).take_error().map_err(Error::io("reading SO_ERROR"))? {
            return Err(Error::Connect { addr, source });
        }
        let connect_time = started_at.elapsed();
        let outcome = match attempt {
            // TFO was not tried: the reason is known, no TCP_INFO to read
            // (one system call less per plain connection).
            Attempt::Skipped(reason) => ClientOutcome::skipped(reason, first_data_len, connect_time),
            _ => {
                let info = read_tcp_info(socket)?;
                ClientOutcome::derive(attempt, &info, KernelFeatures::current(), first_data_len, connect_time)
            }
        };
        if self.strict {
            match outcome.fail_reason {
                None
                | Some(FailReason::CookieUnavailable)
                | Some(FailReason::NotRequested)
                | Some(FailReason::NoData) => {}
                Some(reason) => return Err(Error::NotUsed(reason)),
            }
        }
        Ok(outcome)
    }
}

/// What the kernel says about TFO on any connected client socket, also one
/// this library did not make (connected by hand, by another library): was the
/// SYN's data acknowledged, and if the kernel recorded why not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SocketOutcome {
    /// The SYN carried data and the SYN-ACK acknowledged it (`TCPI_OPT_SYN_DATA`).
    pub syn_data_acked: bool,
    /// The reason the kernel recorded (`tcpi_fastopen_client_fail`, Linux 5.5):
    /// `cookie_unavailable`, `data_not_acked` or `syn_retransmitted`; `None`
    /// when TFO was used, or not attempted, or the kernel is older.
    pub fail_reason: Option<FailReason>,
}

impl SocketOutcome {
    /// Whether data rode in the SYN and was acknowledged.
    pub fn tfo_used(&self) -> bool {
        self.syn_data_acked
    }
}

/// [`SocketOutcome`] of a connected client socket (read it after the handshake).
pub fn socket_outcome(socket: &impl AsFd) -> Result<SocketOutcome> {
    let info = read_tcp_info(socket)?;
    let syn_data_acked = info.syn_data();
    let fail_reason = match info.fastopen_client_fail {
        _ if syn_data_acked || !KernelFeatures::current().client_fail_reason => None,
        1 => Some(FailReason::CookieUnavailable),
        2 => Some(FailReason::DataNotAcked),
        3 => Some(FailReason::SynRetransmitted),
        _ => None,
    };
    Ok(SocketOutcome { syn_data_acked, fail_reason })
}

/// What the kernel did with a TFO request.
enum TfoStart {
    /// The handshake started; `syn_bytes` rode in the SYN and `written` bytes
    /// of the first data are in the kernel (equal, today).
    Sent { syn_bytes: usize, written: usize },
    /// The kernel refused TFO; make a plain connect instead.
    Fallback(FailReason),
    /// The SYN left with the cached cookie and no data (read first).
    CookieOnly,
}

/// A read-first start: `TCP_FASTOPEN_CONNECT`, then `connect()`. With a
/// cookie cached it returns at once and sends nothing (the SYN would wait for
/// a write that a read-first program never makes); an empty `send()` then
/// sends the SYN with the cookie and no data. Without one, `connect()` sends
/// an ordinary SYN that asks for a cookie.
fn start_read_first(socket: &Socket, addr: SocketAddr) -> io::Result<TfoStart> {
    match sys::set_tcp_int(socket.as_fd(), sys::TCP_FASTOPEN_CONNECT, 1) {
        Ok(()) => {}
        Err(e) if sys::client_errno(&e) == ClientErrno::TfoDisabled => {
            return Ok(TfoStart::Fallback(FailReason::ClientDisabled))
        }
        Err(e) => return Err(e),
    }
    match socket.connect(&addr.into()) {
        Ok(()) => match socket.send(&[]) {
            Ok(_) => Ok(TfoStart::CookieOnly),
            Err(e) if sys::client_errno(&e) == ClientErrno::InProgress => Ok(TfoStart::CookieOnly),
            Err(e) => Err(e),
        },
        Err(e) if sys::client_errno(&e) == ClientErrno::InProgress => Ok(TfoStart::Sent { syn_bytes: 0, written: 0 }),
        Err(e) => Err(e),
    }
}

/// `sendto(MSG_FASTOPEN)` on a non-blocking socket: returns the bytes put in the
/// SYN (cookie cached), or EINPROGRESS (a cookie request went out; nothing queued).
fn start_sendto(socket: &Socket, addr: SocketAddr, data: &[u8]) -> io::Result<TfoStart> {
    match socket.send_to_with_flags(data, &addr.into(), sys::MSG_FASTOPEN) {
        Ok(n) => Ok(TfoStart::Sent { syn_bytes: n, written: n }),
        Err(e) => match sys::client_errno(&e) {
            ClientErrno::InProgress => Ok(TfoStart::Sent { syn_bytes: 0, written: 0 }),
            ClientErrno::TfoDisabled => Ok(TfoStart::Fallback(FailReason::ClientDisabled)),
            ClientErrno::Other => Err(e),
        },
    }
}

/// `TCP_FASTOPEN_CONNECT` + `connect()` + `send()`. With a cached cookie,
/// connect returns 0 without sending and the send puts the data in the SYN;
/// without one, connect sends a cookie request and says EINPROGRESS.
fn start_fastopen_connect(socket: &Socket, addr: SocketAddr, data: &[u8]) -> io::Result<TfoStart> {
    match sys::set_tcp_int(socket.as_fd(), sys::TCP_FASTOPEN_CONNECT, 1) {
        Ok(()) => {}
        Err(e) if sys::client_errno(&e) == ClientErrno::TfoDisabled => {
            return Ok(TfoStart::Fallback(FailReason::ClientDisabled))
        }
        Err(e) => return Err(e),
    }
    match socket.connect(&addr.into()) {
        Ok(()) => match socket.send(data) {
            Ok(n) => Ok(TfoStart::Sent { syn_bytes: n, written: n }),
            Err(e) if sys::client_errno(&e) == ClientErrno::InProgress => {
                Ok(TfoStart::Sent { syn_bytes: 0, written: 0 })
            }
            Err(e) => Err(e),
        },
        Err(e) if sys::client_errno(&e) == ClientErrno::InProgress => Ok(TfoStart::Sent { syn_bytes: 0, written: 0 }),
        Err(e) => Err(e),
    }
}

/// A plain non-blocking connect: EINPROGRESS is the expected answer.
fn plain_connect(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    match socket.connect(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if sys::client_errno(&e) == ClientErrno::InProgress => Ok(()),
        Err(e) => Err(e),
    }
}
