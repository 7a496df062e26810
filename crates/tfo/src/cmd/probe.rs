//! `tfo probe`: does this server, and the path to it, support TFO; if not, where it breaks.
//! One address, every address of a name, or a file of targets; plain, HTTP or TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fastopen::{diagnose_probe, ClientMethod, Connector, ProbeAttempt, ProbeVerdict};
use serde::Serialize;

use super::probe_many::{self, Pace};
use crate::client_opts::{parse_timeout, Method};
use crate::probe_attempt::{attempt, AttemptReport};
use crate::report::TlsFields;
use crate::report::{self, OutcomeFields};
use crate::target::{self, Family, Target};
use fastopen_tools::exchange::{ExchangeError, Until};
use fastopen_tools::tls_client::{self as tls, TlsClient, Trust};

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

/// The verdict on one address: TFO's, or why it could not be probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
enum Diagnosis {
    Tfo(ProbeVerdict),
    /// `--read-first`: `answers_in_syn_recv`, `no_cookie`, `cookie_refused`.
    ReadFirst(&'static str),
    /// `unresolved`, `refused`, `connect_timeout`, `tls_failed`, ...
    Failed(&'static str),
}

impl Diagnosis {
    fn as_str(self) -> &'static str {
        match self {
            Diagnosis::Tfo(v) => v.as_str(),
            Diagnosis::ReadFirst(v) => v,
            Diagnosis::Failed(kind) => kind,
        }
    }
}

/// `tfo probe --json`: one per address. The field names are a contract (README).
#[derive(Debug, Serialize)]
struct ProbeReport {
    /// The target as given.
    target: String,
    /// The address probed (None: the target did not resolve).
    server: Option<SocketAddr>,
    tfo_works: bool,
    diagnosis: Diagnosis,
    explanation: String,
    saved_ms: Option<f64>,
    attempts: Vec<AttemptReport>,
}

/// The end of a run over several addresses (`--json`: the last line, as `{"summary": ...}`).
#[derive(Debug, Serialize)]
struct Summary {
    targets: usize,
    addresses: usize,
    works: usize,
    wall_ms: f64,
    /// Addresses per diagnosis, most common first.
    diagnoses: Vec<DiagnosisCount>,
}

/// One row of the summary table.
#[derive(Debug, Serialize)]
struct DiagnosisCount {
    diagnosis: &'static str,
    addresses: usize,
}

/// One address to probe, and the target it came from.
#[derive(Debug)]
struct Job<'a> {
    target: &'a Target,
    addr: Result<SocketAddr, String>,
}

/// What every probe of the run shares.
struct Probe {
    method: ClientMethod,
    timeout: Duration,
    http: bool,
    tls: Option<(TlsClient, Option<String>)>,
    read_first: bool,
}

impl Probe {
    /// The bytes a plain (or HTTP) probe sends.
    fn request(&self, target: &Target, addr: SocketAddr) -> Vec<u8> {
        if !self.http {
            return b"tfo probe\n".to_vec();
        }
        let host = match target.name() {
            Some(name) if target.port.is_none() => name.to_string(),
            Some(name) => format!("{name}:{}", addr.port()),
            None => addr.to_string(),
        };
        fastopen_wire::http::request_head("GET", "/", &host, "tfo-probe", &[("Connection", "close")]).into_bytes()
    }

    /// One connection, plain or TLS.
    fn attempt(
        &self,
        kind: &'static str,
        connector: &Connector,
        target: &Target,
        addr: SocketAddr,
    ) -> Result<(AttemptReport, ProbeAttempt), AttemptFailed> {
        let request = self.request(target, addr);
        let Some((client, sni)) = &self.tls else {
            return attempt(kind, connector, addr, &request, self.timeout).map_err(AttemptFailed::from);
        };
        let name = tls::server_name(sni.as_deref().or(target.name()), addr)
            .map_err(|why| AttemptFailed { kind: "tls_failed", why })?;
        let http = self.http.then_some(&request[..]);
        let x = client
            .exchange(connector, addr, name, http, self.timeout)
            .map_err(|e| AttemptFailed::from(ExchangeError::from(e)))?;
        let report = AttemptReport {
            kind,
            outcome: OutcomeFields::new(&x.outcome, x.first_flight_bytes),
            first_reply_ms: x.first_byte.map(report::ms),
            tls: Some(TlsFields::from(&x)),
            said: x.outcome.to_string(),
        };
        Ok((report, ProbeAttempt::new(x.outcome, x.first_byte.is_some())))
    }

    /// The three connections to one address, and the verdict.
    fn address(&self, job: &Job<'_>) -> ProbeReport {
        let target = job.target.text.clone();
        let addr = match &job.addr {
            Ok(addr) => *addr,
            Err(why) => return failed(target, None, "unresolved", why.clone(), Vec::new()),
        };
        if self.read_first {
            return self.read_first(target, addr);
        }
        let tfo = Connector::new().method(self.method);
        let plain = Connector::new().tfo(false);
        let mut attempts = Vec::new();
        let mut seen = Vec::new();
        for (kind, connector) in [("tfo_first", &tfo), ("tfo_second", &tfo), ("plain", &plain)] {
            match self.attempt(kind, connector, job.target, addr) {
                Ok((report, s)) => {
                    attempts.push(report);
                    seen.push(s);
                }
                Err(mut e) => {
                    if e.kind == "connect_timeout" && kind == "tfo_second" {
                        e.why.push_str(
                            "; the first connection got through, and this SYN carried data: something may drop SYNs with data (with a --timeout over 1 s the kernel's retransmission without data shows it)",
                        );
                    }
                    return failed(target, Some(addr), e.kind, e.why, attempts);
                }
            }
        }
        let verdict = diagnose_probe(&seen[0], &seen[1], &seen[2]);
        let tls_error = attempts.iter().find_map(|a| a.tls.as_ref()?.error.clone());
        let (diagnosis, explanation) = match tls_error {
            Some(e) if verdict == ProbeVerdict::Works => (
                Diagnosis::Failed("tls_failed"),
                format!("TFO carried the ClientHello in the SYN and the server answered, but {e}"),
            ),
            Some(e) => (Diagnosis::Tfo(verdict), format!("{}; and {e}", verdict.explain())),
            None => (Diagnosis::Tfo(verdict), verdict.explain().to_string()),
        };
        let saved_ms = match (attempts[2].first_reply_ms, attempts[1].first_reply_ms) {
            (Some(p), Some(t)) if verdict == ProbeVerdict::Works => Some(((p - t) * 1000.0).round() / 1000.0),
            _ => None,
        };
        ProbeReport {
            target,
            server: Some(addr),
            tfo_works: diagnosis == Diagnosis::Tfo(ProbeVerdict::Works),
            diagnosis,
            explanation,
            saved_ms,
            attempts,
        }
    }
}

impl Probe {
    /// `--read-first`: two read-first connections with TFO (the first gets the
    /// cookie, the second sends it without data) and a plain one, each timed
    /// to the greeting against its own RTT.
    fn read_first(&self, target: String, addr: SocketAddr) -> ProbeReport {
        let tfo = Connector::new();
        let plain = Connector::new().tfo(false);
        let mut attempts = Vec::new();
        let mut greetings = Vec::new();
        for (kind, connector) in [("read_first_1", &tfo), ("read_first_2", &tfo), ("plain", &plain)] {
            match fastopen_tools::greeting::read_greeting(
                connector,
                addr,
                &crate::interrupt::limits(self.timeout, Until::FirstByte),
            ) {
                Ok(g) => {
                    let trips =
                        g.round_trips().map_or(String::new(), |n| format!(", greeting after {n:.2} round trips"));
                    attempts.push(AttemptReport {
                        kind,
                        outcome: OutcomeFields::new(&g.outcome, 0),
                        first_reply_ms: Some(crate::report::ms(g.after)),
                        tls: None,
                        said: format!("{}{trips}", g.outcome),
                    });
                    greetings.push(g);
                }
                Err(e) => {
                    let kind = e.kind();
                    let why = format!("{:#}", anyhow::Error::from(e));
                    return failed(target, Some(addr), kind, why, attempts);
                }
            }
        }
        let (second, plain) = (&greetings[1], &greetings[2]);
        let trips =
            |g: &fastopen_tools::greeting::Greeting| g.round_trips().map_or("?".to_string(), |n| format!("{n:.2}"));
        let (verdict, explanation) = match (second.outcome.cookie_only_syn, second.with_handshake()) {
            (true, Some(true)) => (
                "answers_in_syn_recv",
                format!(
                    "the server made the connection on the cookie SYN and greeted in SYN_RECV: its greeting came after {} round trips (plain TCP: {})",
                    trips(second),
                    trips(plain)
                ),
            ),
            (true, _) => (
                "cookie_refused",
                format!(
                    "the cookie rode in the SYN, but the greeting came after {} round trips: the server did not take it (a key rotation, its TFO queue full, or the option stripped on the way back)",
                    trips(second)
                ),
            ),
            (false, _) => (
                "no_cookie",
                "the server offered no cookie: its TFO is off (bit 0x2 of net.ipv4.tcp_fastopen, or TCP_FASTOPEN on its listener; 0x400 gives every listener TFO), or something on the path strips the option".to_string(),
            ),
        };
        let works = verdict == "answers_in_syn_recv";
        let saved_ms = works.then(|| ((plain.after.as_secs_f64() - second.after.as_secs_f64()) * 1e6).round() / 1e3);
        ProbeReport {
            target,
            server: Some(addr),
            tfo_works: works,
            diagnosis: Diagnosis::ReadFirst(verdict),
            explanation,
            saved_ms,
            attempts,
        }
    }
}

/// A connection of the probe that could not be made or finished.
struct AttemptFailed {
    /// `refused`, `connect_timeout`, `tls_failed`, ... (`ExchangeError::kind`).
    kind: &'static str,
    why: String,
}

impl From<ExchangeError> for AttemptFailed {
    fn from(e: ExchangeError) -> AttemptFailed {
        let kind = e.kind();
        // The error and its causes, as `tfo: error:` prints them: "cannot connect to ...: Connection refused".
        let why = format!("{:#}", anyhow::Error::from(e));
        AttemptFailed { kind, why }
    }
}

fn failed(
    target: String,
    server: Option<SocketAddr>,
    kind: &'static str,
    explanation: String,
    attempts: Vec<AttemptReport>,
) -> ProbeReport {
    ProbeReport {
        target,
        server,
        tfo_works: false,
        diagnosis: Diagnosis::Failed(kind),
        explanation,
        saved_ms: None,
        attempts,
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
        Some((client, args.sni.clone()))
    } else {
        None
    };
    let probe = Probe { method, timeout: args.timeout, http: args.http, tls, read_first: args.read_first };
    let how =
        if args.read_first { "read first: the cookie in a SYN without data".to_string() } else { method.to_string() };
    crate::interrupt::install();
    let started = Instant::now();
    let jobs = resolve_all(&targets, default_port, family, args.concurrency.into());
    let one = jobs.len() == 1;
    let mut reports: Vec<(Diagnosis, bool)> = Vec::new();
    let mut print_error = None;
    probe_many::run_all(
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
        let summary = summarize(targets.len(), &reports, started.elapsed());
        if args.json {
            outln!("{}", serde_json::json!({ "summary": summary }))?;
        } else {
            print_summary(&summary)?;
        }
    }
    Ok(if reports.iter().all(|(_, works)| *works) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Every address of every target (names resolved a few at a time); a target
/// that does not resolve becomes one job that reports why.
fn resolve_all(targets: &[Target], default_port: Option<u16>, family: Family, concurrency: usize) -> Vec<Job<'_>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let resolved: Vec<std::sync::OnceLock<Vec<Job<'_>>>> = targets.iter().map(|_| Default::default()).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, targets.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(target) = targets.get(i) else { return };
                let jobs = match target.resolve(default_port, family) {
                    Ok(addrs) => addrs.into_iter().map(|a| Job { target, addr: Ok(a) }).collect(),
                    Err(why) => vec![Job { target, addr: Err(why) }],
                };
                let _ = resolved[i].set(jobs);
            });
        }
    });
    resolved.into_iter().flat_map(|jobs| jobs.into_inner().unwrap_or_default()).collect()
}

fn summarize(targets: usize, reports: &[(Diagnosis, bool)], wall: Duration) -> Summary {
    let mut counts: Vec<DiagnosisCount> = Vec::new();
    for (d, _) in reports {
        match counts.iter_mut().find(|c| c.diagnosis == d.as_str()) {
            Some(c) => c.addresses += 1,
            None => counts.push(DiagnosisCount { diagnosis: d.as_str(), addresses: 1 }),
        }
    }
    counts.sort_by(|a, b| b.addresses.cmp(&a.addresses).then(a.diagnosis.cmp(b.diagnosis)));
    Summary {
        targets,
        addresses: reports.len(),
        works: reports.iter().filter(|(_, works)| *works).count(),
        wall_ms: report::ms(wall),
        diagnoses: counts,
    }
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
    let probe = Probe { method, timeout: args.timeout, http: args.http, tls: None, read_first: false };
    super::probe_fleet::run(super::probe_fleet::FleetProbe {
        addr,
        rounds,
        method,
        timeout: args.timeout,
        request: probe.request(target, addr),
        key_file: args.key_file.clone(),
        candidates: args.candidates.clone(),
        json: args.json,
    })
}
