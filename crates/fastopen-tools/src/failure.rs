//! Why a request got no correct reply: the one failure vocabulary of the
//! engines. The load engine counts requests by it (the names, `as_str`, are
//! the keys of `tfo load --json`'s `errors_by_kind`); an exchange's and a
//! greeting's errors name theirs with it (`tfo send`'s `error_kind`, `tfo
//! probe`'s `diagnosis`, `tfo bench`'s failures). Some kinds only a blocking
//! exchange can tell apart (`closed_early`, `reply_too_large`); load counts
//! those as `wrong_reply`.

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
    /// The name did not resolve (probe).
    Unresolved,
    /// Connecting failed otherwise (unreachable, strict mode, ...).
    ConnectFailed,
    /// The server closed before the reply was whole (exchange).
    ClosedEarly,
    /// The reply outgrew its bound (exchange).
    ReplyTooLarge,
    /// A read-first connection got no greeting: the server does not speak first.
    NoGreeting,
    /// Sending or receiving failed in another way (exchange).
    Io,
}

impl Failure {
    /// Every kind, in declaration order.
    pub const ALL: [Failure; 16] = {
        use Failure::*;
        [
            Refused,
            ConnectTimeout,
            Reset,
            Timeout,
            WrongReply,
            HttpStatus,
            Tls,
            Resources,
            Cancelled,
            Other,
            Unresolved,
            ConnectFailed,
            ClosedEarly,
            ReplyTooLarge,
            NoGreeting,
            Io,
        ]
    };

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
            Failure::Unresolved => "unresolved",
            Failure::ConnectFailed => "connect_failed",
            Failure::ClosedEarly => "closed_early",
            Failure::ReplyTooLarge => "reply_too_large",
            Failure::NoGreeting => "no_greeting",
            Failure::Io => "io_error",
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

    /// The failure of a connect the library refused or could not make:
    /// `connect_timeout`, `refused`, `resources` or `connect_failed`.
    pub fn of_connect(e: &fastopen::Error) -> Failure {
        match e {
            fastopen::Error::ConnectTimeout { .. } => Failure::ConnectTimeout,
            fastopen::Error::Connect { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused => {
                Failure::Refused
            }
            fastopen::Error::Connect { source, .. } if fastopen::out_of_resources(source) => Failure::Resources,
            _ => Failure::ConnectFailed,
        }
    }
}

/// An error and its causes on one line: "step: cause: cause" (as `tfo:
/// error:` prints them).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl serde::Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
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

    #[test]
    fn library_connect_errors_name_their_failure() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let connect = |code| fastopen::Error::Connect { addr, source: io::Error::from_raw_os_error(code) };
        assert_eq!(Failure::of_connect(&connect(111)), Failure::Refused);
        assert_eq!(Failure::of_connect(&connect(24)), Failure::Resources);
        assert_eq!(Failure::of_connect(&connect(113)), Failure::ConnectFailed, "EHOSTUNREACH");
        assert_eq!(Failure::of_connect(&fastopen::Error::ConnectTimeout { addr, millis: 5 }), Failure::ConnectTimeout);
    }

    /// The names reports promise: distinct, and serde's the same as `as_str`'s.
    #[test]
    fn every_name_is_distinct_and_serializes_as_itself() {
        let names: std::collections::HashSet<&str> = Failure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(names.len(), Failure::ALL.len());
        for f in Failure::ALL {
            assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
        }
    }
}
