//! `tfo watch`: the TFO outcome of every TCP connection in this network
//! namespace, whoever made it, live, and the client's cookie cache. The
//! collection is `fastopen_tools::watch` (sock_diag, the BPF backend, the
//! processes); this module parses, filters, prints, counts, and feeds the
//! Prometheus exporter (`watch_metrics`).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fastopen::sock_diag::Role;
use fastopen::FastOpenCounters;
use fastopen_tools::watch::{self, Collector, ConnectionReport, Filter, OutcomeFilter};

use super::watch_metrics::Exporter;
use crate::client_opts::parse_timeout;

/// The TFO outcome of every TCP connection in this network namespace, live.
///
/// Reads every TCP socket of the namespace through the kernel's sock_diag
/// (netlink, each socket with its tcp_info) every --interval, and listens to
/// its notifications of destroyed sockets (needs root), so a connection that
/// opens and closes between two reads is still seen. Each connection is
/// reported once, when its handshake is over:
///   - local and peer addresses;
///   - role: server (a listener here has its local port) or client;
///   - tfo_used: the SYN carried data that was acknowledged (client) or
///     accepted (server);
///   - fail_reason (clients): cookie_unavailable, data_not_acked,
///     syn_retransmitted; not_requested when the kernel saw no attempt (the
///     program did not ask); client_disabled when this namespace has client
///     TFO off;
///   - the process (pid, name, cgroup and the systemd unit or container it
///     names): clients from the BPF backend, named at connect even when the
///     connection is gone before any read; servers from their listener's
///     process; any connection open at a read from its own file.
///
/// Backends: `bpf` (the default when it loads: root or CAP_BPF+CAP_PERFMON,
/// and a kernel with BTF) adds a small program on the inet_sock_set_state
/// tracepoint that records the connecting process of every client socket;
/// it is detached when tfo watch exits, and nothing is pinned. `sock-diag`
/// names only what is open at a read (and servers by their listener).
/// tfo watch says which it uses and why; --backend forces one.
///
/// Text mode also prints the TCPFastOpen* counters' changes at each read,
/// with their rates per second. --once reads once and exits; --json prints
/// one JSON object per connection per line, flushed as it comes, for pipes
/// and files. The filters choose what is printed and counted.
///
/// --cookies prints the client's cookie cache instead (tcp_metrics, as
/// `ip tcp_metrics` shows it): per destination the cookie, the MSS, the SYN
/// drops, and whether the next TFO connection there carries data in its SYN.
///
/// --prometheus ADDR serves /metrics for Prometheus: tfo_kernel_*_total (the
/// TCPFastOpen* counters), tfo_connections_total{role,outcome,process} (the
/// first --max-processes names get their own label, the rest "other"),
/// tfo_watch_unnamed_connections_total{role}, tfo_watch_lost_notifications_total,
/// tfo_cookie_cache_destinations.
///
/// SIGINT and SIGTERM end it: the summary (connections, named, lost
/// notifications) goes to stderr, exit 0.
///
/// Exit: 0; 1 the kernel refused a read; 2 usage or no permission.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Time between two reads of every socket.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_timeout)]
    interval: Duration,
    /// Read once, report the connections there are, and exit.
    #[arg(long)]
    once: bool,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    duration: Option<Duration>,
    /// Only connections with this local or peer port (repeatable).
    #[arg(long, value_name = "PORT")]
    port: Vec<u16>,
    /// Only this role.
    #[arg(long, value_enum)]
    role: Option<RoleFilter>,
    /// Only this outcome: `tfo` (data in the SYN), `no_tfo`, or a fail reason.
    #[arg(long, value_name = "OUTCOME", value_parser = parse_outcome)]
    outcome: Option<OutcomeFilter>,
    /// Only connections of processes with this name.
    #[arg(long, value_name = "NAME")]
    process: Option<String>,
    /// Only connections of this process.
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// How processes are named: `auto` (bpf if it loads, else sock-diag),
    /// `bpf` (fail if it cannot load), `sock-diag`.
    #[arg(long, value_enum, default_value = "auto")]
    backend: Backend,
    /// --prometheus: process names with a label of their own; the others are "other".
    #[arg(long, default_value_t = 20, value_name = "N")]
    max_processes: usize,
    /// One JSON object per connection (or destination) per line.
    #[arg(long)]
    json: bool,
    /// Print the client's cookie cache, one line per destination, and exit.
    #[arg(long, conflicts_with_all = ["once", "duration", "prometheus"])]
    cookies: bool,
    /// No line per connection (the counts, metrics and the summary stay):
    /// for a service exporting to Prometheus (contrib/systemd/tfo-watch.service).
    #[arg(long, short)]
    quiet: bool,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9477).
    #[arg(long, value_name = "ADDR")]
    prometheus: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    Auto,
    Bpf,
    SockDiag,
}

impl From<Backend> for watch::Backend {
    fn from(b: Backend) -> watch::Backend {
        match b {
            Backend::Auto => watch::Backend::Auto,
            Backend::Bpf => watch::Backend::Bpf,
            Backend::SockDiag => watch::Backend::SockDiag,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RoleFilter {
    Client,
    Server,
}

fn parse_outcome(text: &str) -> Result<OutcomeFilter, String> {
    OutcomeFilter::parse(text)
}

/// What the run reported, for the summary at exit.
#[derive(Debug, Default)]
struct Tally {
    reported: u64,
    named: u64,
    lost_bursts: u64,
}

/// The run: its flags, the exporter, the tally.
struct Watch {
    args: Args,
    filter: Filter,
    exporter: Option<Exporter>,
    tally: Tally,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.cookies {
        return print_cookie_cache(args.json);
    }
    let exporter = args.prometheus.map(|addr| Exporter::start(addr, args.max_processes)).transpose()?;
    crate::interrupt::install();
    let mut collector = Collector::open(args.backend.into(), !args.once, &mut |note| errln!("tfo watch: {note}"))?;
    match &exporter {
        Some(e) => errln!(
            "tfo watch: watching every TCP connection of this network namespace; metrics on http://{}/metrics",
            e.addr
        ),
        None => errln!("tfo watch: watching every TCP connection of this network namespace"),
    }
    let started = Instant::now();
    let filter = Filter {
        ports: args.port.clone(),
        role: args.role.map(|r| match r {
            RoleFilter::Client => Role::Client,
            RoleFilter::Server => Role::Server,
        }),
        outcome: args.outcome,
        process: args.process.clone(),
        pid: args.pid,
    };
    let mut w = Watch { args, filter, exporter, tally: Tally::default() };
    let mut counters = FastOpenCounters::read().ok().map(|c| (c, Instant::now()));
    let mut lost_warned = false;
    loop {
        for report in collector.read()? {
            w.report(&report)?;
        }
        if w.args.once {
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(exporter) = &w.exporter {
            exporter.cookie_cache(collector.cached_cookies()?);
        }
        if let Ok(now) = FastOpenCounters::read() {
            if let Some(exporter) = &mut w.exporter {
                exporter.kernel_counters(&now);
            }
            if let Some((before, at)) = counters.as_ref().filter(|_| !w.args.json) {
                let delta = &now - before;
                if delta.nonzero().next().is_some() {
                    outln!("counters: {}", crate::report::counter_delta_over(&delta, Some(at.elapsed())))?;
                }
            }
            counters = Some((now, Instant::now()));
        }
        // Until the next read, report what the kernel says was destroyed.
        let next = Instant::now() + w.args.interval;
        while let Some(left) = next.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            if crate::interrupt::requested() || w.args.duration.is_some_and(|d| started.elapsed() >= d) {
                let t = &w.tally;
                errln!(
                    "tfo watch: {} connections reported, {} named; the kernel's queue of closed connections overflowed {} times",
                    t.reported,
                    t.named,
                    t.lost_bursts
                );
                return Ok(ExitCode::SUCCESS);
            }
            if !collector.follows() {
                break;
            }
            let closed = collector.closed(left.min(Duration::from_millis(100)))?;
            if closed.overflowed {
                w.tally.lost_bursts += 1;
                if let Some(exporter) = &w.exporter {
                    exporter.lost_notifications();
                }
                if !std::mem::replace(&mut lost_warned, true) {
                    errln!("tfo watch: the kernel's queue of closed connections overflowed; some short connections were not seen (said once; tfo_watch_lost_notifications_total counts each time)");
                }
            }
            for report in &closed.reports {
                w.report(report)?;
            }
        }
    }
}

/// `--cookies`: the cookie cache, a line (or JSON line) per destination.
fn print_cookie_cache(json: bool) -> anyhow::Result<ExitCode> {
    let destinations = watch::cookie_cache()?;
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:<28} {:<28} {:<34} {:>5} {:>5}  next TFO connection",
            "destination", "source", "cookie", "mss", "drops"
        )?;
    }
    for report in &destinations {
        if json {
            writeln!(out, "{}", serde_json::to_string(report)?)?;
            continue;
        }
        let verdict = match report.fail_reason {
            None => "data in the SYN".to_string(),
            Some(reason) => format!("no data in the SYN: {}", reason.as_str()),
        };
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<28} {:<28} {:<34} {:>5} {:>5}  {verdict}",
            report.peer.to_string(),
            or_dash(report.source.map(|s| s.to_string())),
            or_dash(report.cookie.clone()),
            or_dash(report.mss.map(|m| m.to_string())),
            report.syn_drops,
        )?;
    }
    if !json && destinations.is_empty() {
        writeln!(out, "(no destinations: this namespace has made no TCP connections the kernel remembers)")?;
    }
    Ok(ExitCode::SUCCESS)
}

impl Watch {
    /// Counts, exports and prints a connection the filters keep.
    fn report(&mut self, report: &ConnectionReport) -> anyhow::Result<()> {
        if !self.filter.wants(report) {
            return Ok(());
        }
        if let Some(exporter) = &self.exporter {
            exporter.connection(report.role.as_str(), report.outcome_name(), report.process.as_deref());
        }
        self.tally.reported += 1;
        self.tally.named += u64::from(report.process.is_some());
        if self.args.quiet {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        if self.args.json {
            writeln!(out, "{}", serde_json::to_string(report)?)?;
        } else {
            let what = match (report.tfo_used, report.fail_reason) {
                (true, _) => "TFO: data in the SYN".to_string(),
                (false, _) if report.cookie_only_syn => "TFO: cookie SYN, no data".to_string(),
                (false, Some(r)) => format!("no TFO: {}", r.as_str()),
                (false, None) => "no TFO".to_string(),
            };
            let owner = match (&report.pid, &report.process) {
                (Some(pid), Some(name)) => format!("{}[{pid}]", crate::out::printable(name)),
                _ => "-".to_string(),
            };
            writeln!(out, "{:<6} {:<24} {:<24} {:<28} {owner}", report.role.as_str(), report.local, report.peer, what)?;
        }
        out.flush()?;
        Ok(())
    }
}
