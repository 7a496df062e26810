//! `tfo probe`: does this server, and the path to it, support TFO; if not, where it breaks.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use fastopen::{diagnose_probe, ClientMethod, Connector, ProbeAttempt, ProbeVerdict};
use serde::Serialize;

use crate::addr;
use crate::client_opts::{parse_timeout, Method};
use crate::exchange::{exchange, ExchangeError, Limits, Until};
use crate::report::{self, OutcomeFields};

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
///   - kernel sent plain SYNs: this host disabled client TFO (blackhole detection);
///   - no reply at all: the server accepts but does not answer (wrong port or
///     protocol?), so TFO is not confirmed;
///   - a cookie cached before the probe refused: the kernel caches cookies per
///     server IP, not per port, so it may be another port's.
///
/// The client caches cookies per server address: if one is cached already, the
/// first connection carries data too.
///
/// With --fleet N, for an address with many servers behind it (a load
/// balancer's VIP): N rounds, each forgetting this host's cached cookie for
/// the address (`ip tcp_metrics delete`, needs root), asking for a fresh one,
/// then sending data in the SYN. It reports how many distinct cookies came
/// back and how much SYN data was accepted:
///   - one cookie, all accepted: healthy;
///   - several cookies: the backends disagree, so a client's cookie fails on
///     the next backend; with --key-file (and --candidates, the backends' own
///     addresses) each cookie is traced to the key and address it was made
///     for: different keys, or DNAT (each backend sees its own address);
///   - one cookie, some data refused: a rotation, or a backend without TFO.
///
/// Exit: 0 TFO works end to end (--fleet: healthy); 1 it does not (the report
/// says where); 2 usage.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Server address: PORT, IP:PORT or [IPv6]:PORT.
    #[arg(value_parser = addr::parse_peer)]
    addr: SocketAddr,
    /// Send an HTTP/1.1 GET (for web servers) instead of a short line.
    #[arg(long)]
    http: bool,
    /// How to ask for TFO: sendto or connect.
    #[arg(long, value_enum, default_value_t = Method::Sendto)]
    method: Method,
    /// Deadline for each of the three connections (handshake and first reply byte).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Duration,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Probe the fleet behind ADDR in N rounds (2 to 1000), each with a fresh cookie.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=1000))]
    fleet: Option<u32>,
    /// With --fleet: the servers' key file, to trace each cookie to what it was made for.
    #[arg(long, value_name = "FILE", requires = "fleet")]
    key_file: Option<std::path::PathBuf>,
    /// With --key-file: server addresses a backend may see besides ADDR's
    /// (the backends' own, behind DNAT), comma-separated.
    #[arg(long, value_name = "IP,...", value_delimiter = ',', requires = "key_file")]
    candidates: Vec<std::net::IpAddr>,
}

/// One connection of the probe, as `--json` reports it.
#[derive(Debug, Serialize)]
pub(super) struct AttemptReport {
    kind: &'static str,
    #[serde(flatten)]
    pub(super) outcome: OutcomeFields,
    /// Time to the first byte of the reply (None: no reply within the timeout).
    first_reply_ms: Option<f64>,
}

/// `tfo probe --json`. The field names are a contract (README).
#[derive(Debug, Serialize)]
struct ProbeReport {
    server: SocketAddr,
    tfo_works: bool,
    diagnosis: ProbeVerdict,
    explanation: &'static str,
    saved_ms: Option<f64>,
    attempts: Vec<AttemptReport>,
}

/// One connection: connect (request in the SYN if TFO), wait for the first reply byte.
pub(super) fn attempt(
    kind: &'static str,
    connector: &Connector,
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> anyhow::Result<(AttemptReport, ProbeAttempt)> {
    let limits = Limits::new(timeout, Until::FirstByte);
    let (outcome, first_reply) = match exchange(connector, addr, request, Until::FirstByte, &limits) {
        Ok(ex) => (ex.outcome, ex.first_byte),
        // Connected, but no reply in time: the outcome is still known.
        Err(ExchangeError::Timeout { outcome, .. }) => (*outcome, None),
        // A server that closes without a word answered nothing either.
        Err(e @ ExchangeError::Closed { .. }) => return Err(e.into()),
        Err(e) => return Err(e.into()),
    };
    let report = AttemptReport {
        kind,
        outcome: OutcomeFields::new(&outcome, request.len()),
        first_reply_ms: first_reply.map(report::ms),
    };
    Ok((report, ProbeAttempt::new(outcome, first_reply.is_some())))
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
    if let Some(rounds) = args.fleet {
        return super::probe_fleet::run(super::probe_fleet::FleetProbe {
            addr: args.addr,
            rounds,
            method,
            timeout,
            request,
            key_file: args.key_file,
            candidates: args.candidates,
            json: args.json,
        });
    }
    let tfo = Connector::new().method(method);
    let plain = Connector::new().tfo(false);
    let (first, first_seen) = attempt("tfo_first", &tfo, args.addr, &request, timeout)?;
    let (second, second_seen) = attempt("tfo_second", &tfo, args.addr, &request, timeout)?;
    let (plain, plain_seen) = attempt("plain", &plain, args.addr, &request, timeout)?;
    let diagnosis = diagnose_probe(&first_seen, &second_seen, &plain_seen);
    let saved_ms = match (plain.first_reply_ms, second.first_reply_ms) {
        (Some(p), Some(t)) if diagnosis == ProbeVerdict::Works => Some(((p - t) * 1000.0).round() / 1000.0),
        _ => None,
    };
    let report = ProbeReport {
        server: args.addr,
        tfo_works: diagnosis == ProbeVerdict::Works,
        diagnosis,
        explanation: diagnosis.explain(),
        saved_ms,
        attempts: vec![first, second, plain],
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report, method, [&first_seen, &second_seen, &plain_seen]);
    }
    Ok(if report.tfo_works { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_text(report: &ProbeReport, method: ClientMethod, seen: [&ProbeAttempt; 3]) {
    println!("probing {} with TFO ({method})", report.server);
    for (i, (a, s)) in report.attempts.iter().zip(seen).enumerate() {
        let reply = a.first_reply_ms.map_or("no reply".into(), |ms| format!("first reply byte after {ms:.1} ms"));
        println!("  {}. {:<11} {}; connect {:.1} ms, {reply}", i + 1, a.kind, s.outcome, a.outcome.connect_ms);
    }
    println!("verdict: {}", report.explanation);
    if let Some(s) = report.saved_ms.filter(|s| *s > 0.0) {
        println!("TFO saved {s:.1} ms to the first reply byte, compared with the plain connection");
    }
}
