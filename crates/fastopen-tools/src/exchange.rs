//! One request and its reply over a TFO (or plain) connection: the client
//! loop that `send`, `probe`, `bench` and `demo` share.
//!
//! Guarantees, whatever the peer does:
//! - **no deadlock on large requests**: the reply is read while the request is
//!   written (a 16 MB request to an echo server fills both windows otherwise);
//! - **one deadline** for the whole exchange, connect included, not per read (a
//!   server that sends a byte a second cannot keep it going);
//! - **a bounded reply** (`max_reply`);
//! - **cancellable**: `cancel` is asked at least every 100 ms (Ctrl-C, a failed
//!   link), so a caller stops within a fraction of a second, and `token`
//!   (the caller's [`fastopen::Cancel`]) ends a connect's wait at once.
//!
//! The first [`FIRST_DATA`] bytes go to [`Connector::connect`] (the part that
//! can ride in the SYN); the rest is written as the socket takes it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use fastopen::{ClientOutcome, Connector};

use crate::failure::Failure;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// Bytes of the request handed to `connect` (more than any SYN carries, and
/// small enough to fit a socket's send buffer at once).
pub const FIRST_DATA: usize = 16 * 1024;

/// Longest wait between two checks of `cancel`.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(100);

/// When the reply is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The server closes (after our request and half-close).
    Eof,
    /// This many bytes arrived (a raw echo).
    Bytes(usize),
    /// A whole HTTP/1.1 response (head and Content-Length body).
    HttpResponse,
    /// The first byte of a reply.
    FirstByte,
}

/// What an exchange may do.
pub struct Limits<'a> {
    /// The whole exchange ends by then.
    pub deadline: Instant,
    /// Largest reply kept.
    pub max_reply: usize,
    /// Half-close after the request (`Until::Eof` servers wait for it).
    pub half_close: bool,
    /// Asked every 100 ms at most: `Some(why)` stops the exchange.
    pub cancel: &'a dyn Fn() -> Option<String>,
    /// Ends the connect's wait when cancelled (the CLI's Ctrl-C).
    pub token: Option<fastopen::Cancel>,
}

impl std::fmt::Debug for Limits<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("deadline", &self.deadline)
            .field("max_reply", &self.max_reply)
            .field("half_close", &self.half_close)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Limits<'_> {
    /// Why to stop now, if the caller says so (`cancel`) or its token was cancelled.
    pub fn stop(&self) -> Option<String> {
        (self.cancel)().or_else(|| self.token.as_ref().filter(|t| t.is_cancelled()).map(|_| "cancelled".to_string()))
    }

    /// A deadline `timeout` from now, nothing else.
    pub fn new(timeout: Duration, until: Until) -> Limits<'static> {
        Limits {
            deadline: Instant::now() + timeout,
            max_reply: 64 << 20,
            half_close: until == Until::Eof,
            cancel: &|| None,
            token: None,
        }
    }
}

/// A completed exchange.
#[derive(Debug)]
pub struct Exchange {
    pub outcome: ClientOutcome,
    pub reply: Vec<u8>,
    /// From the start of the connect to the complete reply.
    pub total: Duration,
    /// From the start of the connect to the first reply byte.
    pub first_byte: Option<Duration>,
    /// Over TLS: the request went as early data and the server took it.
    pub early_data_accepted: bool,
    /// A plain connect's handshake round trip as the client's kernel timed
    /// it (SYN to SYN-ACK, its first RTT sample, read when connect
    /// returned): the path's RTT without the wake-up of the program.
    pub handshake_rtt: Option<Duration>,
}

/// Why an exchange did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Connecting failed (refused, unreachable, no SYN-ACK in time, strict mode).
    #[error(transparent)]
    Connect(#[from] fastopen::Error),
    /// The deadline passed.
    #[error("no complete reply from {addr} within {:.1} s ({received} bytes received, {sent} of {request} sent); the server is slow, silent or gone (--timeout sets the wait)", timeout.as_secs_f64())]
    Timeout {
        addr: SocketAddr,
        timeout: Duration,
        received: usize,
        sent: usize,
        request: usize,
        /// The connection was made: its TFO outcome is known.
        outcome: Box<ClientOutcome>,
        /// What came of the reply.
        partial: Vec<u8>,
    },
    /// The server closed before the reply was complete.
    #[error("{addr} closed the connection after {received} bytes of reply")]
    Closed { addr: SocketAddr, received: usize, partial: Vec<u8> },
    /// The reply outgrew `max_reply`.
    #[error("the reply from {addr} is larger than {max} bytes; stopped reading")]
    TooLarge { addr: SocketAddr, max: usize },
    /// `cancel` said stop.
    #[error("{0}")]
    Cancelled(String),
    /// TLS (or the HTTPS request over it) did not complete.
    #[error("{addr}: {why}")]
    Tls { addr: SocketAddr, why: String },
    /// Sending or receiving failed (reset, ...).
    #[error("{what} {addr}")]
    Io {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl ExchangeError {
    /// The part of the reply that came before the failure.
    pub fn partial_reply(&self) -> &[u8] {
        match self {
            ExchangeError::Timeout { partial, .. } | ExchangeError::Closed { partial, .. } => partial,
            _ => &[],
        }
    }

    /// The connection's TFO outcome, when it was made before the failure.
    pub fn outcome(&self) -> Option<&ClientOutcome> {
        match self {
            ExchangeError::Timeout { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    /// What failed, in the engines' one vocabulary.
    pub fn failure(&self) -> Failure {
        match self {
            ExchangeError::Connect(e) => Failure::of_connect(e),
            ExchangeError::Timeout { .. } => Failure::Timeout,
            ExchangeError::Closed { .. } => Failure::ClosedEarly,
            ExchangeError::TooLarge { .. } => Failure::ReplyTooLarge,
            ExchangeError::Cancelled(_) => Failure::Cancelled,
            ExchangeError::Tls { .. } => Failure::Tls,
            ExchangeError::Io { source, .. } if source.kind() == io::ErrorKind::ConnectionReset => Failure::Reset,
            ExchangeError::Io { .. } => Failure::Io,
        }
    }

    /// A short stable name of the kind, for reports counting failures
    /// (the failure's name).
    pub fn kind(&self) -> &'static str {
        self.failure().as_str()
    }
}

/// Is `reply` complete?
pub fn complete(reply: &[u8], until: Until) -> bool {
    match until {
        Until::Eof => false,
        Until::Bytes(n) => reply.len() >= n,
        Until::FirstByte => !reply.is_empty(),
        Until::HttpResponse => matches!(fastopen_wire::http::read(reply, false), fastopen_wire::http::Reply::Whole(_)),
    }
}

/// Connects with `connector` (the first part of `request` in the SYN when it
/// can), sends the rest while reading, and returns when the reply is complete.
pub fn exchange(
    connector: &Connector,
    addr: SocketAddr,
    request: &[u8],
    until: Until,
    limits: &Limits<'_>,
) -> Result<Exchange, ExchangeError> {
    let start = Instant::now();
    let timeout = limits.deadline.saturating_duration_since(start);
    if let Some(why) = limits.stop() {
        return Err(ExchangeError::Cancelled(why));
    }
    let first = &request[..request.len().min(FIRST_DATA)];
    let connector =
        connector.clone().connect_timeout(Some(timeout.max(Duration::from_millis(1)))).cancel_on(limits.token.clone());
    let (stream, outcome) = connector.connect(addr, first)?;
    // Plain: the handshake is over and its sample the only one yet.
    let handshake_rtt = match outcome.method {
        None => fastopen::read_tcp_info(&stream).ok().and_then(|i| i.rtt_us).map(|us| Duration::from_micros(us.into())),
        Some(_) => None,
    };
    stream.set_nonblocking(true).map_err(|source| ExchangeError::Io {
        what: "setting up the connection to",
        addr,
        source,
    })?;
    let mut x = InFlight {
        stream,
        addr,
        request,
        sent: first.len(),
        half_closed: false,
        reply: Vec::new(),
        start,
        first_byte: None,
    };
    loop {
        x.send_what_fits(limits.half_close)?;
        if x.receive_what_came(until, limits.max_reply)? {
            return Ok(Exchange { handshake_rtt, ..done(outcome, x.reply, start, x.first_byte) });
        }
        if let Some(why) = limits.stop() {
            return Err(ExchangeError::Cancelled(why));
        }
        let left = limits.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let (received, sent) = (x.reply.len(), x.sent);
            return Err(ExchangeError::Timeout {
                addr,
                timeout,
                received,
                sent,
                request: request.len(),
                outcome: Box::new(outcome),
                partial: x.reply,
            });
        }
        x.wait(left.min(CHECK_EVERY))?;
    }
}

/// An exchange under way on a non-blocking stream.
struct InFlight<'a> {
    stream: TcpStream,
    addr: SocketAddr,
    request: &'a [u8],
    sent: usize,
    half_closed: bool,
    reply: Vec<u8>,
    start: Instant,
    first_byte: Option<Duration>,
}

impl InFlight<'_> {
    fn io_error(&self, what: &'static str, source: io::Error) -> ExchangeError {
        ExchangeError::Io { what, addr: self.addr, source }
    }

    /// Writes what the socket takes now; half-closes after the last byte if asked.
    fn send_what_fits(&mut self, half_close: bool) -> Result<(), ExchangeError> {
        if self.sent < self.request.len() {
            match (&self.stream).write(&self.request[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(self.io_error("sending to", peer_error(&self.stream, e))),
            }
        }
        if self.sent == self.request.len() && half_close && !self.half_closed {
            self.stream
                .shutdown(Shutdown::Write)
                .map_err(|e| self.io_error("sending to", peer_error(&self.stream, e)))?;
            self.half_closed = true;
        }
        Ok(())
    }

    /// Reads what has arrived; `true` when the reply is complete.
    fn receive_what_came(&mut self, until: Until, max_reply: usize) -> Result<bool, ExchangeError> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match (&self.stream).read(&mut chunk) {
                Ok(0) if until == Until::Eof => return Ok(true),
                Ok(0)
                    if until == Until::HttpResponse
                        && matches!(
                            fastopen_wire::http::read(&self.reply, true),
                            fastopen_wire::http::Reply::Whole(_)
                        ) =>
                {
                    return Ok(true)
                }
                Ok(0) => {
                    let partial = std::mem::take(&mut self.reply);
                    return Err(ExchangeError::Closed { addr: self.addr, received: partial.len(), partial });
                }
                Ok(n) => {
                    self.first_byte.get_or_insert_with(|| self.start.elapsed());
                    if self.reply.len().saturating_add(n) > max_reply {
                        return Err(ExchangeError::TooLarge { addr: self.addr, max: max_reply });
                    }
                    self.reply.extend_from_slice(&chunk[..n]);
                    if complete(&self.reply, until) {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error("reading the reply from", e)),
            }
        }
    }

    /// Waits until the socket can move data, or `wait` passes.
    fn wait(&self, wait: Duration) -> Result<(), ExchangeError> {
        let mut events = PollFlags::POLLIN;
        if self.sent < self.request.len() {
            events |= PollFlags::POLLOUT;
        }
        let wait = PollTimeout::try_from(wait).unwrap_or(PollTimeout::ZERO);
        match nix::poll::poll(&mut [PollFd::new(self.stream.as_fd(), events)], wait) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(self.io_error("waiting for", e.into())),
        }
    }
}

fn done(outcome: ClientOutcome, reply: Vec<u8>, start: Instant, first_byte: Option<Duration>) -> Exchange {
    Exchange { outcome, reply, total: start.elapsed(), first_byte, early_data_accepted: false, handshake_rtt: None }
}

/// The peer may have reset already: SO_ERROR then holds the real cause.
fn peer_error(stream: &TcpStream, e: io::Error) -> io::Error {
    stream.take_error().ok().flatten().unwrap_or(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion() {
        assert!(complete(b"abc", Until::Bytes(3)) && !complete(b"ab", Until::Bytes(3)));
        assert!(complete(b"x", Until::FirstByte) && !complete(b"", Until::FirstByte));
        assert!(!complete(b"anything", Until::Eof));
        let resp = crate::connection::http_response(200, "OK", b"hello");
        assert!(complete(&resp, Until::HttpResponse));
        assert!(!complete(&resp[..resp.len() - 1], Until::HttpResponse));
        let mut with_continue = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        assert!(!complete(&with_continue, Until::HttpResponse), "100 Continue is not the response");
        with_continue.extend_from_slice(&resp);
        assert!(complete(&with_continue, Until::HttpResponse));
    }
}
