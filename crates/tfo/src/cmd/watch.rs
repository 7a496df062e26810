//! `tfo watch`: the TFO outcome of every TCP connection in this network
//! namespace, whoever made it, live, and the client's cookie cache. The
//! sockets come from the kernel's sock_diag (`fastopen::sock_diag`), the
//! cache from tcp_metrics (`fastopen::tcp_metrics`); this module keeps track
//! of which were reported, finds their processes, filters, prints, and feeds
//! the Prometheus exporter (`watch_metrics`).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use fastopen::sock_diag::{DestroyFeed, DiagSocket, Role, SockDiag, TCP_LISTEN};
use fastopen::tcp_metrics::TcpMetrics;
use fastopen::{FailReason, FastOpenCounters, FastOpenMode};
use serde::Serialize;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RoleFilter {
    Client,
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutcomeFilter {
    Tfo,
    NoTfo,
    Reason(FailReason),
}

fn parse_outcome(text: &str) -> Result<OutcomeFilter, String> {
    match text {
        "tfo" => Ok(OutcomeFilter::Tfo),
        "no_tfo" => Ok(OutcomeFilter::NoTfo),
        _ => FailReason::ALL.iter().find(|r| r.as_str() == text).map(|r| OutcomeFilter::Reason(*r)).ok_or_else(|| {
            let names: Vec<&str> = FailReason::ALL.iter().map(|r| r.as_str()).collect();
            format!("{text:?}: give tfo, no_tfo or a reason ({})", names.join(", "))
        }),
    }
}

/// One connection, as `--json` prints it. The field names are a contract (README).
#[derive(Debug, Serialize)]
struct ConnectionReport {
    local: SocketAddr,
    peer: SocketAddr,
    role: Role,
    tfo_used: bool,
    fail_reason: Option<FailReason>,
    /// Server side: made on a cookie SYN without data (a client that reads first).
    cookie_only_syn: bool,
    pid: Option<u32>,
    process: Option<String>,
    /// The process's cgroup (v2 path), when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<String>,
    /// The systemd unit or container id the cgroup names, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    /// How the process was found: `bpf` (at connect), `socket` (its file,
    /// open at a read), `listener` (a server's listener); null if not found.
    named_by: Option<&'static str>,
    /// `open` (seen by a read while open) or `closed` (seen at its end only).
    seen: &'static str,
}

/// One destination of the cookie cache, as `--cookies --json` prints it.
#[derive(Debug, Serialize)]
struct CachedDestinationReport {
    peer: IpAddr,
    source: Option<IpAddr>,
    /// The cookie in hex (it only lets this host's address skip a round trip).
    cookie: Option<String>,
    mss: Option<u16>,
    syn_drops: u16,
    age_ms: u128,
    /// The next TFO connection there carries data in its SYN.
    data_in_syn: bool,
    /// Why not: `client_disabled` or `cookie_unavailable`.
    fail_reason: Option<FailReason>,
}

/// `tcpi_state`s whose handshake is not over (the outcome is not final).
const SYN_SENT: u8 = 2;
/// A mini socket in TIME_WAIT: no tcp_info, and reported before if seen at all.
const TIME_WAIT: u8 = 6;

/// What is known across reads.
struct Watch {
    args: Args,
    client_tfo: bool,
    /// Cookies of the sockets reported that may still show up: in the last
    /// two reads (a socket gone at one read has its notification read before
    /// the next), and not yet destroyed. Bounded by the sockets alive.
    reported: HashSet<u64>,
    /// Cookies in the previous read.
    previous_read: HashSet<u64>,
    listeners: Vec<SocketAddr>,
    processes: HashMap<u32, (u32, String)>,
    /// Listening port → the process of its listener.
    listener_owners: HashMap<u16, (u32, String)>,
    owners: Option<fastopen::owners::ConnectOwners>,
    exporter: Option<Exporter>,
    tally: Tally,
}

/// What the run saw, for the summary at exit.
#[derive(Debug, Default)]
struct Tally {
    reported: u64,
    named: u64,
    lost_bursts: u64,
}

/// The BPF backend, if it is wanted and loads; says which backend runs and why.
fn open_backend(backend: Backend) -> anyhow::Result<Option<fastopen::owners::ConnectOwners>> {
    if backend == Backend::SockDiag {
        errln!("tfo watch: backend sock-diag (--backend): processes named for connections open at a read, servers by their listener");
        return Ok(None);
    }
    match fastopen::owners::ConnectOwners::attach() {
        Ok(owners) => {
            errln!("tfo watch: backend bpf: clients named at connect (a tp_btf program on inet_sock_set_state, detached at exit), servers by their listener");
            Ok(Some(owners))
        }
        Err(e) if backend == Backend::Bpf => Err(anyhow::Error::new(e).context("--backend bpf")),
        Err(e) => {
            errln!("tfo watch: backend sock-diag, as BPF cannot be used ({e}): short client connections gone before a read stay unnamed");
            Ok(None)
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.cookies {
        return print_cookie_cache(args.json);
    }
    let mut diag = SockDiag::open()?;
    let mut feed = if args.once {
        None
    } else {
        Some(
            DestroyFeed::open()
                .context("tfo watch needs root (CAP_NET_ADMIN) to see connections that close between reads")?,
        )
    };
    if let Some(granted) = feed.as_ref().and_then(|f| f.receive_buffer().ok()) {
        if granted < 8 << 20 {
            errln!(
                "tfo watch: note: the notification buffer is {} KiB, not the 8 MiB asked (net.core.rmem_max caps it): bursts may be lost, and would be counted",
                granted >> 10
            );
        }
    }
    let mut cache = TcpMetrics::open()?;
    let exporter = args.prometheus.map(|addr| Exporter::start(addr, args.max_processes)).transpose()?;

    crate::interrupt::install();
    let owners = if args.once { None } else { open_backend(args.backend)? };
    match &exporter {
        Some(e) => errln!(
            "tfo watch: watching every TCP connection of this network namespace; metrics on http://{}/metrics",
            e.addr
        ),
        None => errln!("tfo watch: watching every TCP connection of this network namespace"),
    }
    let started = Instant::now();
    let mut w = Watch {
        args,
        client_tfo: true,
        reported: HashSet::new(),
        previous_read: HashSet::new(),
        listeners: Vec::new(),
        processes: HashMap::new(),
        listener_owners: HashMap::new(),
        owners,
        exporter,
        tally: Tally::default(),
    };
    let mut counters = FastOpenCounters::read().ok().map(|c| (c, Instant::now()));
    let mut lost_warned = false;
    loop {
        w.client_tfo = fastopen::host::read_mode()?.client();
        let sockets = diag.dump()?;
        w.listeners = sockets.iter().filter(|s| s.state == TCP_LISTEN).map(|s| s.local).collect();
        w.forget_gone(&sockets);
        w.find_processes(&sockets);
        for s in &sockets {
            w.report(s, "open")?;
        }
        if w.args.once {
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(exporter) = &w.exporter {
            exporter.cookie_cache(cache.dump()?.iter().filter(|d| d.cookie.is_some()).count());
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
            let Some(feed) = feed.as_mut() else { break };
            let destroyed = feed.recv(left.min(Duration::from_millis(100)))?;
            if destroyed.overflowed {
                w.tally.lost_bursts += 1;
                if let Some(exporter) = &w.exporter {
                    exporter.lost_notifications();
                }
                if !std::mem::replace(&mut lost_warned, true) {
                    errln!("tfo watch: the kernel's queue of closed connections overflowed; some short connections were not seen (said once; tfo_watch_lost_notifications_total counts each time)");
                }
            }
            for s in &destroyed.sockets {
                // Its last word: reported now, or before and never again.
                if !w.reported.remove(&s.cookie) {
                    w.report(s, "closed")?;
                    w.reported.remove(&s.cookie);
                }
            }
        }
    }
}

/// `--cookies`: the cookie cache, a line (or JSON line) per destination.
fn print_cookie_cache(json: bool) -> anyhow::Result<ExitCode> {
    let mode = fastopen::host::read_mode()?;
    let mut destinations = TcpMetrics::open()?.dump()?;
    destinations.sort_by_key(|d| (d.peer, d.source));
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:<28} {:<28} {:<34} {:>5} {:>5}  next TFO connection",
            "destination", "source", "cookie", "mss", "drops"
        )?;
    }
    for d in &destinations {
        let report = cached_destination_report(d, mode);
        if json {
            writeln!(out, "{}", serde_json::to_string(&report)?)?;
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

fn cached_destination_report(
    d: &fastopen::tcp_metrics::CachedDestination,
    mode: FastOpenMode,
) -> CachedDestinationReport {
    let fail_reason = d.syn_data_verdict(mode);
    CachedDestinationReport {
        peer: d.peer,
        source: d.source,
        cookie: d.cookie.as_ref().map(|c| c.iter().map(|b| format!("{b:02x}")).collect()),
        mss: d.mss,
        syn_drops: d.syn_drops,
        age_ms: d.age.as_millis(),
        data_in_syn: fail_reason.is_none(),
        fail_reason,
    }
}

impl Watch {
    /// Reports `s` once, when its outcome is final and it passes the filters.
    fn report(&mut self, s: &DiagSocket, seen: &'static str) -> anyhow::Result<()> {
        if matches!(s.state, TCP_LISTEN | TIME_WAIT | SYN_SENT) || self.reported.contains(&s.cookie) {
            return Ok(());
        }
        let role = Role::of(s, &self.listeners);
        let Some(outcome) = s.outcome(role, self.client_tfo) else { return Ok(()) };
        self.reported.insert(s.cookie);
        let (owner, named_by) = self.owner_of(s, role);
        let cgroup = owner.as_ref().and_then(|o| cgroup_of(o.0));
        let report = ConnectionReport {
            local: s.local,
            peer: s.peer,
            role,
            tfo_used: outcome.tfo_used,
            fail_reason: outcome.fail_reason,
            cookie_only_syn: outcome.cookie_only_syn,
            pid: owner.as_ref().map(|o| o.0),
            process: owner.map(|o| o.1),
            unit: cgroup.as_deref().and_then(unit_of),
            cgroup,
            named_by,
            seen,
        };
        if !self.wanted(&report) {
            return Ok(());
        }
        if let Some(exporter) = &self.exporter {
            let outcome = match (report.tfo_used, report.fail_reason) {
                (true, _) => "tfo",
                (false, _) if report.cookie_only_syn => "cookie_only_syn",
                (false, Some(reason)) => reason.as_str(),
                (false, None) => "no_tfo",
            };
            exporter.connection(role.as_str(), outcome, report.process.as_deref());
        }
        self.tally.reported += 1;
        self.tally.named += u64::from(report.process.is_some());
        if self.args.quiet {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        if self.args.json {
            writeln!(out, "{}", serde_json::to_string(&report)?)?;
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
            writeln!(out, "{:<6} {:<24} {:<24} {:<28} {owner}", role.as_str(), report.local, report.peer, what)?;
        }
        out.flush()?;
        Ok(())
    }

    fn wanted(&self, r: &ConnectionReport) -> bool {
        let a = &self.args;
        let port = a.port.is_empty() || a.port.contains(&r.local.port()) || a.port.contains(&r.peer.port());
        let role = match a.role {
            None => true,
            Some(RoleFilter::Client) => r.role == Role::Client,
            Some(RoleFilter::Server) => r.role == Role::Server,
        };
        let outcome = match a.outcome {
            None => true,
            Some(OutcomeFilter::Tfo) => r.tfo_used,
            Some(OutcomeFilter::NoTfo) => !r.tfo_used,
            Some(OutcomeFilter::Reason(reason)) => r.fail_reason == Some(reason),
        };
        let process = a.process.as_ref().is_none_or(|name| r.process.as_ref() == Some(name));
        let pid = a.pid.is_none_or(|pid| r.pid == Some(pid));
        port && role && outcome && process && pid
    }

    /// The process of a connection, and how it was found: its own file (open
    /// at a read), the BPF probe (clients, at connect), the listener (servers).
    fn owner_of(&mut self, s: &DiagSocket, role: Role) -> (Option<(u32, String)>, Option<&'static str>) {
        let from_bpf = match (&self.owners, role) {
            (Some(owners), Role::Client) => owners.take(s.cookie).ok().flatten(),
            _ => None,
        };
        if let Some(owner) = self.processes.get(&s.inode).filter(|_| s.inode != 0) {
            return (Some(owner.clone()), Some("socket"));
        }
        if let Some(o) = from_bpf {
            // The process's name, as /proc says while it lives (the probe saw
            // the connecting thread's, which may be a worker's).
            let name = std::fs::read_to_string(format!("/proc/{}/comm", o.pid))
                .map(|n| n.trim().to_string())
                .unwrap_or(o.comm);
            return (Some((o.pid, name)), Some("bpf"));
        }
        if role == Role::Server {
            if let Some(owner) = self.listener_owners.get(&s.local.port()) {
                return (Some(owner.clone()), Some("listener"));
            }
        }
        (None, None)
    }

    /// Keeps what is known only for sockets that may still be seen, so a
    /// long watch of a busy host holds memory for its live sockets only.
    fn forget_gone(&mut self, sockets: &[DiagSocket]) {
        let now: HashSet<u64> = sockets.iter().map(|s| s.cookie).collect();
        let previous = std::mem::replace(&mut self.previous_read, now);
        self.reported.retain(|c| self.previous_read.contains(c) || previous.contains(c));
        let inodes: HashSet<u32> = sockets.iter().map(|s| s.inode).collect();
        self.processes.retain(|inode, _| inodes.contains(inode));
    }

    /// Maps the inodes of sockets not yet reported to their processes
    /// (`/proc/PID/fd/*` links read `socket:[INODE]`).
    fn find_processes(&mut self, sockets: &[DiagSocket]) {
        let wanted: HashSet<u32> = sockets
            .iter()
            .filter(|s| s.inode != 0 && !self.reported.contains(&s.cookie) && !self.processes.contains_key(&s.inode))
            .map(|s| s.inode)
            .collect();
        // Listeners outlive their connections: each names its port's server side.
        let listeners: HashMap<u32, u16> = sockets
            .iter()
            .filter(|s| s.state == TCP_LISTEN && s.inode != 0)
            .map(|s| (s.inode, s.local.port()))
            .collect();
        self.listener_owners.retain(|port, _| listeners.values().any(|p| p == port));
        let known_listeners = listeners.values().all(|p| self.listener_owners.contains_key(p));
        if wanted.is_empty() && known_listeners {
            return;
        }
        let Ok(procs) = std::fs::read_dir("/proc") else { return };
        for pid in procs.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
            for fd in fds.filter_map(|e| e.ok()) {
                let Ok(link) = std::fs::read_link(fd.path()) else { continue };
                let inode = link.to_str().and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok());
                let Some(inode) = inode else { continue };
                let name =
                    || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
                if let Some(port) = listeners.get(&inode) {
                    self.listener_owners.entry(*port).or_insert_with(|| (pid, name()));
                }
                if wanted.contains(&inode) {
                    self.processes.insert(inode, (pid, name()));
                }
            }
        }
    }
}

/// The cgroup v2 path of a live process (`0::/PATH` in /proc/PID/cgroup).
fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string)
}

/// The systemd unit (`nginx.service`) or container id (docker, containerd,
/// cri-o, podman: 64 hex digits) a cgroup path names.
fn unit_of(cgroup: &str) -> Option<String> {
    let parts: Vec<&str> = cgroup.split('/').filter(|p| !p.is_empty()).collect();
    for part in parts.iter().rev() {
        let stem = part.strip_suffix(".scope").unwrap_or(part);
        let id = stem.rsplit(['-', ':']).next().unwrap_or(stem);
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(id.to_string());
        }
    }
    parts.iter().rev().find(|p| p.ends_with(".service")).map(|p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_containers_from_cgroup_paths() {
        assert_eq!(unit_of("/system.slice/nginx.service").as_deref(), Some("nginx.service"));
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(unit_of(&format!("/system.slice/docker-{id}.scope")).as_deref(), Some(id));
        assert_eq!(
            unit_of(&format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope")).as_deref(),
            Some(id)
        );
        assert_eq!(unit_of("/user.slice/user-0.slice/session-3.scope"), None);
        assert_eq!(unit_of("/"), None);
    }

    #[test]
    fn outcome_filters() {
        assert_eq!(parse_outcome("tfo"), Ok(OutcomeFilter::Tfo));
        assert_eq!(parse_outcome("cookie_unavailable"), Ok(OutcomeFilter::Reason(FailReason::CookieUnavailable)));
        assert!(parse_outcome("sometimes").unwrap_err().contains("cookie_unavailable"));
    }
}
