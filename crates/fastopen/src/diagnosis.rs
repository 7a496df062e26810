//! Verdicts on a server and the path to it, from the outcomes of a few
//! connections: what `tfo probe` concludes. Pure functions over outcomes, so
//! every rule is tested on fixed inputs.

use std::fmt;
use std::time::Duration;

use crate::outcome::{ClientOutcome, FailReason};

/// One connection of a probe: its outcome, and whether the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeAttempt {
    /// What the kernel did with TFO on this connection.
    pub outcome: ClientOutcome,
    /// Whether any reply byte came back before the timeout.
    pub replied: bool,
}

impl ProbeAttempt {
    /// An attempt from its outcome and whether it got a reply.
    pub fn new(outcome: ClientOutcome, replied: bool) -> ProbeAttempt {
        ProbeAttempt { outcome, replied }
    }
}

/// Where TFO breaks, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ProbeVerdict {
    /// The request rode in the SYN, the server acknowledged it and answered.
    Works,
    /// The server accepted connections but answered none of them in time.
    NoReply,
    /// No cookie ever came back.
    NoCookie,
    /// The cookie-request SYN was lost and a plain retransmission got through.
    TfoSynDropped,
    /// The server gave a cookie in this probe but refused data with it.
    CookieRefused,
    /// A cookie cached before the probe was refused (it may be another port's).
    CachedCookieRefused,
    /// The SYN with data was retransmitted and its data not acknowledged.
    SynDataDropped,
    /// Client TFO is off on this host.
    ClientDisabled,
    /// This host's kernel sent plain SYNs (blackhole detection).
    KernelSkipped,
    /// The kernel does not say why (before 5.5), or TFO was not attempted.
    Unknown,
}

impl ProbeVerdict {
    /// The stable snake_case name (the same as its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeVerdict::Works => "works",
            ProbeVerdict::NoReply => "no_reply",
            ProbeVerdict::NoCookie => "no_cookie",
            ProbeVerdict::TfoSynDropped => "tfo_syn_dropped",
            ProbeVerdict::CookieRefused => "cookie_refused",
            ProbeVerdict::CachedCookieRefused => "cached_cookie_refused",
            ProbeVerdict::SynDataDropped => "syn_data_dropped",
            ProbeVerdict::ClientDisabled => "client_disabled",
            ProbeVerdict::KernelSkipped => "kernel_skipped",
            ProbeVerdict::Unknown => "unknown",
        }
    }

    /// One sentence for a person.
    pub fn explain(self) -> &'static str {
        match self {
            ProbeVerdict::Works => "TFO works: the request rode in the SYN, the server acknowledged it and answered",
            ProbeVerdict::NoReply => {
                "the server accepted the connections but sent no reply within the timeout, so TFO cannot be confirmed end to end: is this the right port and protocol (--http for web servers)?"
            }
            ProbeVerdict::NoCookie => {
                "no cookie came back: the server does not offer TFO (net.ipv4.tcp_fastopen lacks 0x2 there, or the listener did not set TCP_FASTOPEN), or something on the path strips the TFO option"
            }
            ProbeVerdict::TfoSynDropped => {
                "the first SYN (with a TFO option) went unanswered and a retransmission without it got through: something on the path drops SYNs that carry a TFO option"
            }
            ProbeVerdict::CookieRefused => {
                "the server gave a cookie but did not accept data with it: its key changed without a backup, or its TFO queue is full or 0"
            }
            ProbeVerdict::CachedCookieRefused => {
                "this host already had a cookie for the address (the kernel caches one per server IP, not per port, so it may come from a server on another port) and this server did not accept data with it: it may not do TFO, or its key changed; probe a port known to do TFO, or flush the cache (`ip tcp_metrics delete ADDR`, as root) and probe again"
            }
            ProbeVerdict::SynDataDropped => {
                "the SYN carrying data was retransmitted and its data not acknowledged: something on the path drops SYNs with data"
            }
            ProbeVerdict::ClientDisabled => {
                "client TFO is off on this host (net.ipv4.tcp_fastopen lacks 0x1): `sysctl -w net.ipv4.tcp_fastopen=3` turns it on"
            }
            ProbeVerdict::KernelSkipped => {
                "this host's kernel sent plain SYNs: client TFO is paused by blackhole detection (TCPFastOpenBlackhole in /proc/net/netstat)"
            }
            ProbeVerdict::Unknown => "this kernel does not report why TFO failed (before 5.5)",
        }
    }
}

impl fmt::Display for ProbeVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.explain())
    }
}

/// How long a cookie request taking longer than the first SYN timeout (1 s) took.
const FIRST_RTO: Duration = Duration::from_millis(900);

/// The verdict from two TFO attempts (`first` may ask for a cookie, `second`
/// should carry data) and a plain one for comparison.
pub fn diagnose_probe(first: &ProbeAttempt, second: &ProbeAttempt, plain: &ProbeAttempt) -> ProbeVerdict {
    if !(first.replied || second.replied || plain.replied) {
        return ProbeVerdict::NoReply;
    }
    let outcome = &second.outcome;
    if outcome.tfo_used() {
        return if second.replied { ProbeVerdict::Works } else { ProbeVerdict::NoReply };
    }
    // Data in the first SYN means a cookie was cached before the probe began.
    let cached_before = first.outcome.syn_bytes_sent > 0;
    let first_syn_lost =
        first.outcome.fail_reason == Some(FailReason::CookieUnavailable) && first.outcome.connect_time >= FIRST_RTO;
    let Some(reason) = outcome.fail_reason else { return ProbeVerdict::Unknown };
    match reason {
        FailReason::CookieUnavailable if first_syn_lost => ProbeVerdict::TfoSynDropped,
        FailReason::CookieUnavailable => ProbeVerdict::NoCookie,
        FailReason::DataNotAcked if cached_before => ProbeVerdict::CachedCookieRefused,
        FailReason::DataNotAcked => ProbeVerdict::CookieRefused,
        FailReason::SynRetransmitted => ProbeVerdict::SynDataDropped,
        FailReason::ClientDisabled => ProbeVerdict::ClientDisabled,
        FailReason::KernelSkipped => ProbeVerdict::KernelSkipped,
        FailReason::NoData | FailReason::NotRequested | FailReason::Unknown => ProbeVerdict::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::ClientMethod;

    fn attempt(reason: Option<FailReason>, syn_bytes_sent: usize, connect_ms: u64, replied: bool) -> ProbeAttempt {
        let acked = reason.is_none();
        let outcome = ClientOutcome {
            method: Some(ClientMethod::SendTo),
            bytes_in_syn: if acked { syn_bytes_sent } else { 0 },
            syn_bytes_sent,
            first_data_len: 10,
            fail_reason: reason,
            connect_time: Duration::from_millis(connect_ms),
            cookie_only_syn: false,
        };
        ProbeAttempt { outcome, replied }
    }

    #[test]
    fn each_verdict_from_fixed_attempts() {
        use FailReason::*;
        let cold = attempt(Some(CookieUnavailable), 0, 10, true);
        let plain = attempt(Some(NotRequested), 0, 10, true);
        let v = |first: &ProbeAttempt, second: ProbeAttempt| diagnose_probe(first, &second, &plain);
        assert_eq!(v(&cold, attempt(None, 10, 10, true)), ProbeVerdict::Works);
        assert_eq!(v(&cold, attempt(Some(CookieUnavailable), 0, 10, true)), ProbeVerdict::NoCookie);
        let slow = attempt(Some(CookieUnavailable), 0, 1010, true);
        assert_eq!(v(&slow, attempt(Some(CookieUnavailable), 0, 1010, true)), ProbeVerdict::TfoSynDropped);
        assert_eq!(v(&cold, attempt(Some(DataNotAcked), 10, 10, true)), ProbeVerdict::CookieRefused);
        let cached = attempt(Some(DataNotAcked), 10, 10, true);
        assert_eq!(v(&cached, attempt(Some(DataNotAcked), 10, 10, true)), ProbeVerdict::CachedCookieRefused);
        assert_eq!(v(&cold, attempt(Some(SynRetransmitted), 10, 1010, true)), ProbeVerdict::SynDataDropped);
        assert_eq!(v(&cold, attempt(Some(ClientDisabled), 0, 10, true)), ProbeVerdict::ClientDisabled);
        assert_eq!(v(&cold, attempt(Some(KernelSkipped), 0, 10, true)), ProbeVerdict::KernelSkipped);
        assert_eq!(v(&cold, attempt(Some(Unknown), 10, 10, true)), ProbeVerdict::Unknown);
    }

    #[test]
    fn a_silent_server_is_not_working_tfo() {
        let silent = |r| attempt(r, 10, 10, false);
        // The kernel acked the SYN data, but nobody answered.
        let used = silent(None);
        assert_eq!(
            diagnose_probe(
                &silent(Some(FailReason::CookieUnavailable)),
                &used,
                &silent(Some(FailReason::NotRequested))
            ),
            ProbeVerdict::NoReply
        );
        // Only the TFO connection went unanswered while the plain one was: still no confirmation.
        let plain_ok = attempt(Some(FailReason::NotRequested), 0, 10, true);
        assert_eq!(
            diagnose_probe(&attempt(Some(FailReason::CookieUnavailable), 0, 10, true), &used, &plain_ok),
            ProbeVerdict::NoReply
        );
    }

    #[test]
    fn names_are_distinct_and_snake_case() {
        let all = [
            ProbeVerdict::Works,
            ProbeVerdict::NoReply,
            ProbeVerdict::NoCookie,
            ProbeVerdict::TfoSynDropped,
            ProbeVerdict::CookieRefused,
            ProbeVerdict::CachedCookieRefused,
            ProbeVerdict::SynDataDropped,
            ProbeVerdict::ClientDisabled,
            ProbeVerdict::KernelSkipped,
            ProbeVerdict::Unknown,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|v| v.as_str()).collect();
        assert_eq!(names.len(), all.len());
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }
}
