//! `tfo watch`'s collection: the TFO outcome of every TCP connection of this
//! network namespace, each reported once when it is final, with the process
//! that made it; and the client's cookie cache. The sockets come from the
//! kernel's sock_diag (a dump per read, and the destroy notifications
//! between reads), the processes from the BPF probe at connect
//! (`fastopen::owners`), a socket's own file in /proc, or a server's
//! listener. Memory is held for live sockets only. The CLI filters, prints
//! and exports.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use fastopen::owners::{ConnectOwners, OwnersError};
use fastopen::sock_diag::{DestroyFeed, DiagSocket, Role, SockDiag, TCP_LISTEN};
use fastopen::tcp_metrics::{CachedDestination, TcpMetrics};
use fastopen::{FailReason, FastOpenMode};
use serde::Serialize;

/// `tcpi_state`s whose handshake is not over (the outcome is not final).
const SYN_SENT: u8 = 2;
/// A mini socket in TIME_WAIT: no tcp_info, and reported before if seen at all.
const TIME_WAIT: u8 = 6;

/// Why watching could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Kernel(#[from] fastopen::Error),
    #[error("tfo watch needs root (CAP_NET_ADMIN) to see connections that close between reads")]
    Feed(#[source] fastopen::Error),
    #[error("--backend bpf")]
    Bpf(#[source] OwnersError),
}

/// How processes are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// BPF if it loads, else sock_diag alone.
    Auto,
    /// BPF, or fail.
    Bpf,
    /// sock_diag alone: clients named while open at a read, servers by their listener.
    SockDiag,
}

/// One connection (`tfo watch --json`: the field names are a contract).
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionReport {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub role: Role,
    pub tfo_used: bool,
    pub fail_reason: Option<FailReason>,
    /// Server side: made on a cookie SYN without data (a client that reads first).
    pub cookie_only_syn: bool,
    pub pid: Option<u32>,
    pub process: Option<String>,
    /// The process's cgroup (v2 path), when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The systemd unit or container id the cgroup names, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// How the process was found: `bpf` (at connect), `socket` (its file,
    /// open at a read), `listener` (a server's listener); null if not found.
    pub named_by: Option<&'static str>,
    /// `open` (seen by a read while open) or `closed` (seen at its end only).
    pub seen: &'static str,
}

impl ConnectionReport {
    /// The outcome's name, as metrics label it: `tfo`, `cookie_only_syn`, a
    /// fail reason, or `no_tfo`.
    pub fn outcome_name(&self) -> &'static str {
        match (self.tfo_used, self.fail_reason) {
            (true, _) => "tfo",
            (false, _) if self.cookie_only_syn => "cookie_only_syn",
            (false, Some(reason)) => reason.as_str(),
            (false, None) => "no_tfo",
        }
    }
}

/// Which outcomes to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeFilter {
    Tfo,
    NoTfo,
    Reason(FailReason),
}

impl OutcomeFilter {
    /// `tfo`, `no_tfo`, or a fail reason's name.
    pub fn parse(text: &str) -> Result<OutcomeFilter, String> {
        match text {
            "tfo" => Ok(OutcomeFilter::Tfo),
            "no_tfo" => Ok(OutcomeFilter::NoTfo),
            _ => FailReason::ALL.iter().find(|r| r.as_str() == text).map(|r| OutcomeFilter::Reason(*r)).ok_or_else(
                || {
                    let names: Vec<&str> = FailReason::ALL.iter().map(|r| r.as_str()).collect();
                    format!("{text:?}: give tfo, no_tfo or a reason ({})", names.join(", "))
                },
            ),
        }
    }
}

/// Which connections to report (each field: keep all when empty or None).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// A local or peer port among these.
    pub ports: Vec<u16>,
    pub role: Option<Role>,
    pub outcome: Option<OutcomeFilter>,
    pub process: Option<String>,
    pub pid: Option<u32>,
}

impl Filter {
    pub fn wants(&self, r: &ConnectionReport) -> bool {
        let port = self.ports.is_empty() || self.ports.contains(&r.local.port()) || self.ports.contains(&r.peer.port());
        let role = self.role.is_none_or(|role| r.role == role);
        let outcome = match self.outcome {
            None => true,
            Some(OutcomeFilter::Tfo) => r.tfo_used,
            Some(OutcomeFilter::NoTfo) => !r.tfo_used,
            Some(OutcomeFilter::Reason(reason)) => r.fail_reason == Some(reason),
        };
        let process = self.process.as_ref().is_none_or(|name| r.process.as_ref() == Some(name));
        let pid = self.pid.is_none_or(|pid| r.pid == Some(pid));
        port && role && outcome && process && pid
    }
}

/// What the destroy notifications between two reads brought.
#[derive(Debug, Default)]
pub struct Closed {
    /// Connections seen only at their end.
    pub reports: Vec<ConnectionReport>,
    /// The kernel's queue overflowed: some connections were not seen.
    pub overflowed: bool,
}

/// The watch: what is known across reads.
#[derive(Debug)]
pub struct Collector {
    diag: SockDiag,
    feed: Option<DestroyFeed>,
    cache: TcpMetrics,
    owners: Option<ConnectOwners>,
    client_tfo: bool,
    /// Cookies of the sockets reported that may still show up: in the last
    /// two reads (a socket gone at one read has its notification read before
    /// the next), and not yet destroyed. Bounded by the sockets alive.
    reported: HashSet<u64>,
    /// Cookies in the previous read.
    previous_read: HashSet<u64>,
    /// The listeners of the last two reads (what `Role::of` needs).
    listeners: Vec<SocketAddr>,
    /// The listeners of the last read.
    last_listeners: Vec<SocketAddr>,
    processes: HashMap<u32, (u32, String)>,
    /// Listening port → the process of its listener.
    listener_owners: HashMap<u16, (u32, String)>,
    /// What /proc says of the processes named lately (pid → facts).
    process_facts: HashMap<u32, ProcessFacts>,
}

/// A process's name and cgroup as /proc gave them, kept for [`FACTS_FOR`]:
/// a process that makes many connections is read once, not per connection
/// (two /proc files each). A process renamed (exec) within that time is
/// shown by its former name.
#[derive(Debug)]
struct ProcessFacts {
    read_at: Instant,
    name: Option<String>,
    cgroup: Option<String>,
}

/// How long a process's facts are kept.
const FACTS_FOR: Duration = Duration::from_secs(1);
/// At this many processes' facts, the stale ones are dropped (memory stays bounded).
const FACTS_HELD: usize = 4096;

impl Collector {
    /// Opens the kernel's feeds. `follow`: also the destroy notifications
    /// (needs CAP_NET_ADMIN) and the BPF backend, for a watch over time
    /// (else one read). `notice` hears which backend runs and why, and a
    /// notification buffer smaller than asked.
    pub fn open(backend: Backend, follow: bool, notice: &mut dyn FnMut(String)) -> Result<Collector, WatchError> {
        let diag = SockDiag::open()?;
        let feed = if follow { Some(DestroyFeed::open().map_err(WatchError::Feed)?) } else { None };
        if let Some(granted) = feed.as_ref().and_then(|f| f.receive_buffer().ok()) {
            if granted < 8 << 20 {
                notice(format!(
                    "note: the notification buffer is {} KiB, not the 8 MiB asked (net.core.rmem_max caps it): bursts may be lost, and would be counted",
                    granted >> 10
                ));
            }
        }
        let cache = TcpMetrics::open()?;
        let owners = if follow { open_backend(backend, notice)? } else { None };
        Ok(Collector {
            diag,
            feed,
            cache,
            owners,
            client_tfo: true,
            reported: HashSet::new(),
            previous_read: HashSet::new(),
            listeners: Vec::new(),
            last_listeners: Vec::new(),
            processes: HashMap::new(),
            listener_owners: HashMap::new(),
            process_facts: HashMap::new(),
        })
    }

    /// Reads every socket; the connections whose outcome became final since
    /// the last read (each once).
    pub fn read(&mut self) -> Result<Vec<ConnectionReport>, WatchError> {
        self.client_tfo = fastopen::host::read_mode()?.client();
        let sockets = self.diag.dump()?;
        // This read's listeners and the last one's: a connection destroyed
        // with its server (seen only by its notification) keeps its role.
        let now: Vec<SocketAddr> = sockets.iter().filter(|s| s.state == TCP_LISTEN).map(|s| s.local).collect();
        let mut listeners = std::mem::replace(&mut self.last_listeners, now.clone());
        listeners.extend(now);
        listeners.sort_unstable();
        listeners.dedup();
        self.listeners = listeners;
        self.forget_gone(&sockets);
        self.find_processes(&sockets);
        Ok(sockets.iter().filter_map(|s| self.report(s, "open")).collect())
    }

    /// Waits up to `wait` for destroy notifications (none without `follow`:
    /// returns at once); the connections seen only at their end.
    pub fn closed(&mut self, wait: Duration) -> Result<Closed, WatchError> {
        let Some(feed) = self.feed.as_mut() else { return Ok(Closed::default()) };
        let destroyed = feed.recv(wait)?;
        let mut closed = Closed { reports: Vec::new(), overflowed: destroyed.overflowed };
        for s in &destroyed.sockets {
            // Its last word: reported now, or before and never again.
            if !self.reported.remove(&s.cookie) {
                closed.reports.extend(self.report(s, "closed"));
                self.reported.remove(&s.cookie);
            }
        }
        Ok(closed)
    }

    /// Whether destroy notifications are followed.
    pub fn follows(&self) -> bool {
        self.feed.is_some()
    }

    /// Destinations in the cookie cache with a cookie.
    pub fn cached_cookies(&mut self) -> Result<usize, WatchError> {
        Ok(self.cache.dump()?.iter().filter(|d| d.cookie.is_some()).count())
    }

    /// `s` as a report, once, when its outcome is final.
    fn report(&mut self, s: &DiagSocket, seen: &'static str) -> Option<ConnectionReport> {
        // A listener's own end (destroyed in CLOSE: its address, no peer) is
        // no connection. (An aborted connection's end may have no addresses
        // at all: it is one.)
        let listener_end = s.peer.port() == 0 && self.listeners.contains(&s.local);
        if matches!(s.state, TCP_LISTEN | TIME_WAIT | SYN_SENT) || listener_end || self.reported.contains(&s.cookie) {
            return None;
        }
        let role = Role::of(s, &self.listeners);
        let outcome = s.outcome(role, self.client_tfo)?;
        self.reported.insert(s.cookie);
        let (owner, named_by) = self.owner_of(s, role);
        let cgroup = owner.as_ref().and_then(|o| self.facts_of(o.0).cgroup.clone());
        Some(ConnectionReport {
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
        })
    }

    /// What /proc says of `pid`, read at most once per [`FACTS_FOR`].
    fn facts_of(&mut self, pid: u32) -> &ProcessFacts {
        let stale = self.process_facts.get(&pid).is_none_or(|f| f.read_at.elapsed() >= FACTS_FOR);
        if stale {
            if self.process_facts.len() >= FACTS_HELD {
                self.process_facts.retain(|_, f| f.read_at.elapsed() < FACTS_FOR);
            }
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|n| n.trim().to_string());
            self.process_facts.insert(pid, ProcessFacts { read_at: Instant::now(), name, cgroup: cgroup_of(pid) });
        }
        &self.process_facts[&pid]
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
            let name = self.facts_of(o.pid).name.clone().unwrap_or(o.comm);
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
        // Kept while a listener of the port was in the last two reads, as `listeners`.
        let ports: HashSet<u16> = self.listeners.iter().map(|l| l.port()).collect();
        self.listener_owners.retain(|port, _| ports.contains(port));
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

/// The BPF backend, if it is wanted and loads; `notice` hears which backend runs and why.
fn open_backend(backend: Backend, notice: &mut dyn FnMut(String)) -> Result<Option<ConnectOwners>, WatchError> {
    if backend == Backend::SockDiag {
        notice(
            "backend sock-diag (--backend): processes named for connections open at a read, servers by their listener"
                .into(),
        );
        return Ok(None);
    }
    match ConnectOwners::attach() {
        Ok(owners) => {
            notice("backend bpf: clients named at connect (a tp_btf program on inet_sock_set_state, detached at exit), servers by their listener".into());
            Ok(Some(owners))
        }
        Err(e) if backend == Backend::Bpf => Err(WatchError::Bpf(e)),
        Err(e) => {
            notice(format!("backend sock-diag, as BPF cannot be used ({e}): short client connections gone before a read stay unnamed"));
            Ok(None)
        }
    }
}

/// One destination of the cookie cache (`--cookies --json`: the field
/// names are a contract).
#[derive(Debug, Serialize)]
pub struct CachedDestinationReport {
    pub peer: IpAddr,
    pub source: Option<IpAddr>,
    /// The cookie in hex (it only lets this host's address skip a round trip).
    pub cookie: Option<String>,
    pub mss: Option<u16>,
    pub syn_drops: u16,
    pub age_ms: u128,
    /// The next TFO connection there carries data in its SYN.
    pub data_in_syn: bool,
    /// Why not: `client_disabled` or `cookie_unavailable`.
    pub fail_reason: Option<FailReason>,
}

/// The client's cookie cache, by destination and source.
pub fn cookie_cache() -> Result<Vec<CachedDestinationReport>, WatchError> {
    let mode = fastopen::host::read_mode()?;
    let mut destinations = TcpMetrics::open()?.dump()?;
    destinations.sort_by_key(|d| (d.peer, d.source));
    Ok(destinations.iter().map(|d| cached_destination(d, mode)).collect())
}

fn cached_destination(d: &CachedDestination, mode: FastOpenMode) -> CachedDestinationReport {
    let fail_reason = d.syn_data_verdict(mode);
    CachedDestinationReport {
        peer: d.peer,
        source: d.source,
        cookie: d.cookie.as_deref().map(fastopen_wire::options::hex),
        mss: d.mss,
        syn_drops: d.syn_drops,
        age_ms: d.age.as_millis(),
        data_in_syn: fail_reason.is_none(),
        fail_reason,
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
        assert_eq!(OutcomeFilter::parse("tfo"), Ok(OutcomeFilter::Tfo));
        assert_eq!(
            OutcomeFilter::parse("cookie_unavailable"),
            Ok(OutcomeFilter::Reason(FailReason::CookieUnavailable))
        );
        assert!(OutcomeFilter::parse("sometimes").unwrap_err().contains("cookie_unavailable"));
    }

    #[test]
    fn filters_keep_what_they_name() {
        let report = ConnectionReport {
            local: "127.0.0.1:40000".parse().unwrap(),
            peer: "127.0.0.1:8000".parse().unwrap(),
            role: Role::Client,
            tfo_used: false,
            fail_reason: Some(FailReason::CookieUnavailable),
            cookie_only_syn: false,
            pid: Some(7),
            process: Some("curl".into()),
            cgroup: None,
            unit: None,
            named_by: Some("bpf"),
            seen: "closed",
        };
        assert!(Filter::default().wants(&report));
        assert!(Filter { ports: vec![8000], ..Default::default() }.wants(&report));
        assert!(!Filter { ports: vec![9000], ..Default::default() }.wants(&report));
        assert!(!Filter { role: Some(Role::Server), ..Default::default() }.wants(&report));
        assert!(!Filter { outcome: Some(OutcomeFilter::Tfo), ..Default::default() }.wants(&report));
        let unavailable = OutcomeFilter::Reason(FailReason::CookieUnavailable);
        assert!(Filter { outcome: Some(unavailable), pid: Some(7), ..Default::default() }.wants(&report));
        assert!(!Filter { process: Some("wget".into()), ..Default::default() }.wants(&report));
        assert_eq!(report.outcome_name(), "cookie_unavailable");
    }
}
