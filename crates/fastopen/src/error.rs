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
    /// A system call failed; `what` says which step.
    #[error("{what}: {source}")]
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
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The server address.
        addr: SocketAddr,
        /// The OS error (refused, timed out, unreachable, ...).
        #[source]
        source: io::Error,
    },
    /// The handshake did not finish within the connect timeout.
    #[error("connecting to {addr} timed out after {millis} ms (no SYN-ACK: is the server up, and the path open?)")]
    ConnectTimeout {
        /// The server address.
        addr: SocketAddr,
        /// The timeout that passed.
        millis: u128,
    },
    /// Strict mode: TFO was not used, and the caller asked for that to be an error.
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
    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| {
            if source.kind() == io::ErrorKind::Unsupported {
                Error::Unsupported
            } else {
                Error::Io { what, source }
            }
        }
    }
}
