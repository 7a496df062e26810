//! `tfo demo`'s fourth step: the walkthrough's last limit, "requests may get
//! duplicated". A second lab path replays each SYN with data; the same raw
//! request goes to a server under `--early-data allow` (the replay is handled
//! too) and one under `--early-data wait` (the replay is held and dropped).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use fastopen::{ClientOutcome, Connector, FastOpenCounters};
use fastopen_lab::{Lab, LabConfig, Middlebox, PathConfig};
use fastopen_wire::timeline::Verdict;
use serde::Serialize;

use crate::interrupt;
use crate::report::{self, ms};
use fastopen_tools::echo::{ConnectionLog, EarlyData, Protocol};
use fastopen_tools::exchange::{exchange, Until};
use fastopen_tools::lab_server::{ns_counters, NsServer};

/// The request whose duplicate would hurt.
const REQUEST: &[u8] = b"transfer 100 EUR to Bob";

/// One policy's run: the request, what the server logged, the wire.
pub(super) struct PolicyRun {
    policy: EarlyData,
    outcome: ClientOutcome,
    /// The server's log lines for the request: the real connection, then the replay's.
    logs: Vec<ConnectionLog>,
    server_delta: FastOpenCounters,
    wire: Vec<fastopen_wire::timeline::Connection>,
}

impl PolicyRun {
    fn handled(&self) -> usize {
        self.logs.iter().filter(|l| l.handled).count()
    }
}

/// The fourth step's result.
pub(super) struct ReplayStep {
    delay: Duration,
    runs: Vec<PolicyRun>,
}

impl ReplayStep {
    /// The step failed if `wait` handled the request more than once.
    pub(super) fn wait_handled_twice(&self) -> bool {
        self.runs.iter().any(|r| r.policy == EarlyData::Wait && r.handled() > 1)
    }
}

/// Builds the replaying path (`rtt`, each SYN with data replayed 3 round trips
/// later, once the real connection is gone from the server) and runs the request
/// against `allow`, then `wait`.
pub(super) fn run(rtt: Duration) -> anyhow::Result<ReplayStep> {
    let delay = rtt * 3;
    let path = PathConfig { middleboxes: vec![Middlebox::ReplaySynData(delay)], ..PathConfig::with_rtt(rtt) };
    let lab = Lab::start(LabConfig { path, ..LabConfig::default() }).context("building the replaying lab")?;
    let mut runs = Vec::new();
    for (port, policy) in [(8001, EarlyData::Allow), (8002, EarlyData::Wait)] {
        interrupt::check()?;
        runs.push(run_policy(&lab, SocketAddr::new(lab.server_ip(false), port), policy, rtt, delay)?);
    }
    Ok(ReplayStep { delay, runs })
}

fn run_policy(
    lab: &Lab,
    addr: SocketAddr,
    policy: EarlyData,
    rtt: Duration,
    delay: Duration,
) -> anyhow::Result<PolicyRun> {
    let confirm_timeout = rtt * 4 + Duration::from_secs(1);
    let limits = fastopen_tools::echo::Limits { early_data: policy, confirm_timeout, ..Default::default() };
    let mut server =
        NsServer::start(lab.server(), addr, Protocol::Raw, None, limits, crate::report::lab_server_notices())?;
    let request = |data: &'static [u8]| {
        lab.client().run(move || {
            let limits = interrupt::limits(Duration::from_secs(10), Until::Eof);
            exchange(&Connector::new(), addr, data, Until::Eof, &limits).map(|ex| ex.outcome)
        })
    };
    // A cookie first (its SYN has no data: nothing to replay).
    lab.flush_cookies()?;
    request(b"cookie, please")??;
    let _ = server.next_log(Duration::from_secs(5));
    lab.stats().set_capture(true);
    let before = ns_counters(lab.server())?;
    let outcome = request(REQUEST)??;
    // The real connection's line, then the replay's: it arrives `delay` after
    // the SYN and, under `wait`, is dropped when its confirmation never comes.
    let mut logs = Vec::new();
    let deadline = std::time::Instant::now() + delay + confirm_timeout + Duration::from_secs(2);
    while logs.len() < 2 {
        interrupt::check()?;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match server.next_log(left.min(Duration::from_millis(100))) {
            Some(log) => logs.push(log),
            None if left.is_zero() => break,
            None => {}
        }
    }
    let server_delta = &ns_counters(lab.server())? - &before;
    lab.stats().set_capture(false);
    let mut tracker = fastopen_wire::timeline::Tracker::new();
    for p in lab.stats().take_capture() {
        if p.point == fastopen_lab::CapturePoint::Delivered {
            if let Ok(packet) = fastopen_wire::TcpPacket::parse_ip(&p.bytes) {
                tracker.push(p.time, 0, &packet);
            }
        }
    }
    // The capture may start with the end of the cookie's connection.
    let wire = tracker.into_connections().into_iter().filter(|c| c.verdict() != Verdict::NoHandshake).collect();
    Ok(PolicyRun { policy, outcome, logs, server_delta, wire })
}

fn describe(log: &ConnectionLog) -> String {
    let confirmed = match log.confirmed {
        Some(true) => "confirmed by the client's ACK",
        Some(false) => "never confirmed",
        None => "confirmation unknown",
    };
    let handled = if log.handled { "HANDLED (echoed)" } else { "not handled" };
    format!("{}, {confirmed}: {handled}", log.outcome)
}

/// The step as text, after the first three.
pub(super) fn print_text(step: &ReplayStep) -> Result<(), crate::out::StdoutFailed> {
    outln!(
        "\n4. The limit: a replayed SYN (\"requests may get duplicated\")\n   \
         A second path replays each SYN with data {:.0} ms later, as a duplicating network\n   \
         or an attacker would. The client sends {:?} in the SYN, once.",
        ms(step.delay),
        String::from_utf8_lossy(REQUEST)
    )?;
    for run in &step.runs {
        outln!("\n   tfo serve --early-data {}", fastopen::EarlyDataPolicy::from(run.policy))?;
        outln!("   client:  {}", run.outcome)?;
        for (i, log) in run.logs.iter().enumerate() {
            let which = if i == 0 { "connection" } else { "replay    " };
            outln!("   server:  {which} from {}: {}", log.peer, describe(log))?;
        }
        outln!("   kernel:  server {}", report::counter_delta(&run.server_delta))?;
        outln!("   on the wire (as delivered to the server):")?;
        for c in &run.wire {
            outln!("     {}", c.verdict())?;
            let _ = report::print_events(&mut std::io::stdout().lock(), c, "       ");
        }
        let times = match run.handled() {
            1 => "once".to_string(),
            2 => "TWICE".to_string(),
            n => format!("{n} times"),
        };
        outln!("   => the request was handled {times}")?;
        if run.handled() > 1 {
            outln!("      (the client had its answer already; a payment would have run twice)")?;
        }
    }
    outln!(
        "\n   `wait` holds data that came in the SYN until the client's final ACK, which a\n   \
         replay never gets: it costs the round trip TFO saved, for unsafe requests only\n   \
         (with --http, GET/HEAD/OPTIONS still run at once). See README, \"What is safe to send in a SYN\"."
    )?;
    Ok(())
}

/// One policy in `tfo demo --json`'s `replay`.
#[derive(Debug, Serialize)]
struct PolicyReport<'a> {
    early_data: fastopen::EarlyDataPolicy,
    #[serde(flatten)]
    outcome: report::OutcomeFields,
    /// How many times the server handled the request (2 = the replay too).
    handled: usize,
    server_logs: &'a [ConnectionLog],
    server_counters_delta: FastOpenCounters,
    wire: Vec<report::ConnectionReport>,
}

/// `tfo demo --json`'s `replay`.
#[derive(Debug, Serialize)]
pub(super) struct ReplayReport<'a> {
    replay_delay_ms: f64,
    policies: Vec<PolicyReport<'a>>,
}

impl<'a> From<&'a ReplayStep> for ReplayReport<'a> {
    fn from(step: &'a ReplayStep) -> Self {
        let policies = step
            .runs
            .iter()
            .map(|run| PolicyReport {
                early_data: fastopen::EarlyDataPolicy::from(run.policy),
                outcome: report::OutcomeFields::new(&run.outcome, REQUEST.len()),
                handled: run.handled(),
                server_logs: &run.logs,
                server_counters_delta: run.server_delta.clone(),
                wire: run.wire.iter().map(report::ConnectionReport::from).collect(),
            })
            .collect();
        ReplayReport { replay_delay_ms: ms(step.delay), policies }
    }
}
