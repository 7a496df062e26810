//! The engine of `tfo load`: a new connection per request, with TFO, plain or
//! both interleaved, closed-loop (C clients, each sending its next request
//! when the last is answered) or open-loop (a target rate; latency counted
//! from each request's intended start, so a stalled server cannot hide its
//! queue: no coordinated omission). Each reply is checked, each TFO outcome
//! counted by reason. Connections come from the library (`TfoStream`); TLS
//! is rustls through tokio-rustls, its ClientHello the first write, so in the
//! SYN; with early data (TLS 1.3 0-RTT on a resumed session) the request is
//! written into the handshake and rides in the SYN beside the ClientHello.
//!
//! Two engines run a plan: closed-loop plain HTTP and echo requests, the
//! bulk of any comparison with wrk, on `event_loop` (one mio loop per
//! thread, as wrk); TLS and open loop on tokio, here.

mod event_loop;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastopen::{Connector, TfoStream};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use fastopen_wire::http as http_reply;

pub use crate::failure::Failure;
use crate::latency::Series;

/// What each request is.
#[derive(Debug, Clone)]
pub enum Protocol {
    /// A line to an echo server (`tfo serve`), which must come back unchanged.
    Raw,
    /// `GET` with `Connection: close`; a 2xx with its whole body is correct.
    Http { host: String, path: String },
    /// The same over TLS; `early_data`: the request as TLS 1.3 early data
    /// whenever a session ticket allows it (the config keeps tickets).
    Https {
        host: String,
        path: String,
        tls: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        early_data: bool,
    },
}

/// Plain TCP or TFO, for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Tfo,
    Plain,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tfo => "tfo",
            Kind::Plain => "plain",
        }
    }
}

/// A run: where, how much, how.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    /// Clients at once (closed loop), or the most requests in flight (open loop).
    pub connections: usize,
    /// Requests in all (the run stops at this count or at `duration`).
    pub requests: u64,
    pub duration: Duration,
    /// Open loop: requests started per second.
    pub rate: Option<f64>,
    /// Request `i` is `kinds[i % kinds.len()]`.
    pub kinds: Vec<Kind>,
    /// Each request's deadline, connect to last reply byte.
    pub timeout: Duration,
    /// Worker threads (the machine's cores by default).
    pub threads: usize,
}

/// What requests of one kind got.
#[derive(Debug, Clone)]
pub struct KindStats {
    pub sent: u64,
    pub ok: u64,
    pub failures: BTreeMap<Failure, u64>,
    /// Requests whose data rode in the SYN (and was acknowledged).
    pub tfo_used: u64,
    /// Why the others' did not (the library's reasons).
    pub not_in_syn: BTreeMap<&'static str, u64>,
    /// HTTPS: what TLS resumption and early data did, answered requests only.
    pub tls: TlsCounts,
    /// From each request's start to its reply's last byte, correct replies only.
    pub latency: Series,
}

impl KindStats {
    fn new() -> KindStats {
        KindStats {
            sent: 0,
            ok: 0,
            failures: BTreeMap::new(),
            tfo_used: 0,
            not_in_syn: BTreeMap::new(),
            tls: TlsCounts::default(),
            latency: Series::compact(),
        }
    }

    fn merge(&mut self, other: &KindStats) {
        self.sent += other.sent;
        self.ok += other.ok;
        for (k, v) in &other.failures {
            *self.failures.entry(*k).or_default() += v;
        }
        self.tfo_used += other.tfo_used;
        for (k, v) in &other.not_in_syn {
            *self.not_in_syn.entry(k).or_default() += v;
        }
        self.tls.merge(&other.tls);
        self.latency.merge(&other.latency);
    }

    /// Requests that got no correct reply (those cancelled at the run's end aside).
    pub fn errors(&self) -> u64 {
        self.failures.iter().filter(|(f, _)| **f != Failure::Cancelled).map(|(_, n)| n).sum()
    }

    /// Requests in flight when the run ended (its --duration, or Ctrl-C).
    pub fn cancelled(&self) -> u64 {
        self.failures.get(&Failure::Cancelled).copied().unwrap_or(0)
    }
}

/// What TLS did for one answered HTTPS request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsFate {
    /// The handshake resumed a session (a ticket from an earlier connection).
    pub resumed: bool,
    /// `None` when early data was not asked for.
    pub early_data: Option<EarlyData>,
}

/// What became of a request that could have gone as TLS early data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyData {
    /// Sent as early data (with the ClientHello, in the SYN when TFO carried
    /// it) and the server took it.
    Accepted,
    /// Sent as early data, refused by the server: sent again after the handshake.
    Rejected,
    /// Not sent as early data, and why: `no_ticket` (no session to resume
    /// yet), `server_allows_none` (the server's ticket allows no early data).
    NotSent(&'static str),
}

/// TLS resumption and early data over many requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsCounts {
    /// HTTPS requests answered.
    pub handshakes: u64,
    pub resumed: u64,
    pub early_data_sent: u64,
    pub early_data_accepted: u64,
    /// Why the others were not sent as early data (when it was asked for).
    pub early_data_not_sent: BTreeMap<&'static str, u64>,
}

impl TlsCounts {
    fn count(&mut self, fate: TlsFate) {
        self.handshakes += 1;
        self.resumed += u64::from(fate.resumed);
        match fate.early_data {
            None => {}
            Some(EarlyData::Accepted) => {
                self.early_data_sent += 1;
                self.early_data_accepted += 1;
            }
            Some(EarlyData::Rejected) => self.early_data_sent += 1,
            Some(EarlyData::NotSent(why)) => *self.early_data_not_sent.entry(why).or_default() += 1,
        }
    }

    fn merge(&mut self, other: &TlsCounts) {
        self.handshakes += other.handshakes;
        self.resumed += other.resumed;
        self.early_data_sent += other.early_data_sent;
        self.early_data_accepted += other.early_data_accepted;
        for (k, v) in &other.early_data_not_sent {
            *self.early_data_not_sent.entry(k).or_default() += v;
        }
    }
}

/// A finished run.
#[derive(Debug)]
pub struct Outcome {
    pub by_kind: BTreeMap<Kind, KindStats>,
    pub elapsed: Duration,
    /// The run ended early (Ctrl-C, SIGTERM).
    pub interrupted: bool,
}

impl Outcome {
    /// Every kind together.
    pub fn total(&self) -> KindStats {
        let mut all = KindStats::new();
        self.by_kind.values().for_each(|s| all.merge(s));
        all
    }
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A worker thread or its runtime could not be started.
    #[error("cannot start the load threads")]
    Start(#[source] std::io::Error),
    /// A worker's event loop failed (epoll itself, not a connection).
    #[error("a load thread's event loop failed")]
    EventLoop(#[source] std::io::Error),
    /// A worker panicked (a bug: its counts are lost).
    #[error("a load thread panicked")]
    Panicked,
}

/// Live counts, for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

/// Runs `plan` to its end: its count, or its duration (a bound on the whole
/// run: requests in flight then are cancelled and counted as such), or
/// `cancel` (Ctrl-C: the same, at once).
pub fn run(plan: Plan, progress: Arc<Progress>, cancel: fastopen::Cancel) -> Result<Outcome, LoadError> {
    // One single-threaded runtime per worker thread, each with its share of
    // the clients (as wrk's threads, each its own event loop): no task moves
    // between threads, and no wake-up crosses one, per request.
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads = plan.threads.max(1).min(plan.connections.max(1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (plan, next, progress, cancel) = (plan.clone(), next.clone(), progress.clone(), cancel.clone());
            // Clients t, t + threads, t + 2 * threads, ...
            let clients = (t..plan.connections.max(1)).step_by(threads).count();
            std::thread::Builder::new().name(format!("load-{t}")).spawn(
                move || -> Result<BTreeMap<Kind, KindStats>, LoadError> {
                    if event_loop::serves(&plan) {
                        return event_loop::run_thread(&plan, clients, &next, started, &progress, &cancel)
                            .map_err(LoadError::EventLoop);
                    }
                    let runtime =
                        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(LoadError::Start)?;
                    // The thread's clients count into one set of stats (one
                    // histogram per kind, warm in the cache), as local tasks.
                    let stats = ThreadStats::default();
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&runtime, async {
                        let tasks: Vec<_> = (0..clients)
                            .map(|_| {
                                tokio::task::spawn_local(client(
                                    plan.clone(),
                                    next.clone(),
                                    started,
                                    progress.clone(),
                                    cancel.clone(),
                                    stats.clone(),
                                ))
                            })
                            .collect();
                        for task in tasks {
                            task.await.map_err(|_| LoadError::Panicked)?;
                        }
                        Ok::<_, LoadError>(())
                    })?;
                    Ok(stats.take())
                },
            )
        })
        .collect::<Result<_, _>>()
        .map_err(LoadError::Start)?;
    let mut by_kind: BTreeMap<Kind, KindStats> = BTreeMap::new();
    for worker in workers {
        for (kind, s) in worker.join().map_err(|_| LoadError::Panicked)?? {
            by_kind.entry(kind).or_insert_with(KindStats::new).merge(&s);
        }
    }
    let elapsed = started.elapsed();
    Ok(Outcome { by_kind, elapsed, interrupted: cancel.is_cancelled() })
}

/// What the clients of one thread counted, by kind (shared by its local
/// tasks; never borrowed across an await).
#[derive(Debug, Clone, Default)]
struct ThreadStats(std::rc::Rc<std::cell::RefCell<BTreeMap<Kind, KindStats>>>);

impl ThreadStats {
    /// Runs `f` on the stats of `kind`.
    fn with<R>(&self, kind: Kind, f: impl FnOnce(&mut KindStats) -> R) -> R {
        f(self.0.borrow_mut().entry(kind).or_insert_with(KindStats::new))
    }

    fn take(&self) -> BTreeMap<Kind, KindStats> {
        std::mem::take(&mut self.0.borrow_mut())
    }
}

/// One client: takes the next request number until the run ends.
async fn client(
    plan: Arc<Plan>,
    next: Arc<AtomicU64>,
    started: Instant,
    progress: Arc<Progress>,
    cancel: fastopen::Cancel,
    stats: ThreadStats,
) {
    let end = started + plan.duration;
    // The run's end: its duration, or Ctrl-C, whichever comes first. One
    // future for the client's whole life, polled beside each request: its
    // timer and its wake-up are registered once, not once per request.
    let run_over = async {
        tokio::select! {
            () = tokio::time::sleep_until(end.into()) => {}
            () = cancel.cancelled() => {}
        }
    };
    tokio::pin!(run_over);
    // Each request's deadline: one timer for the client's life, moved on per
    // request (a new timer per request cost 0.5 us of CPU each).
    let request_timer = tokio::time::sleep_until(started.into());
    tokio::pin!(request_timer);
    let mut template = None;
    // Progress is told in batches: two counters shared by every thread,
    // touched once per request, would bounce their cache line between cores.
    let (mut done, mut failed) = (0u64, 0u64);
    let flush = |done: &mut u64, failed: &mut u64| {
        progress.done.fetch_add(std::mem::take(done), Ordering::Relaxed);
        progress.failed.fetch_add(std::mem::take(failed), Ordering::Relaxed);
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        // One clock read per request in closed loop: it is the end's check,
        // the start and the deadline's base.
        let now = Instant::now();
        if i >= plan.requests || cancel.is_cancelled() || now >= end {
            break;
        }
        let (start, sent_at) = match plan.rate {
            Some(rate) => {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                if due >= end {
                    // The schedule has nothing more within the duration: the
                    // run still lasts it (a rate is requests per second of it).
                    (&mut run_over).await;
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    () = cancel.cancelled() => break,
                }
                (due, Instant::now())
            }
            None => (now, now),
        };
        if start >= end {
            break;
        }
        let kind = plan.kinds[(i % plan.kinds.len() as u64) as usize];
        stats.with(kind, |s| s.sent += 1);
        let deadline = sent_at + plan.timeout;
        let mut over = false;
        request_timer.as_mut().reset(deadline.into());
        let result = tokio::select! {
            biased;
            r = request(&plan, kind, i, &mut template) => r,
            () = &mut request_timer => Err(Failure::Timeout),
            () = &mut run_over => {
                // Done: never polled again.
                over = true;
                Err(Failure::Cancelled)
            }
        };
        let answered = result.is_ok();
        stats.with(kind, |s| record(s, result, start));
        failed += u64::from(!answered);
        done += 1;
        if done == PROGRESS_BATCH || failed > 0 {
            flush(&mut done, &mut failed);
        }
        if over {
            break;
        }
    }
    flush(&mut done, &mut failed);
}

/// Requests a client answers before it adds them to the shared progress.
const PROGRESS_BATCH: u64 = 16;

/// Whether a request's data rode in the SYN, or the library's reason why not.
fn in_syn(outcome: Option<&fastopen::ClientOutcome>) -> Result<(), &'static str> {
    match outcome {
        Some(o) if o.tfo_used() => Ok(()),
        Some(o) => Err(o.fail_reason.map_or("unknown", |r| r.as_str())),
        None => Err("unknown"),
    }
}

/// Counts one request's result; a correct reply's latency runs from `start`.
fn record(s: &mut KindStats, result: Result<Answered, Failure>, start: Instant) {
    match result {
        Ok(Answered { in_syn, tls }) => {
            s.ok += 1;
            if let Some(fate) = tls {
                s.tls.count(fate);
            }
            match in_syn {
                Ok(()) => s.tfo_used += 1,
                Err(reason) => *s.not_in_syn.entry(reason).or_default() += 1,
            }
            s.latency.record(start.elapsed());
        }
        Err(failure) => *s.failures.entry(failure).or_default() += 1,
    }
}

/// A correct reply: whether the request's data rode in the SYN (`Err`: the
/// library's reason why not) and, over TLS, what resumption and early data did.
struct Answered {
    in_syn: Result<(), &'static str>,
    tls: Option<TlsFate>,
}

/// One request on a new connection.
async fn request(plan: &Plan, kind: Kind, i: u64, template: &mut Option<RequestTemplate>) -> Result<Answered, Failure> {
    // TCP_NODELAY for TLS: it writes its Finished and then the request; with
    // Nagle the request waits for the Finished's ACK, a round trip (two
    // without TFO). A plain request is one write: no option to set.
    let tls = matches!(plan.protocol, Protocol::Https { .. });
    let connector = Connector::new().tfo(kind == Kind::Tfo).connect_timeout(Some(plan.timeout)).nodelay(tls);
    let stream = TfoStream::to_addrs(connector, vec![plan.addr]).map_err(|e| Failure::of(&e))?;
    let outcome_of = |s: &TfoStream| in_syn(s.outcome());
    match &plan.protocol {
        Protocol::Raw => {
            let line = format!("tfo load {i}\n");
            let mut stream = stream;
            let end = ReplyEnd::Echo(line.len());
            let (reply, whole) = exchange(&mut stream, line.as_bytes(), true, end).await?;
            check_reply(end, &reply, whole, line.as_bytes())?;
            Ok(Answered { in_syn: outcome_of(&stream), tls: None })
        }
        Protocol::Http { host, path } => {
            let req = template.get_or_insert_with(|| RequestTemplate::new(host, path)).request(i);
            let mut stream = stream;
            let (reply, whole) = exchange(&mut stream, req.as_bytes(), false, ReplyEnd::Http).await?;
            check_reply(ReplyEnd::Http, &reply, whole, req.as_bytes())?;
            Ok(Answered { in_syn: outcome_of(&stream), tls: None })
        }
        Protocol::Https { host, path, tls, server_name, early_data } => {
            let req = template.get_or_insert_with(|| RequestTemplate::new(host, path)).request(i);
            // With early data and a ticket that allows it, the connect returns
            // at once and the request is written into the handshake: tokio-rustls
            // sends it with the ClientHello (one write: the SYN's data), and again
            // after the handshake if the server refuses it.
            let connector = tokio_rustls::TlsConnector::from(tls.clone()).early_data(*early_data);
            let mut tls_stream =
                connector.connect(server_name.clone(), stream).await.map_err(|e| match Failure::of(&e) {
                    Failure::Other => Failure::Tls,
                    f => f,
                })?;
            let offered = *early_data && tls_stream.get_mut().1.early_data().is_some_and(|e| e.bytes_left() > 0);
            let (reply, whole) = exchange(&mut tls_stream, req.as_bytes(), false, ReplyEnd::Http).await?;
            check_reply(ReplyEnd::Http, &reply, whole, req.as_bytes())?;
            let (stream, conn) = tls_stream.get_ref();
            let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            let early = early_data.then(|| match (offered, conn.is_early_data_accepted()) {
                (true, true) => EarlyData::Accepted,
                (true, false) => EarlyData::Rejected,
                (false, _) if resumed => EarlyData::NotSent("server_allows_none"),
                (false, _) => EarlyData::NotSent("no_ticket"),
            });
            let answered = Answered { in_syn: outcome_of(stream), tls: Some(TlsFate { resumed, early_data: early }) };
            if *early_data {
                // The server's session tickets may come after the reply (after
                // our Finished): read them in the background, so the next
                // connections can resume, without timing them into this one.
                // A local task, queued with the clients in order: a task on
                // the runtime's own queue would wait behind every client of
                // the LocalSet, and the next connection would find no ticket.
                tokio::task::spawn_local(read_tickets(tls_stream, plan.timeout.min(TICKET_WAIT)));
            }
            Ok(answered)
        }
    }
}

/// The longest a finished HTTPS connection stays open for session tickets.
const TICKET_WAIT: Duration = Duration::from_secs(1);

/// Reads what the server still sends after the reply (its session tickets,
/// taken into the client's store as they come) until it closes, or `wait`.
async fn read_tickets<S: AsyncRead + Unpin>(mut stream: S, wait: Duration) {
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(wait, async { while let Ok(1..) = stream.read(&mut sink).await {} }).await;
}

/// When a reply is whole, so the request is timed to its last byte and not
/// to the server's FIN (a TFO server's FIN waits for the client's ACK, one
/// round trip after the reply).
#[derive(Debug, Clone, Copy)]
enum ReplyEnd {
    /// An echo: as many bytes as were sent.
    Echo(usize),
    /// HTTP: the head and `Content-Length` bytes of body (or the close, without one).
    Http,
}

/// A reply longer than this is wrong (a hostile or broken server).
const MAX_REPLY: usize = 16 << 20;

impl ReplyEnd {
    /// `None` while more is needed; once whole, `Some` with an HTTP reply's
    /// status and parts (parsed once: the check reuses them).
    fn complete(self, reply: &[u8]) -> Option<Option<http_reply::Whole>> {
        match self {
            ReplyEnd::Echo(len) => (reply.len() >= len).then_some(None),
            ReplyEnd::Http => match http_reply::read(reply, false) {
                http_reply::Reply::Whole(whole) => Some(Some(whole)),
                _ => None,
            },
        }
    }
}

/// Writes `data`, ends the writing side if `half_close`, and reads until the
/// reply is whole or the server closes.
/// A TLS peer that closes without close_notify after a reply is not an error.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    data: &[u8],
    half_close: bool,
    end: ReplyEnd,
) -> Result<(Vec<u8>, Option<http_reply::Whole>), Failure> {
    s.write_all(data).await.map_err(|e| Failure::of(&e))?;
    // TLS early data leaves (and the handshake starts) at the flush.
    s.flush().await.map_err(|e| Failure::of(&e))?;
    if half_close {
        s.shutdown().await.map_err(|e| Failure::of(&e))?;
    }
    // Read straight into `reply`: a buffer array here would be copied with
    // this future on every request.
    let mut reply = Vec::with_capacity(4096);
    loop {
        if reply.capacity() - reply.len() < 1024 {
            reply.reserve(4096);
        }
        match s.read_buf(&mut reply).await {
            Ok(0) => return Ok((reply, None)),
            Ok(_) if reply.len() > MAX_REPLY => return Err(Failure::WrongReply),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => return Ok((reply, None)),
            Err(e) => return Err(Failure::of(&e)),
        }
        if let Some(whole) = end.complete(&reply) {
            return Ok((reply, whole));
        }
    }
}

/// The `GET` of a run, made once (`request_head`) and cut around its request
/// number (`X-Tfo-Load: N`, so that an echoing server's reply is checked as
/// this request's and no other's): each request is two copies and a number.
#[derive(Debug, Clone)]
struct RequestTemplate {
    before: String,
    after: String,
}

impl RequestTemplate {
    const MARK: &'static str = "\r\nX-Tfo-Load: 0\r\n";

    fn new(host: &str, path: &str) -> RequestTemplate {
        let head =
            http_reply::request_head("GET", path, host, "tfo-load", &[("X-Tfo-Load", "0"), ("Connection", "close")]);
        // request_head drops CR and LF from host and path: the mark, a line of
        // its own, is found exactly once.
        match head.find(Self::MARK) {
            Some(at) => {
                let (before, after) = head.split_at(at + Self::MARK.len() - 3);
                RequestTemplate { before: before.to_string(), after: after.get(1..).unwrap_or_default().to_string() }
            }
            // Not reached (request_head writes the line); the head as it is.
            None => RequestTemplate { before: head, after: String::new() },
        }
    }

    fn request(&self, i: u64) -> String {
        let mut out = Vec::with_capacity(self.before.len() + self.after.len() + 20);
        self.write_into(i, &mut out);
        // Two strings and a number: UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends request `i` to `out`.
    fn write_into(&self, i: u64, out: &mut Vec<u8>) {
        use std::io::Write;
        out.extend_from_slice(self.before.as_bytes());
        let _ = write!(out, "{i}");
        out.extend_from_slice(self.after.as_bytes());
    }
}

/// A correct reply to `request`: for an echo, the request itself; for HTTP,
/// see [`check_http`].
fn check_reply(end: ReplyEnd, reply: &[u8], whole: Option<http_reply::Whole>, request: &[u8]) -> Result<(), Failure> {
    match end {
        ReplyEnd::Echo(_) if reply == request => Ok(()),
        ReplyEnd::Echo(_) => Err(Failure::WrongReply),
        ReplyEnd::Http => check_http(reply, whole, request),
    }
}

/// A correct reply: 2xx, the whole body (by its length, its last chunk or
/// the close), and, from a server that echoes requests (`tfo serve --http`),
/// this very request. `reply` is all that came before the close or the end;
/// `known`, its parts when they were found whole before the close.
fn check_http(reply: &[u8], known: Option<http_reply::Whole>, request: &[u8]) -> Result<(), Failure> {
    let whole = match known {
        Some(whole) => whole,
        None => match http_reply::read(reply, true) {
            http_reply::Reply::Whole(whole) => whole,
            _ => return Err(Failure::WrongReply),
        },
    };
    if !(200..300).contains(&whole.code) {
        return Err(Failure::HttpStatus);
    }
    let body = reply.get(whole.body.0..whole.body.1).unwrap_or_default();
    if body.starts_with(b"GET ") && body != request {
        return Err(Failure::WrongReply);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `GET` that names its request number, so an echoing server's reply is
    /// this request's and no other's.
    fn http_request(host: &str, path: &str, i: u64) -> String {
        RequestTemplate::new(host, path).request(i)
    }

    #[test]
    fn http_replies_are_checked() {
        let req = http_request("h", "/", 7);
        let ok = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{req}", req.len());
        assert_eq!(check_http(ok.as_bytes(), None, req.as_bytes()), Ok(()));
        let parsed = ReplyEnd::Http.complete(ok.as_bytes()).flatten();
        assert!(parsed.is_some());
        assert_eq!(check_http(ok.as_bytes(), parsed, req.as_bytes()), Ok(()), "the parts found while reading");
        let other = http_request("h", "/", 8);
        let wrong = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{other}", other.len());
        assert_eq!(
            check_http(wrong.as_bytes(), None, req.as_bytes()),
            Err(Failure::WrongReply),
            "another request's echo"
        );
        assert_eq!(check_http(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi", None, b""), Err(Failure::WrongReply));
        assert_eq!(check_http(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", None, b""), Ok(()));
        assert_eq!(check_http(b"HTTP/1.1 503 Busy\r\n\r\n", None, b""), Err(Failure::HttpStatus));
        assert_eq!(check_http(b"HTTP/1.1 200", None, b""), Err(Failure::WrongReply), "cut head");
        assert_eq!(check_http(b"\xff\x00garbage\r\n\r\n", None, b""), Err(Failure::WrongReply));
        let hints = b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(check_http(hints, None, b""), Ok(()), "103 Early Hints before a good 200");
        let negative = b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(check_http(negative, None, b""), Err(Failure::WrongReply));
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
        assert_eq!(check_http(cut, None, b""), Err(Failure::WrongReply), "a truncated chunked body");
    }

    #[test]
    fn the_template_makes_the_same_request_as_request_head() {
        for i in [0, 7, 12345, u64::MAX] {
            let whole = http_reply::request_head(
                "GET",
                "/p?q",
                "h:1",
                "tfo-load",
                &[("X-Tfo-Load", &i.to_string()), ("Connection", "close")],
            );
            assert_eq!(RequestTemplate::new("h:1", "/p?q").request(i), whole);
        }
        // A host that tries to look like the mark cannot: CR and LF are dropped.
        let t = RequestTemplate::new("xX-Tfo-Load: 0\r\n", "/");
        let request = t.request(5);
        assert!(
            request.contains("\r\nHost: xX-Tfo-Load: 0\r\n") && request.contains("\r\nX-Tfo-Load: 5\r\n"),
            "{request}"
        );
    }

    #[test]
    fn a_reply_is_whole_at_its_last_byte_not_at_the_close() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        assert!(ReplyEnd::Http.complete(ok).is_some());
        assert!(ReplyEnd::Http.complete(&ok[..ok.len() - 1]).is_none(), "a byte of the body missing");
        assert!(ReplyEnd::Http.complete(&ok[..10]).is_none(), "a cut head");
        assert!(ReplyEnd::Http.complete(b"HTTP/1.1 200 OK\r\n\r\nhi").is_none(), "no length: only the close ends it");
        assert!(ReplyEnd::Http.complete(b"\xff\x00garbage\r\n\r\n").is_none());
        assert!(ReplyEnd::Echo(3).complete(b"abc").is_some() && ReplyEnd::Echo(3).complete(b"ab").is_none());
    }

    #[test]
    fn stats_merge() {
        let mut a = KindStats::new();
        let mut b = KindStats::new();
        (a.sent, a.ok, a.tfo_used) = (3, 2, 1);
        a.failures.insert(Failure::Reset, 1);
        b.not_in_syn.insert("cookie_unavailable", 1);
        b.failures.insert(Failure::Reset, 2);
        b.latency.record(Duration::from_micros(100));
        a.merge(&b);
        assert_eq!((a.sent, a.ok, a.tfo_used, a.errors()), (3, 2, 1, 3));
        assert_eq!(a.not_in_syn["cookie_unavailable"], 1);
        assert_eq!(a.latency.len(), 1);
    }
}
