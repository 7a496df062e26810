//! Per-connection answers to "was TFO used, and if not, why?".
//!
//! The answers come from `tcp_info` (see [`crate::TcpInfo`]) read after the
//! handshake, combined with what the client asked the kernel to do. The
//! derivations are pure functions so they can be tested on fixed values.

use std::fmt;
use std::time::Duration;

use crate::kernel::KernelFeatures;
use crate::mode::FastOpenMode;
use crate::tcp_info::{HandshakeState, TcpInfo};

/// How a client asks the kernel for TFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
pub enum ClientMethod {
    /// `sendto(MSG_FASTOPEN)` with the first data: connect and send in one call (Linux 3.7).
    #[default]
    #[cfg_attr(feature = "serde", serde(rename = "sendto"))]
    SendTo,
    /// `TCP_FASTOPEN_CONNECT` then `connect()` and `write()`, as curl does (Linux 4.11).
    Connect,
}

impl fmt::Display for ClientMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientMethod::SendTo => "sendto",
            ClientMethod::Connect => "connect",
        })
    }
}

/// Why a client connection did not carry acknowledged data in its SYN.
///
/// The snake_case names (see [`FailReason::as_str`]) are stable: scripts may match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum FailReason {
    /// No cookie was cached for this server, so the SYN asked for one
    /// (`tcpi_fastopen_client_fail` = 1). The next connection can carry data.
    CookieUnavailable,
    /// The SYN carried data but the SYN-ACK did not acknowledge it; the kernel
    /// sent it again after the handshake (`tcpi_fastopen_client_fail` = 2).
    DataNotAcked,
    /// Like `DataNotAcked`, and the SYN itself had to be retransmitted
    /// (`tcpi_fastopen_client_fail` = 3): something dropped SYNs with data?
    SynRetransmitted,
    /// `net.ipv4.tcp_fastopen` lacks the client bit (0x1) in this network namespace.
    ClientDisabled,
    /// There was no data to put in the SYN, so a plain connect was made.
    NoData,
    /// The caller turned TFO off for this connection.
    NotRequested,
    /// The kernel sent a plain SYN without reporting a failure: active TFO is
    /// disabled for the namespace (blackhole detection), or the route forbids it.
    KernelSkipped,
    /// This kernel (before 5.5) does not report why TFO failed.
    Unknown,
}

impl FailReason {
    /// Every reason, for tables and tests.
    pub const ALL: [FailReason; 8] = [
        FailReason::CookieUnavailable,
        FailReason::DataNotAcked,
        FailReason::SynRetransmitted,
        FailReason::ClientDisabled,
        FailReason::NoData,
        FailReason::NotRequested,
        FailReason::KernelSkipped,
        FailReason::Unknown,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::CookieUnavailable => "cookie_unavailable",
            FailReason::DataNotAcked => "data_not_acked",
            FailReason::SynRetransmitted => "syn_retransmitted",
            FailReason::ClientDisabled => "client_disabled",
            FailReason::NoData => "no_data",
            FailReason::NotRequested => "not_requested",
            FailReason::KernelSkipped => "kernel_skipped",
            FailReason::Unknown => "unknown",
        }
    }

    /// One sentence for a person: what happened and what to do.
    pub fn explain(self) -> &'static str {
        match self {
            FailReason::CookieUnavailable => {
                "no cookie cached for this server yet, so the SYN asked for one; the next connection can carry data in its SYN"
            }
            FailReason::DataNotAcked => {
                "the SYN carried data but the server did not acknowledge it (TFO off on that server or port, a stale cookie, or the server's TFO queue full: TCPFastOpenListenOverflow there); it was sent again after the handshake"
            }
            FailReason::SynRetransmitted => {
                "the SYN with data was retransmitted and its data not acknowledged: something on the path may drop SYNs that carry data"
            }
            FailReason::ClientDisabled => {
                "client TFO is off in this network namespace (net.ipv4.tcp_fastopen lacks bit 0x1): `sysctl -w net.ipv4.tcp_fastopen=3` turns it on"
            }
            FailReason::NoData => "there was no data to send in the SYN, so a plain connect was made",
            FailReason::NotRequested => "TFO was not requested for this connection",
            FailReason::KernelSkipped => {
                "the kernel sent a plain SYN: active TFO is probably disabled by blackhole detection (the TCPFastOpenBlackhole counter in /proc/net/netstat); writing net.ipv4.tcp_fastopen re-enables it"
            }
            FailReason::Unknown => "this kernel (before 5.5) does not report why TFO was not used",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_str(), self.explain())
    }
}

/// What the client asked of the kernel before the handshake finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// TFO was tried with this method; the kernel put `syn_bytes` in the SYN.
    Tried { method: ClientMethod, syn_bytes: usize },
    /// TFO was not tried, for this reason.
    Skipped(FailReason),
    /// A read-first connect: the SYN carried the cached cookie and no data
    /// (`TCP_FASTOPEN_CONNECT`, then an empty send).
    CookieOnly,
}

/// The outcome of one client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ClientOutcome {
    /// How TFO was requested; `None` if it was not.
    pub method: Option<ClientMethod>,
    /// Bytes of the first data that the server acknowledged in its SYN-ACK.
    pub bytes_in_syn: usize,
    /// Bytes the kernel put in the SYN (acknowledged or not).
    pub syn_bytes_sent: usize,
    /// Length of the first data given to `connect`.
    pub first_data_len: usize,
    /// Why TFO was not used; `None` when it was.
    pub fail_reason: Option<FailReason>,
    /// Time from the start of the connect until the handshake completed.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_ms", rename = "connect_ms"))]
    pub connect_time: Duration,
    /// The SYN carried the cookie and no data ([`Connector::connect_read_first`](crate::Connector::connect_read_first)):
    /// a server with TFO creates the connection on it, so one that speaks
    /// first (SMTP, SSH, FTP) sends its greeting right behind its SYN-ACK,
    /// one round trip sooner. No request rode in it, so a replayed SYN runs
    /// nothing twice. `bytes_in_syn` is 0 and [`tfo_used`](ClientOutcome::tfo_used) false.
    pub cookie_only_syn: bool,
}

#[cfg(feature = "serde")]
fn serialize_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl ClientOutcome {
    /// Whether the first data rode in the SYN and was acknowledged.
    pub fn tfo_used(&self) -> bool {
        self.fail_reason.is_none() && self.bytes_in_syn > 0
    }

    /// The outcome of a connection on which TFO was not tried, for `reason`.
    pub(crate) fn skipped(reason: FailReason, first_data_len: usize, connect_time: Duration) -> ClientOutcome {
        ClientOutcome {
            method: None,
            bytes_in_syn: 0,
            syn_bytes_sent: 0,
            first_data_len,
            fail_reason: Some(reason),
            connect_time,
            cookie_only_syn: false,
        }
    }

    /// Derives the outcome from what was attempted and the `tcp_info` read after
    /// the handshake.
    pub(crate) fn derive(
        attempt: Attempt,
        info: &TcpInfo,
        features: &KernelFeatures,
        first_data_len: usize,
        connect_time: Duration,
    ) -> ClientOutcome {
        let (method, syn_bytes) = match attempt {
            Attempt::Skipped(reason) => return ClientOutcome::skipped(reason, first_data_len, connect_time),
            Attempt::CookieOnly => {
                return ClientOutcome {
                    method: Some(ClientMethod::Connect),
                    bytes_in_syn: 0,
                    syn_bytes_sent: 0,
                    first_data_len,
                    fail_reason: None,
                    connect_time,
                    cookie_only_syn: true,
                }
            }
            Attempt::Tried { method, syn_bytes } => (method, syn_bytes),
        };
        let acked = info.syn_data() && syn_bytes > 0;
        let fail_reason = if acked {
            None
        } else if !features.client_fail_reason {
            Some(FailReason::Unknown)
        } else {
            Some(match info.fastopen_client_fail {
                1 => FailReason::CookieUnavailable,
                2 => FailReason::DataNotAcked,
                3 => FailReason::SynRetransmitted,
                _ => FailReason::KernelSkipped,
            })
        };
        ClientOutcome {
            method: Some(method),
            bytes_in_syn: if acked { syn_bytes } else { 0 },
            syn_bytes_sent: syn_bytes,
            first_data_len,
            fail_reason,
            connect_time,
            cookie_only_syn: false,
        }
    }
}

impl fmt::Display for ClientOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cookie_only_syn {
            return f.write_str(
                "cookie sent without data (read first): a server with TFO answers in SYN_RECV, a round trip sooner",
            );
        }
        match (self.fail_reason, self.method) {
            (None, Some(m)) => write!(
                f,
                "TFO used ({m}): {} of {} bytes rode in the SYN and were acknowledged",
                self.bytes_in_syn, self.first_data_len
            ),
            (Some(r), _) => write!(f, "TFO not used: {r}"),
            (None, None) => f.write_str("TFO not used"),
        }
    }
}

/// `tcpi_state` of a socket that has received the peer's FIN.
const TCP_CLOSE_WAIT: u8 = 8;

/// The outcome of one accepted server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct AcceptOutcome {
    /// The SYN carried data that the server accepted (`TCPI_OPT_SYN_DATA`).
    pub data_in_syn: bool,
    /// The connection was created by TFO (`TCPI_OPT_TFO_CHILD`); `None` on
    /// kernels before 6.16, which do not report it.
    pub tfo_child: Option<bool>,
    /// How many bytes came in the SYN, when `tcp_info` shows it unambiguously:
    /// all data received so far came in one segment (`tcpi_data_segs_in` = 1),
    /// so `tcpi_bytes_received` is the SYN's payload, less one if a FIN has
    /// arrived since (state CLOSE_WAIT: a FIN takes one sequence number).
    /// `None` when more data already arrived, or on kernels without the fields.
    pub bytes_in_syn: Option<u64>,
    /// Where the handshake stood at accept. A regular handshake is always
    /// `Confirmed` (the kernel makes the connection when the final ACK
    /// arrives); a TFO child is `Pending` until that ACK. A server that needs
    /// to know (the early-data wait, a log) reads no more when it is `Confirmed`.
    pub handshake_at_accept: HandshakeState,
}

impl AcceptOutcome {
    /// The connection was created by TFO on a SYN with a valid cookie and no
    /// data (a read-first client): accepted in SYN_RECV, so a greeting sent
    /// now reaches the client one round trip sooner. `false` on kernels that
    /// do not report TFO children (before 6.16).
    pub fn cookie_only_syn(&self) -> bool {
        !self.data_in_syn && self.tfo_child == Some(true)
    }

    /// Derives the outcome from two `tcp_info` reads made one after the other
    /// at accept time (or the same read twice, when no data came in the SYN or
    /// more than one segment came: then the second read tells nothing more).
    ///
    /// Why two: the kernel loads `tcpi_state` before it locks the socket to read
    /// the counters, so one read can show ESTABLISHED with a FIN already counted
    /// in `tcpi_bytes_received`. The state of the `later` read is loaded after
    /// the counters of the `first` were read, so it tells whether a FIN can be
    /// inside them, and comparing both byte counts tells whether it is.
    /// (This assumes the FIN came in its own segment, as Linux clients send it
    /// after a TFO connect; a FIN inside the SYN itself would be reported one short.)
    pub fn derive(first: &TcpInfo, later: &TcpInfo, features: &KernelFeatures) -> AcceptOutcome {
        let data_in_syn = first.syn_data();
        let bytes_in_syn = if !data_in_syn {
            Some(0)
        } else {
            match (first.data_segs_in, later.data_segs_in, first.bytes_received, later.bytes_received) {
                // A FIN arrived after the first count: that count is the SYN's payload.
                (Some(1), Some(1), Some(b1), Some(b2)) if b2 == b1 + 1 => Some(b1),
                // Nothing arrived between the reads, and a FIN arrived before: take it out.
                (Some(1), Some(1), Some(b1), Some(b2)) if b2 == b1 && later.state == TCP_CLOSE_WAIT => {
                    b1.checked_sub(1)
                }
                (Some(1), Some(1), Some(b1), Some(b2)) if b2 == b1 => Some(b1),
                _ => None,
            }
        };
        let tfo_child = features.tfo_child_flag.then(|| first.tfo_child());
        AcceptOutcome {
            data_in_syn,
            tfo_child,
            bytes_in_syn,
            handshake_at_accept: if !data_in_syn && tfo_child != Some(true) {
                HandshakeState::Confirmed // no TFO child: made by the final ACK
            } else {
                HandshakeState::from_tcp_info(later)
            },
        }
    }
}

impl fmt::Display for AcceptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.data_in_syn, self.bytes_in_syn) {
            (true, Some(n)) => write!(f, "data in SYN: {n} bytes"),
            (true, None) => f.write_str("data in SYN"),
            (false, _) if self.tfo_child == Some(true) => {
                f.write_str("cookie SYN without data (read first): made in SYN_RECV")
            }
            (false, _) => f.write_str("regular handshake"),
        }
    }
}

/// Whether a listener does TFO, and if not, why: a typed state to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ServerTfo {
    /// Data in the SYN is accepted.
    On,
    /// The namespace lacks the server bit (0x2) of `net.ipv4.tcp_fastopen`:
    /// the listener works as plain TCP, gives no cookies, takes no SYN data.
    OffInNamespace {
        /// The namespace's `net.ipv4.tcp_fastopen`.
        mode: u32,
    },
    /// The listener's TFO queue is 0: TFO is off for it.
    QueueZero,
}

impl ServerTfo {
    /// The state a listener with this queue gets in a namespace with this mode.
    pub fn of(mode: FastOpenMode, queue_len: u32) -> ServerTfo {
        if !mode.server() {
            ServerTfo::OffInNamespace { mode: mode.0 }
        } else if queue_len == 0 {
            ServerTfo::QueueZero
        } else {
            ServerTfo::On
        }
    }
}

impl std::fmt::Display for ServerTfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerTfo::On => f.write_str("server TFO is on"),
            ServerTfo::OffInNamespace { mode } => write!(
                f,
                "server TFO is off in this network namespace (net.ipv4.tcp_fastopen={mode} lacks bit 0x2; set it to {})",
                mode | 0x3
            ),
            ServerTfo::QueueZero => f.write_str("the listener's TFO queue is 0, which turns TFO off for it"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(options: u8, client_fail: u8) -> TcpInfo {
        let mut b = [0u8; 280];
        b[0] = 1;
        b[5] = options;
        b[7] = client_fail << 1;
        b[128..136].copy_from_slice(&9u64.to_ne_bytes());
        b[152..156].copy_from_slice(&1u32.to_ne_bytes());
        TcpInfo::parse(&b).unwrap()
    }

    const MS: Duration = Duration::from_millis(1);
    fn new_kernel() -> KernelFeatures {
        KernelFeatures::from_release("6.18.0")
    }
    fn tried(syn_bytes: usize) -> Attempt {
        Attempt::Tried { method: ClientMethod::SendTo, syn_bytes }
    }

    #[test]
    fn data_not_acked_names_every_cause() {
        let text = FailReason::DataNotAcked.explain();
        for cause in ["TFO off", "stale cookie", "queue full"] {
            assert!(text.contains(cause), "{cause}: {text}");
        }
    }

    #[test]
    fn data_acked_is_success() {
        let o = ClientOutcome::derive(tried(9), &info(0x27, 0), &new_kernel(), 9, MS);
        assert!(o.tfo_used());
        assert_eq!((o.bytes_in_syn, o.fail_reason), (9, None));
        assert!(o.to_string().starts_with("TFO used (sendto): 9 of 9 bytes"));
    }

    #[test]
    fn each_client_fail_value_maps_to_a_reason() {
        for (fail, want) in [
            (1, FailReason::CookieUnavailable),
            (2, FailReason::DataNotAcked),
            (3, FailReason::SynRetransmitted),
            (0, FailReason::KernelSkipped),
        ] {
            let o = ClientOutcome::derive(tried(0), &info(0x07, fail), &new_kernel(), 9, MS);
            assert_eq!(o.fail_reason, Some(want));
            assert!(!o.tfo_used());
            assert_eq!(o.bytes_in_syn, 0);
        }
    }

    #[test]
    fn old_kernel_says_unknown_instead_of_guessing() {
        let o = ClientOutcome::derive(tried(0), &info(0x07, 0), &KernelFeatures::from_release("5.4.0"), 9, MS);
        assert_eq!(o.fail_reason, Some(FailReason::Unknown));
    }

    #[test]
    fn skipped_keeps_its_reason() {
        let o = ClientOutcome::derive(Attempt::Skipped(FailReason::NoData), &info(0x27, 0), &new_kernel(), 0, MS);
        assert_eq!((o.method, o.fail_reason), (None, Some(FailReason::NoData)));
        assert!(!o.tfo_used());
    }

    #[test]
    fn reason_names_are_stable() {
        assert_eq!(FailReason::CookieUnavailable.as_str(), "cookie_unavailable");
        assert_eq!(FailReason::ClientDisabled.as_str(), "client_disabled");
        assert!(FailReason::ClientDisabled.explain().contains("sysctl -w net.ipv4.tcp_fastopen=3"));
        for r in FailReason::ALL {
            assert!(!r.explain().contains("tfo "), "library text must not send users to the CLI: {r:?}");
        }
    }

    #[test]
    fn server_outcomes() {
        let k = new_kernel();
        let i = info(0xa7, 0);
        let child = AcceptOutcome::derive(&i, &i, &k);
        assert_eq!((child.data_in_syn, child.tfo_child, child.bytes_in_syn), (true, Some(true), Some(9)));
        assert_eq!(child.to_string(), "data in SYN: 9 bytes");
        let p = info(0x07, 0);
        let plain = AcceptOutcome::derive(&p, &p, &k);
        assert_eq!(plain.to_string(), "regular handshake");
        assert_eq!(plain.bytes_in_syn, Some(0));
        assert_eq!(plain.handshake_at_accept, HandshakeState::Confirmed, "a regular handshake is complete");
        let mut pending = i;
        pending.state = 3; // SYN_RECV: the final ACK has not come
        assert_eq!(AcceptOutcome::derive(&pending, &pending, &k).handshake_at_accept, HandshakeState::Pending);
        let o = info(0x27, 0);
        assert_eq!(AcceptOutcome::derive(&o, &o, &KernelFeatures::from_release("6.1.0")).tfo_child, None);
    }

    #[test]
    fn a_fin_counted_in_bytes_received_is_taken_out() {
        let k = new_kernel();
        let mut with_fin = info(0xa7, 0);
        with_fin.bytes_received = Some(10);
        let mut closed = with_fin;
        closed.state = TCP_CLOSE_WAIT;
        // First read saw ESTABLISHED but already counted the FIN; the later one shows it.
        assert_eq!(AcceptOutcome::derive(&with_fin, &closed, &k).bytes_in_syn, Some(9));
        // The FIN came between the reads: the first count is the SYN's payload.
        let before_fin = info(0xa7, 0);
        assert_eq!(AcceptOutcome::derive(&before_fin, &closed, &k).bytes_in_syn, Some(9));
        // The FIN came between the reads and the later state does not show it yet.
        assert_eq!(AcceptOutcome::derive(&before_fin, &with_fin, &k).bytes_in_syn, Some(9));
        // The count moved by more than a FIN: unknown, not guessed.
        let mut jumped = info(0xa7, 0);
        jumped.bytes_received = Some(500);
        assert_eq!(AcceptOutcome::derive(&before_fin, &jumped, &k).bytes_in_syn, None);
        // More data arrived after the SYN: the split is unknown.
        let mut more = info(0xa7, 0);
        more.data_segs_in = Some(2);
        assert_eq!(AcceptOutcome::derive(&more, &more, &k).bytes_in_syn, None);
    }

    #[test]
    fn server_state_from_mode_and_queue() {
        assert_eq!(ServerTfo::of(FastOpenMode(3), 256), ServerTfo::On);
        assert_eq!(ServerTfo::of(FastOpenMode(1), 256), ServerTfo::OffInNamespace { mode: 1 });
        assert_eq!(ServerTfo::of(FastOpenMode(3), 0), ServerTfo::QueueZero);
        assert!(ServerTfo::OffInNamespace { mode: 1 }.to_string().contains("set it to 3"));
    }
}
