//! A server that speaks first (SMTP 220, FTP 220, SSH's version line, IMAP,
//! POP3, MySQL): connect read-first (the cached cookie in a SYN without data),
//! read its greeting, and say how long it took in round trips. The engine of
//! `tfo send --read-first`, `tfo probe --read-first` and `tfo bench --read-first`.
//!
//! With the cookie, a server with TFO creates the connection on the SYN and
//! its greeting follows the SYN-ACK: one round trip to the greeting instead
//! of two. "With the handshake" is judged against the connection's own RTT
//! (the kernel's, from the SYN-ACK): under 1.5 round trips.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use fastopen::{ClientOutcome, Connector};

use crate::failure::Failure;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::exchange::{Limits, CHECK_EVERY};

/// The most of a greeting kept (the first line, or this much).
pub const MAX_GREETING: usize = 64 * 1024;

/// A greeting read.
#[derive(Debug)]
pub struct Greeting {
    pub outcome: ClientOutcome,
    /// Its first line (or what came, up to [`MAX_GREETING`]).
    pub text: Vec<u8>,
    /// From the start of the connect to the greeting's first byte.
    pub after: Duration,
    /// The kernel's RTT of the connection (from the SYN-ACK), if it says.
    pub rtt: Option<Duration>,
    pub stream: TcpStream,
}

impl Greeting {
    /// The time to the greeting in round trips of the connection.
    pub fn round_trips(&self) -> Option<f64> {
        self.rtt.filter(|r| !r.is_zero()).map(|r| self.after.as_secs_f64() / r.as_secs_f64())
    }

    /// Whether the greeting came with the handshake (within 1.5 round trips):
    /// the server made the connection on the SYN and spoke in SYN_RECV.
    pub fn with_handshake(&self) -> Option<bool> {
        self.round_trips().map(|n| n < 1.5)
    }
}

/// Why no greeting was read.
#[derive(Debug, thiserror::Error)]
pub enum GreetingError {
    #[error(transparent)]
    Connect(#[from] fastopen::Error),
    #[error("{addr} sent no greeting within {:.1} s: it does not speak first (or is slow; --timeout sets the wait)", timeout.as_secs_f64())]
    Silent { addr: SocketAddr, timeout: Duration, outcome: Box<ClientOutcome> },
    #[error("{addr} closed the connection before any greeting")]
    Closed { addr: SocketAddr },
    #[error("{0}")]
    Cancelled(String),
    #[error("reading the greeting from {addr}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl GreetingError {
    /// What failed, in the engines' one vocabulary.
    pub fn failure(&self) -> Failure {
        match self {
            GreetingError::Connect(e) => Failure::of_connect(e),
            GreetingError::Silent { .. } => Failure::NoGreeting,
            GreetingError::Closed { .. } => Failure::ClosedEarly,
            GreetingError::Cancelled(_) => Failure::Cancelled,
            GreetingError::Io { .. } => Failure::Io,
        }
    }

    /// A short stable name of the kind, for reports (the failure's name).
    pub fn kind(&self) -> &'static str {
        self.failure().as_str()
    }
}

/// A greeting read as the exchange it is (its time: to the greeting's first
/// byte), for callers that count exchanges (`tfo bench --read-first`).
impl From<Greeting> for crate::exchange::Exchange {
    fn from(g: Greeting) -> Self {
        let handshake_rtt = if g.outcome.method.is_none() { g.rtt } else { None };
        crate::exchange::Exchange {
            outcome: g.outcome,
            reply: g.text,
            total: g.after,
            first_byte: Some(g.after),
            early_data_accepted: false,
            handshake_rtt,
        }
    }
}

impl From<GreetingError> for crate::exchange::ExchangeError {
    fn from(e: GreetingError) -> Self {
        use crate::exchange::ExchangeError as X;
        match e {
            GreetingError::Connect(e) => X::Connect(e),
            GreetingError::Silent { addr, timeout, outcome } => {
                X::Timeout { addr, timeout, received: 0, sent: 0, request: 0, outcome, partial: Vec::new() }
            }
            GreetingError::Closed { addr } => X::Closed { addr, received: 0, partial: Vec::new() },
            GreetingError::Cancelled(why) => X::Cancelled(why),
            GreetingError::Io { addr, source } => X::Io { what: "reading the greeting from", addr, source },
        }
    }
}

/// Connects read-first to `addr` and reads the greeting, all by
/// `limits.deadline`; `limits.cancel` and `limits.token` stop it (the
/// token's descriptor wakes the wait at once).
pub fn read_greeting(connector: &Connector, addr: SocketAddr, limits: &Limits<'_>) -> Result<Greeting, GreetingError> {
    let started = Instant::now();
    let deadline = limits.deadline;
    let timeout = deadline.saturating_duration_since(started).max(Duration::from_millis(1));
    let connector = connector.clone().connect_timeout(Some(timeout)).cancel_on(limits.token.clone());
    let (stream, outcome) = connector.connect_read_first(addr)?;
    let rtt = fastopen::read_tcp_info(&stream).ok().and_then(|i| i.rtt_us).map(|us| Duration::from_micros(us.into()));
    let io = |source| GreetingError::Io { addr, source };
    stream.set_nonblocking(true).map_err(io)?;
    let mut text = Vec::new();
    let mut after = None;
    let mut chunk = [0u8; 4096];
    loop {
        match (&stream).read(&mut chunk) {
            Ok(0) if text.is_empty() => return Err(GreetingError::Closed { addr }),
            Ok(0) => break,
            Ok(n) => {
                after.get_or_insert_with(|| started.elapsed());
                let keep = n.min(MAX_GREETING.saturating_sub(text.len()));
                text.extend_from_slice(&chunk[..keep]);
                if text.contains(&b'\n') || text.len() >= MAX_GREETING {
                    break;
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        }
        if let Some(why) = limits.stop() {
            return Err(GreetingError::Cancelled(why));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if text.is_empty() {
                return Err(GreetingError::Silent { addr, timeout, outcome: Box::new(outcome) });
            }
            break;
        }
        let mut fds = vec![PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
        if let Some(token) = &limits.token {
            fds.push(PollFd::new(token.fd(), PollFlags::POLLIN));
        }
        // At most CHECK_EVERY, so that `cancel` is asked as often as the exchange asks it.
        let wait = PollTimeout::try_from(left.min(CHECK_EVERY)).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, wait) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io(e.into())),
        }
    }
    stream.set_nonblocking(false).map_err(io)?;
    let after = after.unwrap_or_else(|| started.elapsed());
    Ok(Greeting { outcome, text, after, rtt, stream })
}
