//! Why a request got no correct reply: the failure vocabulary of the load
//! engine, which counts requests by it; the names (`as_str`) are the keys of
//! `tfo load --json`'s `errors_by_kind`. (`tfo probe` still names its
//! failures with `ExchangeError::kind`, whose names its JSON has promised.)

use std::io;

/// What went wrong with one request, coarse enough to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// The server refused the connection (RST to the SYN).
    Refused,
    /// No SYN-ACK within the connect timeout.
    ConnectTimeout,
    /// The connection was reset or broke after it was made.
    Reset,
    /// The whole request took longer than its deadline.
    Timeout,
    /// The reply was not this request's (echo), not whole, or too large.
    WrongReply,
    /// An HTTP status other than 2xx.
    HttpStatus,
    /// The TLS handshake (or TLS record layer) failed.
    Tls,
    /// The client ran out of file descriptors or local ports.
    Resources,
    /// In flight when the run ended (its duration, or Ctrl-C): counted,
    /// not an error.
    Cancelled,
    /// Anything else.
    Other,
}

impl Failure {
    /// The name in reports and JSON: `refused`, `connect_timeout`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::Reset => "reset",
            Failure::Timeout => "timeout",
            Failure::WrongReply => "wrong_reply",
            Failure::HttpStatus => "http_status",
            Failure::Tls => "tls",
            Failure::Resources => "resources",
            Failure::Cancelled => "cancelled",
            Failure::Other => "other",
        }
    }

    /// The failure an I/O error means (a library error inside it included).
    pub fn of(e: &io::Error) -> Failure {
        use io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused => Failure::Refused,
            TimedOut => Failure::ConnectTimeout,
            ConnectionReset | ConnectionAborted | BrokenPipe => Failure::Reset,
            InvalidData => Failure::Tls,
            UnexpectedEof => Failure::WrongReply,
            Interrupted => Failure::Cancelled,
            _ if fastopen::out_of_resources(e) => Failure::Resources,
            _ => Failure::Other,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_failure() {
        let os = |code| io::Error::from_raw_os_error(code);
        assert_eq!(Failure::of(&os(111)), Failure::Refused, "ECONNREFUSED");
        assert_eq!(Failure::of(&os(104)), Failure::Reset, "ECONNRESET");
        assert_eq!(Failure::of(&os(24)), Failure::Resources, "EMFILE");
        assert_eq!(Failure::of(&os(99)), Failure::Resources, "EADDRNOTAVAIL");
        let wrapped: io::Error =
            fastopen::Error::Connect { addr: "127.0.0.1:1".parse().unwrap(), source: os(24) }.into();
        assert_eq!(Failure::of(&wrapped), Failure::Resources, "EMFILE inside a library error");
        let timeout: io::Error =
            fastopen::Error::ConnectTimeout { addr: "127.0.0.1:1".parse().unwrap(), millis: 5 }.into();
        assert_eq!(Failure::of(&timeout), Failure::ConnectTimeout);
        assert_eq!(Failure::of(&io::Error::new(io::ErrorKind::InvalidData, "bad record")), Failure::Tls);
        assert_eq!(Failure::Cancelled.to_string(), "cancelled");
    }
}
