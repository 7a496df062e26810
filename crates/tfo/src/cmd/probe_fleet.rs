//! `tfo probe --fleet N`: many rounds against one address (a VIP), each with
//! a fresh cookie, to see whether the backends behind it agree on cookies.
//! The verdict is `fastopen::diagnose_fleet`'s; this module does the rounds.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fastopen::keyfile::KeyFile;
use fastopen::{diagnose_fleet, ClientMethod, Connector, CookieOrigins, FleetDiagnosis, FleetRound, FleetVerdict};
use serde::Serialize;

use crate::report::OutcomeFields;

/// The pause between rounds: polite to the servers, and lets a balancer's
/// state settle.
const BETWEEN_ROUNDS: Duration = Duration::from_millis(20);

/// What `--fleet` needs from `tfo probe`'s arguments.
pub(super) struct FleetProbe {
    pub(super) addr: SocketAddr,
    pub(super) rounds: u32,
    pub(super) method: ClientMethod,
    pub(super) timeout: Duration,
    pub(super) request: Vec<u8>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) candidates: Vec<IpAddr>,
    pub(super) json: bool,
}

/// One round, as `--json` reports it.
#[derive(Debug, Serialize)]
struct RoundReport {
    cookie: Option<String>,
    cookie_after: Option<String>,
    #[serde(flatten)]
    syn_data: OutcomeFields,
}

/// A distinct cookie, as `--json` reports it.
#[derive(Debug, Serialize)]
struct CookieReport {
    cookie: String,
    rounds: usize,
    made_for: Option<IpAddr>,
    /// `primary` or `backup`: which key of --key-file made it.
    made_with: Option<&'static str>,
}

/// `tfo probe --fleet --json`.
#[derive(Debug, Serialize)]
struct FleetReport {
    server: SocketAddr,
    client: IpAddr,
    rounds: usize,
    distinct_cookies: usize,
    accepted: usize,
    accepted_fraction: f64,
    verdict: FleetVerdict,
    explanation: &'static str,
    cookies: Vec<CookieReport>,
    per_round: Vec<RoundReport>,
}

fn hex(bytes: &[u8]) -> String {
    fastopen_wire::options::hex(bytes)
}

/// The address this host sends from to reach `server` (what the servers see,
/// unless something translates it). A UDP socket's connect sends nothing.
fn source_address(server: SocketAddr) -> anyhow::Result<IpAddr> {
    let unspecified: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let socket = std::net::UdpSocket::bind(unspecified)?;
    socket.connect(server).with_context(|| format!("no route to {server}"))?;
    Ok(socket.local_addr()?.ip())
}

pub(super) fn run(probe: FleetProbe) -> anyhow::Result<ExitCode> {
    let server_ip = probe.addr.ip();
    let client = source_address(probe.addr)?;
    let keys = match &probe.key_file {
        Some(path) => {
            let file = KeyFile::read(path)?;
            crate::cmd::key::warn_if_exposed("tfo probe", "key file", path, file.exposed_mode);
            [Some(file.primary), file.backup].into_iter().flatten().collect()
        }
        None => Vec::new(),
    };
    let candidates: Vec<IpAddr> = std::iter::once(server_ip).chain(probe.candidates.iter().copied()).collect();
    let connector = Connector::new().method(probe.method);
    // The cookie cache, read and cleared through the library's netlink (not `ip`'s text).
    let mut cache = fastopen::tcp_metrics::TcpMetrics::open()?;
    let forget_needs_root =
        "--fleet forgets this host's cached cookie for the address before each round, which needs root (CAP_NET_ADMIN)";
    let mut rounds = Vec::new();
    let mut per_round = Vec::new();
    for i in 0..probe.rounds {
        crate::interrupt::check()?;
        if i > 0 {
            std::thread::sleep(BETWEEN_ROUNDS);
        }
        cache.forget(server_ip).context(forget_needs_root)?;
        crate::probe_attempt::attempt("cookie_request", &connector, probe.addr, &probe.request, probe.timeout)?;
        let cookie = cache.cookie_for(server_ip)?;
        let (report, seen) =
            crate::probe_attempt::attempt("syn_data", &connector, probe.addr, &probe.request, probe.timeout)?;
        let cookie_after = cache.cookie_for(server_ip)?;
        per_round.push(RoundReport {
            cookie: cookie.as_deref().map(hex),
            cookie_after: cookie_after.as_deref().map(hex),
            syn_data: report.outcome,
        });
        rounds.push(FleetRound { cookie, data_accepted: seen.outcome.tfo_used(), cookie_after });
    }
    let origins = CookieOrigins { keys: &keys, client, candidates: &candidates };
    let diagnosis = diagnose_fleet(&rounds, (!keys.is_empty()).then_some(&origins));
    let report = report(&probe, client, &diagnosis, per_round);
    if probe.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        print_text(&report)?;
    }
    Ok(if diagnosis.verdict == FleetVerdict::Healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn report(probe: &FleetProbe, client: IpAddr, d: &FleetDiagnosis, per_round: Vec<RoundReport>) -> FleetReport {
    FleetReport {
        server: probe.addr,
        client,
        rounds: d.rounds,
        distinct_cookies: d.cookies.len(),
        accepted: d.accepted,
        accepted_fraction: if d.rounds == 0 { 0.0 } else { d.accepted as f64 / d.rounds as f64 },
        verdict: d.verdict,
        explanation: d.verdict.explain(),
        cookies: d
            .cookies
            .iter()
            .map(|c| CookieReport {
                cookie: hex(&c.cookie),
                rounds: c.rounds,
                made_for: c.made_for,
                made_with: c.made_with.map(|k| if k == 0 { "primary" } else { "backup" }),
            })
            .collect(),
        per_round,
    }
}

fn print_text(r: &FleetReport) -> Result<(), crate::out::StdoutFailed> {
    outln!("probing the fleet behind {} from {}: {} rounds, each with a fresh cookie", r.server, r.client, r.rounds)?;
    for c in &r.cookies {
        let made_for = match (c.made_for, c.made_with) {
            (Some(a), Some(k)) => format!(" (the {k} key's cookie for server address {a})"),
            _ => String::new(),
        };
        outln!("  cookie {} seen {} time(s){made_for}", c.cookie, c.rounds)?;
    }
    outln!("  SYN data accepted in {} of {} rounds ({:.0}%)", r.accepted, r.rounds, r.accepted_fraction * 100.0)?;
    outln!("verdict: {}: {}", r.verdict, r.explanation)?;
    Ok(())
}
