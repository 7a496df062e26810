//! The closed-loop engine of `tfo load` for plain HTTP and echo requests,
//! built as wrk is: one event loop per thread (mio: epoll, edge-triggered),
//! each client a small state machine (connecting, writing, reading) woken by
//! its socket's readiness, its buffers kept from one request to the next.
//! No task, waker, timer wheel or allocation per request: deadlines are
//! checked by a sweep of the thread's clients a few times per timeout. TLS
//! and open loop (a target rate) stay on the tokio engine (`load.rs`).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fastopen::{Connector, PendingConnect};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::{record, Answered, Kind, KindStats, Plan, Progress, Protocol, ReplyEnd, RequestTemplate, PROGRESS_BATCH};
use crate::failure::Failure;

/// The token of the cancellation's descriptor (clients are numbered from 0).
const CANCEL: Token = Token(usize::MAX);

/// Events taken from the kernel per wait.
const EVENTS: usize = 256;

/// Whether this engine can run `plan` (plain HTTP or echo, closed loop).
pub(super) fn serves(plan: &Plan) -> bool {
    plan.rate.is_none() && matches!(plan.protocol, Protocol::Raw | Protocol::Http { .. })
}

/// One thread's share of the run: `clients` closed-loop clients until the
/// request count, the run's end or `cancel`.
pub(super) fn run_thread(
    plan: &Plan,
    clients: usize,
    next: &AtomicU64,
    started: Instant,
    progress: &Progress,
    cancel: &fastopen::Cancel,
) -> io::Result<BTreeMap<Kind, KindStats>> {
    let mut poll = Poll::new()?;
    poll.registry().register(&mut SourceFd(&cancel.fd().as_raw_fd()), CANCEL, Interest::READABLE)?;
    let template = match &plan.protocol {
        Protocol::Http { host, path } => Some(RequestTemplate::new(host, path)),
        _ => None,
    };
    let mut thread = Thread {
        plan,
        next,
        end: started + plan.duration,
        template,
        connectors: [Kind::Tfo, Kind::Plain]
            .map(|kind| Connector::new().tfo(kind == Kind::Tfo).connect_timeout(Some(plan.timeout))),
        stats: BTreeMap::new(),
        progress,
        done: 0,
        failed: 0,
        over: false,
        in_flight: 0,
    };
    let mut clients: Vec<Client> = (0..clients).map(|_| Client::new()).collect();
    // Clients whose next request is to start at the loop's next turn: each
    // one's, once per turn, so a request that fails at once (no port, no
    // descriptor left) cannot keep the others' events waiting.
    let mut to_start: Vec<usize> = (0..clients.len()).collect();
    // Deadlines are swept, not timed one by one: a request times out between
    // its deadline and a twentieth of the timeout after it.
    let sweep_every = (plan.timeout / 20).clamp(Duration::from_millis(1), Duration::from_millis(50));
    let mut next_sweep = Instant::now() + sweep_every;
    let mut events = Events::with_capacity(EVENTS);
    let mut starting = Vec::new();
    loop {
        for c in std::mem::take(&mut to_start) {
            if thread.start(&poll, Token(c), &mut clients[c]) == Start::Failed {
                starting.push(c);
            }
        }
        std::mem::swap(&mut to_start, &mut starting);
        if thread.in_flight == 0 && to_start.is_empty() {
            break;
        }
        let now = Instant::now();
        if cancel.is_cancelled() || now >= thread.end {
            thread.over = true;
            for client in clients.iter_mut().filter(|c| c.busy()) {
                thread.finish(client, Err(Failure::Cancelled));
            }
            break;
        }
        if now >= next_sweep {
            for (c, client) in clients.iter_mut().enumerate() {
                if client.busy() && client.deadline <= now {
                    thread.finish(client, Err(Failure::Timeout));
                    to_start.push(c);
                }
            }
            next_sweep = now + sweep_every;
        }
        let wait = match to_start.is_empty() {
            true => next_sweep.min(thread.end).saturating_duration_since(now),
            false => Duration::ZERO,
        };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            let token = event.token();
            let Some(client) = clients.get_mut(token.0) else { continue };
            if let Some(result) = client.drive(event, &thread.connectors) {
                thread.finish(client, result);
                to_start.push(token.0);
            }
        }
    }
    thread.flush();
    Ok(thread.stats)
}

/// What a thread shares among its clients.
struct Thread<'a> {
    plan: &'a Plan,
    next: &'a AtomicU64,
    end: Instant,
    template: Option<RequestTemplate>,
    /// By kind: TFO, plain.
    connectors: [Connector; 2],
    stats: BTreeMap<Kind, KindStats>,
    progress: &'a Progress,
    /// Requests finished (failed) since progress was last told.
    done: u64,
    failed: u64,
    /// The run is over: no new request starts.
    over: bool,
    /// Clients with a request in flight.
    in_flight: usize,
}

/// What became of a client's next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Its SYN left.
    Started,
    /// It failed at once (counted); the client tries its next one later.
    Failed,
    /// The run has none left for it.
    Done,
}

impl Thread<'_> {
    /// Starts the client's next request, if the run has one.
    fn start(&mut self, poll: &Poll, token: Token, client: &mut Client) -> Start {
        if self.over {
            return Start::Done;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if i >= self.plan.requests || now >= self.end {
            return Start::Done;
        }
        let kind = self.plan.kinds[(i % self.plan.kinds.len() as u64) as usize];
        self.stats.entry(kind).or_insert_with(KindStats::new).sent += 1;
        client.prepare(self.plan, self.template.as_ref(), kind, i, now);
        let connector = &self.connectors[kind as usize];
        let started = connector.start_connect(self.plan.addr, &client.request).map_err(|e| Failure::of_connect(&e));
        let registered = started.and_then(|pending| {
            let fd = pending.as_fd().as_raw_fd();
            let interest = Interest::READABLE | Interest::WRITABLE;
            poll.registry().register(&mut SourceFd(&fd), token, interest).map_err(|e| Failure::of(&e))?;
            Ok(pending)
        });
        match registered {
            Ok(pending) => {
                client.sent = pending.written();
                client.state = State::Connecting(pending);
                client.in_flight = true;
                self.in_flight += 1;
                Start::Started
            }
            Err(failure) => {
                self.finish(client, Err(failure));
                Start::Failed
            }
        }
    }

    /// Counts the client's request as `result` and closes its connection.
    fn finish(&mut self, client: &mut Client, result: Result<Answered, Failure>) {
        if client.busy() {
            self.in_flight -= 1;
        }
        client.in_flight = false;
        client.state = State::Idle;
        let failed = result.is_err();
        record(self.stats.entry(client.kind).or_insert_with(KindStats::new), result, client.start);
        self.failed += u64::from(failed);
        self.done += 1;
        if self.done == PROGRESS_BATCH || self.failed > 0 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.progress.done.fetch_add(std::mem::take(&mut self.done), Ordering::Relaxed);
        self.progress.failed.fetch_add(std::mem::take(&mut self.failed), Ordering::Relaxed);
    }
}

/// Where a client's request is.
enum State {
    /// None in flight.
    Idle,
    /// The SYN left (with the request's first bytes when TFO took them).
    Connecting(PendingConnect),
    /// Connected: writing the rest, then reading the reply.
    Open { stream: TcpStream, in_syn: Result<(), &'static str> },
}

/// One closed-loop client and its request in flight.
struct Client {
    state: State,
    /// Its request is started and not yet counted.
    in_flight: bool,
    kind: Kind,
    start: Instant,
    deadline: Instant,
    /// The request, and how much of it the kernel has.
    request: Vec<u8>,
    sent: usize,
    /// The reply so far: `reply[..filled]` (the rest is room, kept zeroed
    /// once, not per request).
    reply: Vec<u8>,
    filled: usize,
    end: ReplyEnd,
    half_close: bool,
}

/// Room added to a reply buffer when it is full.
const REPLY_CHUNK: usize = 4096;
/// A reply buffer grown past this (by a large reply, up to 16 MiB) is given
/// back before the next request: clients keep small buffers, not their
/// largest reply's.
const KEEP_REPLY: usize = 64 << 10;

impl Client {
    fn new() -> Client {
        let now = Instant::now();
        Client {
            state: State::Idle,
            in_flight: false,
            kind: Kind::Plain,
            start: now,
            deadline: now,
            request: Vec::with_capacity(256),
            sent: 0,
            reply: vec![0; REPLY_CHUNK],
            filled: 0,
            end: ReplyEnd::Http,
            half_close: false,
        }
    }

    /// A request of this client is in flight (whatever its socket's state:
    /// a failed connect leaves no socket, and is not counted yet).
    fn busy(&self) -> bool {
        self.in_flight
    }

    /// Request `i`, of `kind`, starting `now`.
    fn prepare(&mut self, plan: &Plan, template: Option<&RequestTemplate>, kind: Kind, i: u64, now: Instant) {
        self.kind = kind;
        self.start = now;
        self.deadline = now + plan.timeout;
        self.filled = 0;
        if self.reply.len() > KEEP_REPLY {
            self.reply = vec![0; REPLY_CHUNK];
        }
        self.sent = 0;
        self.request.clear();
        match template {
            Some(template) => {
                template.write_into(i, &mut self.request);
                self.end = ReplyEnd::Http;
                self.half_close = false;
            }
            None => {
                let _ = writeln!(self.request, "tfo load {i}");
                self.end = ReplyEnd::Echo(self.request.len());
                self.half_close = true;
            }
        }
    }

    /// Moves the request on after `event`; `Some` once it has its result.
    fn drive(&mut self, event: &mio::event::Event, connectors: &[Connector; 2]) -> Option<Result<Answered, Failure>> {
        if let State::Connecting(_) = self.state {
            // Nothing is reported on a socket whose SYN is unanswered: any
            // event means the handshake is over (connected, or failed).
            let State::Connecting(pending) = std::mem::replace(&mut self.state, State::Idle) else { return None };
            match connectors[self.kind as usize].finish_connect(pending) {
                Ok((stream, outcome)) => {
                    self.state = State::Open { stream, in_syn: super::in_syn(Some(&outcome)) };
                    if let Err(failure) = self.write_rest() {
                        return Some(Err(failure));
                    }
                }
                Err(e) => return Some(Err(Failure::of_connect(&e))),
            }
        } else if event.is_writable() {
            if let Err(failure) = self.write_rest() {
                return Some(Err(failure));
            }
        }
        // Edge-triggered: read only when the event says there is something
        // (data, the close or an error), until the kernel has no more.
        if self.sent == self.request.len() && (event.is_readable() || event.is_read_closed() || event.is_error()) {
            return self.read_reply();
        }
        None
    }

    /// Writes what the kernel does not have of the request (none when it
    /// all rode in the SYN), then ends the writing side for an echo.
    fn write_rest(&mut self) -> Result<(), Failure> {
        let State::Open { stream, .. } = &mut self.state else { return Ok(()) };
        while self.sent < self.request.len() {
            match stream.write(&self.request[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::of(&e)),
            }
        }
        if self.half_close {
            self.half_close = false;
            stream.shutdown(std::net::Shutdown::Write).map_err(|e| Failure::of(&e))?;
        }
        Ok(())
    }

    /// Reads what has come; `Some` once the reply is whole, the server
    /// closed, or the connection failed.
    fn read_reply(&mut self) -> Option<Result<Answered, Failure>> {
        let State::Open { stream, in_syn } = &mut self.state else { return None };
        // The reply so far, whole (its HTTP parts, if found before the close).
        let whole = loop {
            if self.filled == self.reply.len() {
                if self.reply.len() > super::MAX_REPLY {
                    return Some(Err(Failure::WrongReply));
                }
                self.reply.resize(self.reply.len() + REPLY_CHUNK, 0);
            }
            match stream.read(&mut self.reply[self.filled..]) {
                Ok(0) => break None,
                Ok(n) => {
                    self.filled += n;
                    if let Some(whole) = self.end.complete(&self.reply[..self.filled]) {
                        break whole;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(Failure::of(&e))),
            }
        };
        let checked = super::check_reply(self.end, &self.reply[..self.filled], whole, &self.request);
        Some(checked.map(|()| Answered { in_syn: *in_syn, tls: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            addr: "127.0.0.1:9".parse().unwrap(),
            protocol: Protocol::Raw,
            connections: 1,
            requests: 1,
            duration: Duration::from_secs(1),
            rate: None,
            kinds: vec![Kind::Plain],
            timeout: Duration::from_secs(1),
            threads: 1,
        }
    }

    /// A large reply grows a client's buffer; its next request starts with
    /// a small one again, and with its own request only.
    #[test]
    fn a_large_reply_does_not_keep_its_buffer() {
        let mut client = Client::new();
        client.prepare(&plan(), None, Kind::Plain, 7, Instant::now());
        assert_eq!(client.request, b"tfo load 7\n");
        client.reply.resize(8 << 20, 0);
        client.filled = 8 << 20;
        client.prepare(&plan(), None, Kind::Plain, 8, Instant::now());
        assert_eq!((client.reply.len(), client.filled), (REPLY_CHUNK, 0));
        assert_eq!(client.request, b"tfo load 8\n");
        // A buffer within the bound is kept as it is.
        client.reply.resize(KEEP_REPLY, 0);
        client.prepare(&plan(), None, Kind::Plain, 9, Instant::now());
        assert_eq!(client.reply.len(), KEEP_REPLY);
    }
}
