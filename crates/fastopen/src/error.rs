//! The library's error type.

use std::io;
use std::net::SocketAddr;

use crate::outcome::FailReason;

/// Everything that can go wrong in `fastopen`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This platform has no TFO support in this crate (only Linux does).
    #[error("TCP Fast Open is not supported on this platform (fastopen supports Linux)")]
    Unsupported,
    /// A system call failed; `what` says which step. The OS error is the
    /// [`source`](std::error::Error::source), not repeated in the message.
    #[error("{what}")]
    Io {
        /// The step that failed, e.g. "setting TCP_FASTOPEN on the listener".
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The address is already taken by another socket.
    #[error("cannot listen on {addr}: the address is already in use (another server on that port? pick another with a different port)")]
    AddressInUse {
        /// The address we tried to bind.
        addr: SocketAddr,
    },
    /// Connecting to the server failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The server address.
        addr: SocketAddr,
        /// The OS error (refused, timed out, unreachable, ...).
        #[source]
        source: io::Error,
    },
    /// The handshake did not finish within the connect timeout. If the SYN
    /// carried data, the server may have received it (its SYN-ACK lost):
    /// see [`Connector::idempotent`](crate::Connector::idempotent).
    #[error("connecting to {addr} timed out after {millis} ms (no SYN-ACK: is the server up, and the path open?)")]
    ConnectTimeout {
        /// The server address.
        addr: SocketAddr,
        /// The timeout that passed.
        millis: u128,
    },
    /// The handshake finished but the rest of the first data did not fit into
    /// the socket within the connect timeout (the server does not read). The
    /// server may have received part of it.
    #[error("connected to {addr}, but only {written} of the first {len} bytes were written within {millis} ms (the server does not read)")]
    FirstDataTimeout {
        /// The server address.
        addr: SocketAddr,
        /// Bytes handed to the kernel.
        written: usize,
        /// Bytes of first data.
        len: usize,
        /// The timeout that passed.
        millis: u128,
    },
    /// The connector's [`Cancel`](crate::Cancel) was cancelled during the wait.
    #[error("cancelled")]
    Cancelled,
    /// Strict mode: the listener would not do TFO, so it was not made.
    #[error("not listening: {0}")]
    ServerTfoOff(crate::outcome::ServerTfo),
    /// Strict mode: TFO was not used, and the caller asked for that to be an error.
    ///
    /// With [`FailReason::DataNotAcked`] or [`FailReason::SynRetransmitted`]
    /// the kernel had already sent the SYN's data again after the handshake:
    /// the server may have it. Retry only an idempotent request.
    #[error("TCP Fast Open was not used: {0}")]
    NotUsed(FailReason),
    /// A key of the wrong size, or a backup key without a primary.
    #[error("invalid TFO key: {0}")]
    InvalidKey(&'static str),
    /// A file under /proc did not say what it should.
    #[error("unexpected contents in {path}: {problem}")]
    Proc {
        /// The file.
        path: &'static str,
        /// What was wrong.
        problem: &'static str,
    },
    /// The kernel does not know a socket option (older than the version named).
    #[error("this kernel does not support {option} (needs Linux {since} or later)")]
    KernelTooOld {
        /// The option, e.g. "TCP_FASTOPEN_CONNECT".
        option: &'static str,
        /// The first kernel that has it.
        since: &'static str,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an OS error with the step that failed. An `Unsupported` kind
    /// (ENOSYS, e.g. from a seccomp filter) stays an OS error with its step:
    /// only the non-Linux backend says [`Error::Unsupported`].
    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| {
            if source.get_ref().is_some_and(|inner| inner.is::<crate::sys::PlatformUnsupported>()) {
                Error::Unsupported
            } else {
                Error::Io { what, source }
            }
        }
    }
}

/// Whether `e` (an OS error, or a library error carried in an `io::Error`)
/// says the host or process ran out of what a new connection needs: file
/// descriptors or local ports. Load generators count these apart from the
/// server's failures: they are the client's own limit.
pub fn out_of_resources(e: &io::Error) -> bool {
    if crate::sys::out_of_resources(e) {
        return true;
    }
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::Io { source, .. } | Error::Connect { source, .. }) => crate::sys::out_of_resources(source),
        _ => false,
    }
}

/// Whether an accept failed for want of file descriptors or kernel memory
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM): accepting again at once would fail
/// again, so a server should back off.
pub fn accept_starved(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => crate::sys::accept_starved(source),
        _ => false,
    }
}

impl From<Error> for io::Error {
    /// Keeps the OS error's kind (ConnectionRefused stays ConnectionRefused)
    /// and the library error as the message and source.
    fn from(err: Error) -> io::Error {
        let kind = match &err {
            // An OS error stays one: its errno is what callers match.
            Error::Io { source, .. } | Error::Connect { source, .. } if source.raw_os_error().is_some() => {
                let code = source.raw_os_error().unwrap_or_default();
                return io::Error::from_raw_os_error(code);
            }
            Error::Io { source, .. } | Error::Connect { source, .. } => source.kind(),
            Error::AddressInUse { .. } => io::ErrorKind::AddrInUse,
            Error::ConnectTimeout { .. } | Error::FirstDataTimeout { .. } => io::ErrorKind::TimedOut,
            Error::Cancelled => io::ErrorKind::Interrupted,
            Error::Unsupported | Error::KernelTooOld { .. } => io::ErrorKind::Unsupported,
            Error::InvalidKey(_) => io::ErrorKind::InvalidInput,
            Error::NotUsed(_) | Error::Proc { .. } | Error::ServerTfoOff(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_os_error_is_the_source_not_repeated_in_the_message() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let e = Error::Connect { addr: "127.0.0.1:9".parse().unwrap(), source: refused };
        assert_eq!(e.to_string(), "cannot connect to 127.0.0.1:9");
        assert_eq!(e.source().unwrap().to_string(), io::Error::from(io::ErrorKind::ConnectionRefused).to_string());
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::ConnectionRefused);
        let os = Error::Connect { addr: "127.0.0.1:9".parse().unwrap(), source: io::Error::from_raw_os_error(111) };
        assert_eq!(io::Error::from(os).raw_os_error(), Some(111), "the errno survives");
    }

    #[test]
    fn an_accept_starved_of_descriptors_or_memory_is_told_apart() {
        let accept = |errno| Error::Io { what: "accept()", source: io::Error::from_raw_os_error(errno) };
        for starved in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(accept_starved(&accept(starved)), "errno {starved}");
        }
        assert!(!accept_starved(&accept(libc::ECONNABORTED)), "a connection reset before accept");
    }

    #[test]
    fn enosys_from_seccomp_is_an_os_error_not_unsupported_platform() {
        let enosys = io::Error::from_raw_os_error(38);
        assert_eq!(enosys.kind(), io::ErrorKind::Unsupported);
        let e = Error::io("setting TCP_FASTOPEN")(enosys);
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(!e.to_string().contains("platform"));
    }
}
