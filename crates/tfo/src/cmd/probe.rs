//! `tfo probe`: does this server, and the path to it, support TFO; if not, where it breaks.

use std::io::Read;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fastopen::{ClientMethod, ClientOutcome, Connector, FailReason};
use serde::Serialize;

use crate::addr;
use crate::client_opts::{parse_seconds, Method};
use crate::report;

/// Does this server (and the path to it) support TFO? If not, where does it break?
///
/// Makes two TFO connections to ADDR, each sending a small request, then one
/// plain connection for comparison, and reads the outcomes: did the first get
/// a cookie, did the second's data ride in the SYN and get acknowledged, was a
/// SYN retransmitted. From those it names the likely break:
///   - no cookie ever: the server does not offer TFO, or the path strips the option;
///   - cookie given, data not acknowledged: the server refuses the cookie
///     (key changed, TFO queue full or 0);
///   - SYN with data retransmitted: something on the path drops SYNs with data;
///   - first SYN unanswered for a second: something drops SYNs with a TFO option;
///   - kernel sent plain SYNs: this host disabled client TFO (blackhole detection).
///
/// The client caches cookies per server address: if one is cached already, the
/// first connection carries data too.
///
/// Exit: 0 TFO works end to end; 1 it does not (the report says where); 2 usage.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Server address: PORT, IP:PORT or [IPv6]:PORT.
    #[arg(value_parser = addr::parse)]
    addr: SocketAddr,
    /// Send an HTTP/1.1 GET (for web servers) instead of a short line.
    #[arg(long)]
    http: bool,
    /// How to ask for TFO: sendto or connect.
    #[arg(long, value_enum, default_value_t = Method::Sendto)]
    method: Method,
    /// Seconds to wait for each handshake and reply.
    #[arg(long, default_value = "5", value_name = "SECS", value_parser = parse_seconds)]
    timeout: Duration,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// One connection of the probe.
#[derive(Debug, Serialize)]
struct Attempt {
    kind: &'static str,
    #[serde(flatten)]
    outcome: serde_json::Value,
    /// Time to the first byte of the reply (None: no reply within the timeout).
    first_reply_ms: Option<f64>,
    #[serde(skip)]
    raw: ClientOutcome,
}

/// The diagnosis.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Diagnosis {
    Works,
    NoCookie,
    TfoSynDropped,
    CookieRefused,
    SynDataDropped,
    ClientDisabled,
    KernelSkipped,
    Unknown,
}

impl Diagnosis {
    fn explain(self) -> &'static str {
        match self {
            Diagnosis::Works => "TFO works: the request rode in the SYN and the server acknowledged it",
            Diagnosis::NoCookie => {
                "no cookie came back: the server does not offer TFO (net.ipv4.tcp_fastopen lacks 0x2 there, or the listener did not set TCP_FASTOPEN), or something on the path strips the TFO option"
            }
            Diagnosis::TfoSynDropped => {
                "the first SYN (with a TFO option) went unanswered and a retransmission without it got through: something on the path drops SYNs that carry a TFO option"
            }
            Diagnosis::CookieRefused => {
                "the server gave a cookie but did not accept data with it: its key changed without a backup, or its TFO queue is full or 0"
            }
            Diagnosis::SynDataDropped => {
                "the SYN carrying data was retransmitted and its data not acknowledged: something on the path drops SYNs with data"
            }
            Diagnosis::ClientDisabled => {
                "client TFO is off on this host (net.ipv4.tcp_fastopen lacks 0x1): run `tfo doctor --fix`"
            }
            Diagnosis::KernelSkipped => {
                "this host's kernel sent plain SYNs: client TFO is paused by blackhole detection (see `tfo doctor`)"
            }
            Diagnosis::Unknown => "this kernel does not report why TFO failed (before 5.5)",
        }
    }
}

/// What the diagnosis reads of an outcome.
#[derive(Debug, Clone, Copy)]
struct Seen {
    used: bool,
    reason: Option<FailReason>,
    connect: Duration,
}

impl From<&ClientOutcome> for Seen {
    fn from(o: &ClientOutcome) -> Seen {
        Seen { used: o.tfo_used(), reason: o.fail_reason, connect: o.connect_time }
    }
}

fn diagnose(first: Seen, second: Seen) -> Diagnosis {
    if second.used {
        return Diagnosis::Works;
    }
    // A cookie request SYN that needed a retransmission (the first RTO is 1 s).
    let first_syn_lost =
        first.reason == Some(FailReason::CookieUnavailable) && first.connect >= Duration::from_millis(900);
    match second.reason {
        Some(FailReason::CookieUnavailable) if first_syn_lost => Diagnosis::TfoSynDropped,
        Some(FailReason::CookieUnavailable) => Diagnosis::NoCookie,
        Some(FailReason::DataNotAcked) => Diagnosis::CookieRefused,
        Some(FailReason::SynRetransmitted) => Diagnosis::SynDataDropped,
        Some(FailReason::ClientDisabled) => Diagnosis::ClientDisabled,
        Some(FailReason::KernelSkipped) => Diagnosis::KernelSkipped,
        _ => Diagnosis::Unknown,
    }
}

fn attempt(
    kind: &'static str,
    connector: &Connector,
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> anyhow::Result<Attempt> {
    let start = Instant::now();
    let (mut stream, outcome) = connector.connect(addr, request)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut buf = [0u8; 4096];
    let first_reply_ms = match stream.read(&mut buf) {
        Ok(n) if n > 0 => Some(report::ms(start.elapsed())),
        _ => None,
    };
    Ok(Attempt { kind, outcome: report::outcome_json(&outcome), first_reply_ms, raw: outcome })
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let timeout = args.timeout;
    let request = if args.http {
        format!("GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: tfo-probe\r\nConnection: close\r\n\r\n", args.addr)
            .into_bytes()
    } else {
        b"tfo probe\n".to_vec()
    };
    let method = ClientMethod::from(args.method);
    let tfo = Connector::new().method(method).connect_timeout(Some(timeout));
    let plain = Connector::new().tfo(false).connect_timeout(Some(timeout));
    let attempts = [
        attempt("tfo_first", &tfo, args.addr, &request, timeout)?,
        attempt("tfo_second", &tfo, args.addr, &request, timeout)?,
        attempt("plain", &plain, args.addr, &request, timeout)?,
    ];
    let diagnosis = diagnose((&attempts[0].raw).into(), (&attempts[1].raw).into());
    let saved_ms = match (attempts[2].first_reply_ms, attempts[1].first_reply_ms) {
        (Some(p), Some(t)) if diagnosis == Diagnosis::Works => Some(((p - t) * 1000.0).round() / 1000.0),
        _ => None,
    };
    if args.json {
        let v = serde_json::json!({
            "server": args.addr, "tfo_works": diagnosis == Diagnosis::Works, "diagnosis": diagnosis,
            "explanation": diagnosis.explain(), "saved_ms": saved_ms, "attempts": attempts,
        });
        println!("{v}");
    } else {
        println!("probing {} with TFO ({})", args.addr, method);
        for (i, a) in attempts.iter().enumerate() {
            let reply = a.first_reply_ms.map_or("no reply".into(), |ms| format!("first reply byte after {ms:.1} ms"));
            println!(
                "  {}. {:<11} {}; connect {:.1} ms, {reply}",
                i + 1,
                a.kind,
                a.raw,
                report::ms(a.raw.connect_time)
            );
        }
        println!("verdict: {}", diagnosis.explain());
        if let Some(s) = saved_ms {
            println!("TFO saved {s:.1} ms to the first reply byte, compared with the plain connection");
        }
    }
    Ok(if diagnosis == Diagnosis::Works { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(reason: Option<FailReason>, bytes: usize, connect_ms: u64) -> Seen {
        Seen { used: reason.is_none() && bytes > 0, reason, connect: Duration::from_millis(connect_ms) }
    }

    #[test]
    fn diagnoses() {
        use FailReason::*;
        let cold = outcome(Some(CookieUnavailable), 0, 10);
        assert_eq!(diagnose(cold, outcome(None, 10, 10)), Diagnosis::Works);
        assert_eq!(diagnose(cold, outcome(Some(CookieUnavailable), 0, 10)), Diagnosis::NoCookie);
        assert_eq!(
            diagnose(outcome(Some(CookieUnavailable), 0, 1010), outcome(Some(CookieUnavailable), 0, 1010)),
            Diagnosis::TfoSynDropped
        );
        assert_eq!(diagnose(cold, outcome(Some(DataNotAcked), 0, 10)), Diagnosis::CookieRefused);
        assert_eq!(diagnose(cold, outcome(Some(SynRetransmitted), 0, 1010)), Diagnosis::SynDataDropped);
        assert_eq!(diagnose(cold, outcome(Some(ClientDisabled), 0, 10)), Diagnosis::ClientDisabled);
    }
}
