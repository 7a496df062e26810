//! `tfo probe`: does this server, and the path to it, support TFO; if not, where it breaks.
//! One address, every address of a name, or a file of targets; plain, HTTP or TLS.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fastopen::keyfile::KeyFile;
use fastopen::{ClientMethod, FleetVerdict};
use fastopen_tools::exchange::ExchangeError;
use fastopen_tools::probe::fleet::{self, FleetProbe, FleetReport};
use fastopen_tools::probe::pace::{self, Pace};
use fastopen_tools::probe::{Diagnosis, Job, Probe, ProbeReport, ProbeTls, Summary};
use fastopen_tools::tls_client::Trust;

use crate::client_opts::{parse_timeout, Method};
use crate::target::{self, Family, Target};

/// Does this server (and the path to it) support TFO? If not, where does it break?
///
/// Makes two TFO connections to each address, each sending a small request,
/// then one plain connection for comparison, and reads the outcomes: did the
/// first get a cookie, did the second's data ride in the SYN and get
/// acknowledged, was a SYN retransmitted. From those it names the likely break:
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
/// Targets: names are probed at every address they resolve to (-4 or -6 to
/// keep one family), each with its own verdict. Many targets (arguments, or
/// --targets FILE with one per line) are probed a few at a time (--concurrency),
/// no faster than --rate, never two at once on one IP (the kernel caches one
/// cookie per server IP). Each address gets one line (one JSON object per
/// line with --json), then a summary.
///
/// With --tls the request is a TLS ClientHello (SNI: the target's name), so
/// TFO carries it in the SYN and the verdict covers the TLS server and the
/// path to it; --http then sends an HTTPS GET over it. Certificates are
/// checked against the system's CAs, or --ca FILE; --insecure skips the check.
///
/// With --fleet N, for an address with many servers behind it (a load
/// balancer's VIP): N rounds, each forgetting this host's cached cookie for
/// the address (its tcp_metrics entry, deleted over netlink; needs root), asking for a fresh one,
/// then sending data in the SYN. It reports how many distinct cookies came
/// back and how much SYN data was accepted:
///   - one cookie, all accepted: healthy;
///   - several cookies: the backends disagree, so a client's cookie fails on
///     the next backend; with --key-file (and --candidates, the backends' own
///     addresses) each cookie is traced to the key and address it was made
///     for: different keys, or DNAT (each backend sees its own address);
///   - one cookie, some data refused: a rotation, or a backend without TFO.
///
/// Exit: 0 TFO works end to end at every address (--fleet: healthy); 1 it
/// does not somewhere (the report says where); 2 usage.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Servers: HOST[:PORT], IP[:PORT], [IPv6]:PORT, or PORT (on 127.0.0.1).
    /// Without a port: 443 with --tls, 80 with --http.
    #[arg(value_name = "TARGET", value_parser = Target::parse, required_unless_present = "targets_file")]
    target: Vec<Target>,
    /// Also probe the targets in FILE: one per line, `#` starts a comment.
    #[arg(long = "targets", value_name = "FILE")]
    targets_file: Option<PathBuf>,
    /// Only IPv4 addresses of names.
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// Only IPv6 addresses of names.
    #[arg(short = '6')]
    ipv6: bool,
    /// Send an HTTP/1.1 GET (for web servers) instead of a short line.
    #[arg(long)]
    http: bool,
    /// Speak TLS: the ClientHello rides in the SYN (with --http: HTTPS).
    #[arg(long)]
    tls: bool,
    /// With --tls: trust only the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// With --tls: accept any certificate (the probe still runs the whole handshake).
    #[arg(long, requires = "tls", conflicts_with = "ca")]
    insecure: bool,
    /// With --tls: the server name to ask for (SNI); default: the target's name.
    #[arg(long, value_name = "NAME", requires = "tls")]
    sni: Option<String>,
    /// With --tls --http: keep the first connection's session tickets and
    /// send the GET of the next ones as TLS 1.3 early data (0-RTT), in the
    /// SYN with the ClientHello; each connection says whether it resumed and
    /// what became of its early data.
    #[arg(long, requires_all = ["tls", "http"])]
    tls_early_data: bool,
    /// How to ask for TFO: sendto or connect.
    #[arg(long, value_enum, default_value_t = Method::Sendto)]
    method: Method,
    /// Deadline for each of the three connections (handshake and first reply byte).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Duration,
    /// Addresses probed at once (each probe is three connections, one after another).
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Probes started per second, at most.
    #[arg(long, default_value_t = 10.0, value_name = "PER_SECOND", value_parser = parse_rate)]
    rate: f64,
    /// One JSON object per address, one per line (and a summary line when there are several).
    #[arg(long)]
    json: bool,
    /// For servers that speak first (SMTP, IMAP, FTP, SSH, MySQL): connect
    /// read-first and time the greeting. The first connection gets the cookie;
    /// the next sends it without data: a server with TFO greets in SYN_RECV,
    /// one round trip sooner. Verdicts: answers_in_syn_recv, no_cookie,
    /// cookie_refused, no_greeting.
    #[arg(long, conflicts_with_all = ["http", "tls", "fleet", "method"])]
    read_first: bool,
    /// Probe the fleet behind one address in N rounds (2 to 1000), each with a fresh cookie.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=1000), conflicts_with_all = ["tls", "targets_file"])]
    fleet: Option<u32>,
    /// With --fleet: the servers' key file, to trace each cookie to what it was made for.
    #[arg(long, value_name = "FILE", requires = "fleet")]
    key_file: Option<PathBuf>,
    /// With --key-file: server addresses a backend may see besides ADDR's
    /// (the backends' own, behind DNAT), comma-separated.
    #[arg(long, value_name = "IP,...", value_delimiter = ',', requires = "key_file")]
    candidates: Vec<std::net::IpAddr>,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.1..=10_000.0).contains(&r) => Ok(r),
        _ => Err(format!("{text:?}: give probes per second, from 0.1 to 10000")),
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut targets = args.target.clone();
    if let Some(path) = &args.targets_file {
        targets.extend(target::read_file(path).map_err(anyhow::Error::msg)?);
    }
    if targets.is_empty() {
        anyhow::bail!("no targets: give HOST[:PORT] arguments or a --targets file with one per line");
    }
    let family = match (args.ipv4, args.ipv6) {
        (true, _) => Family::V4,
        (_, true) => Family::V6,
        _ => Family::Any,
    };
    let default_port = if args.tls { Some(443) } else { args.http.then_some(80) };
    // A target on the command line without a port is bad usage (exit 2); in a
    // --targets file it is that line's verdict, and the others are probed.
    if default_port.is_none() {
        if let Some(t) = args.target.iter().find(|t| !t.has_port()) {
            anyhow::bail!(t.no_port());
        }
    }
    let method = ClientMethod::from(args.method);
    if let Some(rounds) = args.fleet {
        return fleet(&args, &targets, default_port, family, rounds, method);
    }
    let tls = if args.tls {
        let trust = Trust::from_flags(args.ca.as_deref(), args.insecure);
        let client = crate::client_opts::tls_client(trust, args.http)?;
        let client = if args.tls_early_data { client.with_early_data() } else { client };
        Some(ProbeTls { client, sni: args.sni.clone() })
    } else {
        None
    };
    let probe = Probe {
        method,
        timeout: args.timeout,
        http: args.http,
        tls,
        read_first: args.read_first,
        cancel: Some(crate::interrupt::token()),
    };
    let how =
        if args.read_first { "read first: the cookie in a SYN without data".to_string() } else { method.to_string() };
    crate::interrupt::install();
    let started = Instant::now();
    let jobs = resolve_all(&targets, default_port, family, args.concurrency.into());
    let one = jobs.len() == 1;
    let mut reports: Vec<(Diagnosis, bool)> = Vec::new();
    let mut print_error = None;
    pace::run_all(
        jobs,
        |job| job.addr.as_ref().ok().copied(),
        Pace { concurrency: args.concurrency.into(), per_second: args.rate },
        crate::interrupt::requested,
        |job| probe.address(job),
        |report| {
            reports.push((report.diagnosis, report.tfo_works));
            if print_error.is_none() {
                print_error = print(&report, args.json, one, &how).err();
            }
        },
    );
    if let Some(e) = print_error {
        return Err(e);
    }
    crate::interrupt::check()?;
    if !one {
        let summary = Summary::of(targets.len(), &reports, started.elapsed());
        if args.json {
            outln!("{}", serde_json::json!({ "summary": summary }))?;
        } else {
            print_summary(&summary)?;
        }
    }
    Ok(if reports.iter().all(|(_, works)| *works) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// What the probe engine needs of a target, for one of its addresses.
fn job(target: &Target, addr: Result<std::net::SocketAddr, String>) -> Job {
    Job {
        target: target.text.clone(),
        name: target.name().map(str::to_string),
        port_given: target.port.is_some(),
        addr,
    }
}

/// Every address of every target (names resolved a few at a time); a target
/// that does not resolve becomes one job that reports why.
fn resolve_all(targets: &[Target], default_port: Option<u16>, family: Family, concurrency: usize) -> Vec<Job> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let resolved: Vec<std::sync::OnceLock<Vec<Job>>> = targets.iter().map(|_| Default::default()).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, targets.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(target) = targets.get(i) else { return };
                let jobs = match target.resolve(default_port, family) {
                    Ok(addrs) => addrs.into_iter().map(|a| job(target, Ok(a))).collect(),
                    Err(why) => vec![job(target, Err(why))],
                };
                let _ = resolved[i].set(jobs);
            });
        }
    });
    resolved.into_iter().flat_map(|jobs| jobs.into_inner().unwrap_or_default()).collect()
}

/// `how`: how TFO was asked for ("sendto", or read first), for the detailed header.
fn print(report: &ProbeReport, json: bool, detailed: bool, how: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(report)?)?;
    } else if detailed {
        print_detailed(&mut out, report, how)?;
    } else {
        let server = report.server.map_or("-".to_string(), |s| s.to_string());
        let saved = report.saved_ms.filter(|s| *s > 0.0).map_or(String::new(), |s| format!(" (saved {s:.1} ms)"));
        writeln!(out, "{:<30} {:<24} {}{saved}", report.target, server, report.diagnosis.as_str())?;
        if !report.tfo_works {
            writeln!(out, "    {}", report.explanation)?;
        }
    }
    Ok(())
}

fn print_detailed(out: &mut impl std::io::Write, report: &ProbeReport, method: &str) -> std::io::Result<()> {
    match report.server {
        Some(server) if [server.to_string(), server.ip().to_string()].contains(&report.target) => {
            writeln!(out, "probing {server} with TFO ({method})")?
        }
        Some(server) => writeln!(out, "probing {} at {server} with TFO ({method})", report.target)?,
        None => writeln!(out, "probing {}", report.target)?,
    }
    for (i, a) in report.attempts.iter().enumerate() {
        let reply = a.first_reply_ms.map_or("no reply".into(), |ms| format!("first reply byte after {ms:.1} ms"));
        writeln!(out, "  {}. {:<11} {}; connect {:.1} ms, {reply}", i + 1, a.kind, a.said, a.outcome.connect_ms)?;
        if let Some(t) = &a.tls {
            let mut line = format!("     TLS: ClientHello {} bytes", t.client_hello_bytes);
            if let (Some(v), Some(ms)) = (t.version, t.handshake_ms) {
                line.push_str(&format!(", {v} handshake done after {ms:.1} ms"));
            }
            if t.resumed {
                line.push_str(", resumed");
            }
            if let Some(early) = t.early_data {
                line.push_str(&format!(", early data: {}", early.replace('_', " ")));
            }
            if let Some(status) = t.http_status {
                line.push_str(&format!(", HTTP {status}"));
            }
            writeln!(out, "{line}")?;
        }
    }
    writeln!(out, "verdict: {}", report.explanation)?;
    if let Some(s) = report.saved_ms.filter(|s| *s > 0.0) {
        writeln!(out, "TFO saved {s:.1} ms to the first reply byte, compared with the plain connection")?;
    }
    Ok(())
}

fn print_summary(s: &Summary) -> Result<(), crate::out::StdoutFailed> {
    outln!(
        "\n{} addresses of {} targets probed in {:.1} s; TFO works at {}",
        s.addresses,
        s.targets,
        s.wall_ms / 1000.0,
        s.works
    )?;
    for c in &s.diagnoses {
        outln!("  {:<24} {:>6}", c.diagnosis, c.addresses)?;
    }
    Ok(())
}

/// `--fleet`: one address (a VIP), many rounds.
fn fleet(
    args: &Args,
    targets: &[Target],
    default_port: Option<u16>,
    family: Family,
    rounds: u32,
    method: ClientMethod,
) -> anyhow::Result<ExitCode> {
    let [target] = targets else {
        anyhow::bail!("--fleet probes one address (a load balancer's VIP); {} targets were given", targets.len());
    };
    let addrs = target.resolve(default_port, family).map_err(anyhow::Error::msg)?;
    let [addr] = addrs[..] else {
        anyhow::bail!(
            "--fleet probes one address; {:?} has {} ({}): give one of them, or -4 / -6",
            target.text,
            addrs.len(),
            addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
        );
    };
    let keys = match &args.key_file {
        Some(path) => {
            let file = KeyFile::read(path)?;
            crate::key_opts::warn_if_exposed("tfo probe", "key file", path, file.exposed_mode);
            [Some(file.primary), file.backup].into_iter().flatten().collect()
        }
        None => Vec::new(),
    };
    let probe = Probe { method, timeout: args.timeout, http: args.http, tls: None, read_first: false, cancel: None };
    let probed = job(target, Ok(addr));
    crate::interrupt::install();
    let fleet = FleetProbe {
        addr,
        rounds,
        method,
        timeout: args.timeout,
        request: probe.request(&probed, addr),
        keys,
        candidates: args.candidates.clone(),
        cancel: Some(crate::interrupt::token()),
    };
    let report = match fleet::run(&fleet) {
        Err(fleet::FleetError::Cancelled | fleet::FleetError::Attempt(ExchangeError::Cancelled(_))) => {
            return Err(crate::interrupt::Interrupted.into())
        }
        other => other?,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        print_fleet(&report)?;
    }
    Ok(if report.verdict == FleetVerdict::Healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_fleet(r: &FleetReport) -> Result<(), crate::out::StdoutFailed> {
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
