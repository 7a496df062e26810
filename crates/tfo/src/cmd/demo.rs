//! `tfo demo`: the classic TFO walkthrough, end to end, in one command.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fastopen::{ClientOutcome, Connector, FastOpenCounters};
use fastopen_lab::netns::Netns;
use fastopen_lab::parse::parse_duration;
use fastopen_lab::{Lab, LabConfig, PathConfig};
use serde::Serialize;

use crate::exit::CheckFailed;
use crate::interrupt;
use crate::report::{self, ms};
use fastopen_tools::echo::{ConnectionLog, Protocol};
use fastopen_tools::exchange::{exchange, Until};
use fastopen_tools::lab_server::{http_request, ns_counters, NsServer};

use super::demo_replay;

/// Run the TFO walkthrough end to end: plain request, cookie, request in the SYN.
///
/// Builds a lab (a client and a server network namespace joined by an emulated
/// path with a 100 ms round trip; your host's settings are not touched), starts
/// `tfo serve --http` in the server namespace, and makes from the client:
///   1. a plain TCP request (no TFO): two round trips,
///   2. a first TFO request: the SYN asks for a cookie, the SYN-ACK brings one;
///      still two round trips,
///   3. a second TFO request: the HTTP request rides in the SYN; one round trip.
///
/// For each it prints what the client and the server saw, the kernel's
/// TCPFastOpen* counter changes (the independent check), and the time; then
/// the three side by side. Then TFO's last limit:
///   4. a replayed SYN: over a second path that replays each SYN with data,
///      one raw request in the SYN is handled twice by a server under
///      `--early-data allow`, once under `--early-data wait` (the replay is
///      held until an ACK that never comes, then dropped), with the wire.
///
/// Needs root for the lab. Without root (or with --loopback) it runs steps 1-3
/// on loopback in a private namespace, where a round trip is microseconds.
/// Exit 1 if the third request did not carry its data in the SYN, or if
/// `wait` handled the replayed request.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Round-trip time of the emulated path (above 0, with a unit: 100ms, 0.2s).
    #[arg(long, default_value = "100ms", value_parser = parse_rtt)]
    rtt: Duration,
    /// Skip the emulated path: loopback in a private namespace.
    #[arg(long)]
    loopback: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `--rtt`: a duration above zero (a zero round trip makes "round trips" meaningless).
fn parse_rtt(text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Ok(d) if d.is_zero() => {
            Err(format!("{text:?}: the demo needs a round trip above 0 (e.g. 100ms); --loopback runs without a path"))
        }
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

struct Step {
    title: &'static str,
    tfo: bool,
    flush_cookies: bool,
}

const STEPS: [Step; 3] = [
    Step { title: "plain TCP (no TFO)", tfo: false, flush_cookies: false },
    Step { title: "TFO, first connection (asks for a cookie)", tfo: true, flush_cookies: true },
    Step { title: "TFO, second connection (request in the SYN)", tfo: true, flush_cookies: false },
];

/// Where the demo runs.
enum Setting {
    Lab(Box<Lab>),
    /// One private namespace for client and server (loopback).
    Loopback(Netns),
}

impl Setting {
    fn client(&self) -> &Netns {
        match self {
            Setting::Lab(lab) => lab.client(),
            Setting::Loopback(ns) => ns,
        }
    }
    fn server(&self) -> &Netns {
        match self {
            Setting::Lab(lab) => lab.server(),
            Setting::Loopback(ns) => ns,
        }
    }
    fn server_addr(&self) -> SocketAddr {
        match self {
            Setting::Lab(lab) => SocketAddr::new(lab.server_ip(false), 8000),
            Setting::Loopback(_) => "127.0.0.1:8000".parse().expect("literal address"),
        }
    }
}

struct StepResult {
    /// The connection as the lab's link saw it (lab only).
    wire: Option<fastopen_wire::timeline::Connection>,
    outcome: ClientOutcome,
    request_bytes: usize,
    total: Duration,
    reply: Vec<u8>,
    server: Option<ConnectionLog>,
    client_delta: FastOpenCounters,
    server_delta: FastOpenCounters,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    // As root, before the lab is built: a Ctrl-C during its setup is then
    // taken once it stands, and it is torn down (without the handler the
    // signal would kill the process mid-setup). Without root, only after the
    // namespace setup: the handler's thread must not exist before an
    // unprivileged user namespace is entered (it needs a single thread).
    if fastopen_lab::netns::is_root() {
        interrupt::install_saying("the lab was torn down");
    }
    let (setting, note) = Setting::build(&args)?;
    interrupt::install_saying("the lab was torn down");
    interrupt::check()?;
    let rtt = match &setting {
        Setting::Lab(_) => Some(args.rtt),
        Setting::Loopback(_) => None,
    };
    let mut server = NsServer::start(
        setting.server(),
        setting.server_addr(),
        Protocol::Http,
        None,
        Default::default(),
        crate::report::lab_server_notices(),
    )?;
    let addr = server.addr;
    if !args.json {
        introduce(&setting, addr, args.rtt, note)?;
    }
    if let Setting::Lab(lab) = &setting {
        lab.stats().set_capture(true);
    }
    let request = http_request(addr, 75);
    let mut results = Vec::new();
    for step in &STEPS {
        interrupt::check()?;
        results.push(run_step(&setting, &mut server, step, &request)?);
    }
    drop(server);
    let replay = match (&setting, rtt) {
        (Setting::Lab(_), Some(rtt)) => {
            drop(setting); // the replaying path is a lab of its own
            Some(demo_replay::run(rtt)?)
        }
        _ => None,
    };
    if args.json {
        print_json(&results, rtt, addr, replay.as_ref())?;
    } else {
        print_text(&results, rtt)?;
        match &replay {
            Some(step) => demo_replay::print_text(step),
            None => outln!("\n4. (a replayed SYN needs the lab's replaying path: run as root, without --loopback)"),
        }?;
    }
    if !results[2].outcome.tfo_used() {
        return Err(CheckFailed("the second TFO request did not carry its data in the SYN".into()).into());
    }
    if replay.as_ref().is_some_and(|r| r.wait_handled_twice()) {
        return Err(CheckFailed("--early-data wait handled the replayed request".into()).into());
    }
    Ok(ExitCode::SUCCESS)
}

impl Setting {
    /// The lab as root; else loopback in a private namespace (and a note why).
    fn build(args: &Args) -> anyhow::Result<(Setting, Option<&'static str>)> {
        let root = fastopen_lab::netns::is_root();
        if root && !args.loopback {
            let path = PathConfig::with_rtt(args.rtt);
            let lab = Lab::start(LabConfig { path, ..LabConfig::default() }).context("building the lab")?;
            return Ok((Setting::Lab(Box::new(lab)), None));
        }
        let mut note = None;
        if root {
            fastopen_lab::netns::enter_private(3)?;
        } else {
            // Still single-threaded here, as a user namespace requires.
            fastopen_lab::netns::enter_private_unprivileged(3).context(
                "without root, tfo demo needs unprivileged user namespaces for its private loopback; \
                 run `sudo tfo demo` (which also gives the emulated 100 ms path)",
            )?;
            note = Some("not root: loopback only, in a private user+network namespace; `sudo tfo demo` adds the emulated 100 ms path");
        }
        Ok((Setting::Loopback(Netns::of_current_thread()?), note))
    }
}

fn introduce(
    setting: &Setting,
    addr: SocketAddr,
    rtt: Duration,
    note: Option<&str>,
) -> Result<(), crate::out::StdoutFailed> {
    match setting {
        Setting::Lab(_) => outln!(
            "tfo demo: client 198.18.0.1 -> server {addr} over an emulated path, RTT {} ms; \
             net.ipv4.tcp_fastopen=3 in both namespaces; `tfo serve --http` on the server\n",
            ms(rtt)
        ),
        Setting::Loopback(_) => outln!(
            "tfo demo: loopback in a private network namespace, net.ipv4.tcp_fastopen=3; `tfo serve --http` on {addr}\n"
        ),
    }?;
    if let Some(n) = note {
        outln!("note: {n}\n")?;
    }
    Ok(())
}

/// One request of the walkthrough, with the four views of it.
fn run_step(setting: &Setting, server: &mut NsServer, step: &Step, request: &[u8]) -> anyhow::Result<StepResult> {
    if step.flush_cookies {
        if let Setting::Lab(lab) = setting {
            lab.flush_cookies()?;
        }
    }
    let addr = server.addr;
    let (c0, s0) = (ns_counters(setting.client())?, ns_counters(setting.server())?);
    let connector = Connector::new().tfo(step.tfo);
    let req = request.to_vec();
    let (outcome, total, reply) = setting.client().run(move || {
        let limits = interrupt::limits(Duration::from_secs(10), Until::HttpResponse);
        exchange(&connector, addr, &req, Until::HttpResponse, &limits).map(|ex| (ex.outcome, ex.total, ex.reply))
    })??;
    let server_log = server.next_log(Duration::from_secs(5));
    let (c1, s1) = (ns_counters(setting.client())?, ns_counters(setting.server())?);
    let wire = match setting {
        Setting::Lab(lab) => handshake_on_the_wire(lab),
        Setting::Loopback(_) => None,
    };
    Ok(StepResult {
        wire,
        outcome,
        request_bytes: request.len(),
        total,
        reply,
        server: server_log,
        client_delta: &c1 - &c0,
        server_delta: &s1 - &s0,
    })
}

/// The step's connection, from the packets the link copied as they were sent.
fn handshake_on_the_wire(lab: &Lab) -> Option<fastopen_wire::timeline::Connection> {
    let mut tracker = fastopen_wire::timeline::Tracker::new();
    for p in lab.stats().take_capture() {
        if p.point == fastopen_lab::CapturePoint::Sent {
            if let Ok(packet) = fastopen_wire::TcpPacket::parse_ip(&p.bytes) {
                tracker.push(p.time, 0, &packet);
            }
        }
    }
    // The capture may start with the end of the previous step's connection.
    tracker.into_connections().into_iter().find(|c| c.verdict() != fastopen_wire::timeline::Verdict::NoHandshake)
}

fn status_line(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply.split(|&b| b == b'\r').next().unwrap_or_default()).into_owned()
}

fn merged_delta(r: &StepResult) -> String {
    let client = report::counter_delta(&r.client_delta);
    let server = report::counter_delta(&r.server_delta);
    if client == server {
        client
    } else {
        format!("client: {client}; server: {server}")
    }
}

fn print_text(results: &[StepResult], rtt: Option<Duration>) -> Result<(), crate::out::StdoutFailed> {
    for (i, (step, r)) in STEPS.iter().zip(results).enumerate() {
        outln!("{}. {}", i + 1, step.title)?;
        outln!("   client:  {}", r.outcome)?;
        match &r.server {
            Some(log) => outln!("   server:  {}", log.outcome),
            None => outln!("   server:  (no log line)"),
        }?;
        outln!("   kernel:  {}", merged_delta(r))?;
        if let Some(c) = &r.wire {
            outln!("   on the wire: {}", c.verdict())?;
            let _ = report::print_events(&mut std::io::stdout().lock(), c, "     ");
        }
        outln!("   reply:   {} ({} bytes) after {:.1} ms\n", status_line(&r.reply), r.reply.len(), ms(r.total))?;
    }
    outln!("{:<44} {:>10} {:>12}  data in SYN", "side by side", "time", "round trips")?;
    for (step, r) in STEPS.iter().zip(results) {
        let trips = rtt.map_or("-".to_string(), |rtt| format!("{:.2}", r.total.as_secs_f64() / rtt.as_secs_f64()));
        let in_syn = if r.outcome.tfo_used() {
            format!("{} bytes", r.outcome.bytes_in_syn)
        } else {
            r.outcome.fail_reason.map_or("-".into(), |f| format!("no ({})", f.as_str()))
        };
        outln!("{:<44} {:>7.1} ms {:>12}  {in_syn}", step.title, ms(r.total), trips)?;
    }
    let (plain, warm) = (results[0].total.as_secs_f64(), results[2].total.as_secs_f64());
    match rtt {
        Some(_) => outln!(
            "\nTFO saved {:.1} ms of {:.1} ms ({:.0}%): the request rode in the SYN, so the reply came one round trip sooner.",
            (plain - warm) * 1000.0,
            plain * 1000.0,
            (plain - warm) / plain * 100.0
        ),
        None => outln!(
            "\nOn loopback a round trip takes microseconds, so these times say little; \
             `sudo tfo demo` shows the saved round trip over an emulated 100 ms path."
        ),
    }?;
    Ok(())
}

/// One step in `tfo demo --json`.
#[derive(Debug, Serialize)]
struct StepReport<'a> {
    step: usize,
    title: &'static str,
    #[serde(flatten)]
    outcome: report::OutcomeFields,
    total_ms: f64,
    status_line: String,
    server: Option<&'a ConnectionLog>,
    client_counters_delta: FastOpenCounters,
    server_counters_delta: FastOpenCounters,
    wire: Option<report::ConnectionReport>,
}

/// `tfo demo --json`. The field names are a contract (README).
#[derive(Debug, Serialize)]
struct DemoReport<'a> {
    /// "lab" or "loopback".
    setting: &'static str,
    rtt_ms: Option<f64>,
    server: SocketAddr,
    steps: Vec<StepReport<'a>>,
    saved_ms: f64,
    /// Step 4 (lab only).
    replay: Option<demo_replay::ReplayReport<'a>>,
}

fn print_json(
    results: &[StepResult],
    rtt: Option<Duration>,
    addr: SocketAddr,
    replay: Option<&demo_replay::ReplayStep>,
) -> anyhow::Result<()> {
    let steps = STEPS
        .iter()
        .zip(results)
        .enumerate()
        .map(|(i, (step, r))| StepReport {
            step: i + 1,
            title: step.title,
            outcome: report::OutcomeFields::new(&r.outcome, r.request_bytes),
            total_ms: ms(r.total),
            status_line: status_line(&r.reply),
            server: r.server.as_ref(),
            client_counters_delta: r.client_delta.clone(),
            server_counters_delta: r.server_delta.clone(),
            wire: r.wire.as_ref().map(report::ConnectionReport::from),
        })
        .collect();
    let report = DemoReport {
        setting: if rtt.is_some() { "lab" } else { "loopback" },
        rtt_ms: rtt.map(ms),
        server: addr,
        steps,
        saved_ms: ms(results[0].total.saturating_sub(results[2].total)),
        replay: replay.map(demo_replay::ReplayReport::from),
    };
    outln!("{}", serde_json::to_string_pretty(&report)?)?;
    Ok(())
}
