//! The echo server behind `tfo serve` (and the lab's servers): raw echo, or
//! HTTP/1.1 that answers each request with the request itself, over TFO, TLS
//! optional. One [`ConnectionLog`] per connection says whether its data came
//! in the SYN; operator notices (accept errors, capacity, the drain) go to a
//! callback, never to a terminal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fastopen::AcceptOutcome;
use fastopen_wire::http::{examine_request, HeadScan, HttpRequest};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::connection::{echo_response, refusal, timed_out};
pub use crate::connection::{
    http_response, is_safe_method, write_counted, ConnectionLog, EarlyData, Ending, Limits, DEFAULT_LIFETIME,
    DEFAULT_MAX_CONNECTIONS,
};

/// What the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Echo every byte until the client closes its side.
    Raw,
    /// One HTTP/1.1 request per connection; 200 with the request as body, then close.
    Http,
}

/// How long a stopping server waits for connections in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// After an accept error that a retry cannot fix at once (no file descriptors
/// or memory left), wait this long before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per this interval for repeated accept errors.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);

/// Applies the early-data policy to an unsafe use of `stream`'s data:
/// `Ok(true)` go on, `Ok(false)` do not handle it. Records `confirmed`.
async fn admit_early(stream: &tokio::net::TcpStream, log: &mut ConnectionLog, limits: Limits) -> std::io::Result<bool> {
    use fastopen::{Admission, Confirmation};
    let admission = fastopen::admit(stream, limits.early_data.into(), limits.confirm_timeout)
        .await
        .map_err(std::io::Error::from)?;
    match admission {
        Admission::Confirmed => log.confirmed = Some(true),
        Admission::NeverConfirmed(why) => {
            log.confirmed = Some(false);
            let why = if why == Confirmation::TimedOut { "timed out" } else { "reset" };
            log.error = Some(format!("handshake never confirmed ({why}): a replayed SYN? its data was not handled"));
        }
        Admission::TooEarly => {
            log.error = Some(
                "early data refused (--early-data reject): sent in the SYN, the handshake not confirmed yet; not handled"
                    .into(),
            );
        }
        Admission::Early => {}
    }
    Ok(admission.runs())
}

/// How long a connection's log line waits, after the connection is done,
/// for a handshake still pending to settle (the server may answer and close
/// before the client's ACK arrives; the ACK or the reset still comes).
const SETTLE_FOR_LOG: Duration = Duration::from_secs(1);

/// Whether the handshake was confirmed, for the log: `false` if it was reset,
/// or not confirmed within [`SETTLE_FOR_LOG`] after the connection ended.
/// The stream is closed after.
async fn final_confirmation(stream: tokio::net::TcpStream) -> Option<bool> {
    let confirmation = fastopen::confirmation_at_close(stream, SETTLE_FOR_LOG).await.ok()?;
    Some(confirmation.is_confirmed())
}

/// The connections a server may still accept (`tfo serve --count`), shared
/// by its workers: when one takes the last, all stop accepting.
#[derive(Debug)]
pub struct Budget {
    remaining: Option<AtomicU64>,
    spent: tokio::sync::watch::Sender<bool>,
}

impl Budget {
    /// `None`: no limit.
    pub fn new(count: Option<u64>) -> Budget {
        Budget { remaining: count.map(AtomicU64::new), spent: tokio::sync::watch::Sender::new(count == Some(0)) }
    }

    /// Counts one accepted connection.
    fn take(&self) {
        let Some(remaining) = &self.remaining else { return };
        let before = remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if before.is_ok_and(|n| n <= 1) {
            self.spent.send_replace(true);
        }
    }

    /// Completes when none is left.
    async fn spent(&self) {
        let _ = self.spent.subscribe().wait_for(|spent| *spent).await;
    }
}

/// What a server serves: the protocol, TLS or not, the limits.
#[derive(Debug, Clone)]
pub struct Service {
    pub protocol: Protocol,
    /// TLS on every connection (`tfo serve --tls-cert`).
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    pub limits: Limits,
    /// After the reply to a connection whose handshake was not yet confirmed
    /// at accept (data in the SYN), wait for the client's final ACK, for the
    /// log's `confirmed` (about one round trip more per connection, with a
    /// `shutdown`, a wake-up and a TCP_INFO read). `tfo serve --no-log`
    /// turns it off: then `confirmed` is only what was known at accept.
    pub log_confirmation: bool,
}

/// An operator notice (an accept error, the connection cap reached, the
/// drain at shutdown): one line, for the caller to print or log.
pub type Notices = std::sync::Arc<dyn Fn(String) + Send + Sync>;

/// Accepts connections until `shutdown` completes or the `budget` is spent,
/// handling each on its own task; calls `on_connection` with one log per
/// connection. Connections in progress get 5 s to finish before returning.
pub async fn serve(
    listener: std::sync::Arc<fastopen::TokioListener>,
    service: &Service,
    budget: &Budget,
    shutdown: impl Future<Output = ()>,
    on_connection: impl Fn(ConnectionLog) + Send + Sync + 'static,
    notices: Notices,
) {
    let limits = service.limits;
    let on_connection = std::sync::Arc::new(on_connection);
    let mut tasks = JoinSet::new();
    // Set when the drain time is over: connections still open stop, and log.
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut accept_errors = AcceptErrors::default();
    let spent = budget.spent();
    tokio::pin!(shutdown, spent);
    loop {
        tokio::select! {
            biased; // a stop wins over the next connection
            _ = &mut shutdown => break,
            _ = &mut spent => break,
            res = listener.accept(), if tasks.len() < limits.max_connections => {
                let (stream, peer, outcome) = match res {
                    Ok(conn) => conn,
                    Err(e) => {
                        if let Some(line) = accept_errors.record(&e, Instant::now()) {
                            notices(line);
                        }
                        if fastopen::accept_starved(&e) {
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                        }
                        continue;
                    }
                };
                budget.take();
                if tasks.len() + 1 == limits.max_connections {
                    if let Some(line) = accept_errors.at_capacity(limits.max_connections, Instant::now()) {
                        notices(line);
                    }
                }
                let on_connection = on_connection.clone();
                let closing = closing.clone();
                let service = service.clone();
                tasks.spawn(async move {
                    on_connection(handle(stream, peer, outcome, service, closing).await);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Let connections in progress finish, for a while.
    if tokio::time::timeout(DRAIN_TIMEOUT, drain(&mut tasks)).await.is_err() {
        notices(format!("{} connection(s) still open after {} s; closing them", tasks.len(), DRAIN_TIMEOUT.as_secs()));
        // Each one stops and writes its log line; none is dropped silently.
        let _ = closing_tx.send(true);
        if tokio::time::timeout(Duration::from_secs(1), drain(&mut tasks)).await.is_err() {
            tasks.abort_all();
        }
    }
}

async fn drain(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

/// Accept errors, logged once per interval with how many were not logged.
#[derive(Debug, Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    suppressed: u64,
    capacity_logged: Option<Instant>,
}

impl AcceptErrors {
    /// The line to log for this error now, if any.
    fn record(&mut self, e: &fastopen::Error, now: Instant) -> Option<String> {
        if self.last_logged.is_some_and(|t| now.duration_since(t) < ACCEPT_LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        let more = match std::mem::take(&mut self.suppressed) {
            0 => String::new(),
            n => format!(" ({n} more since the last line)"),
        };
        self.last_logged = Some(now);
        let hint = if fastopen::accept_starved(e) {
            "; out of file descriptors or memory: raise `ulimit -n`, or fewer idle clients (--idle-timeout); retrying every 100 ms"
        } else {
            ""
        };
        Some(format!("accept failed: {}{hint}{more}", crate::failure::error_chain(e)))
    }

    /// The line to log when the server reaches --max-connections, if any now.
    fn at_capacity(&mut self, max: usize, now: Instant) -> Option<String> {
        if self.capacity_logged.is_some_and(|t| now.duration_since(t) < ACCEPT_LOG_EVERY) {
            return None;
        }
        self.capacity_logged = Some(now);
        Some(format!("{max} connections open (--max-connections): new ones wait in the listen queue until one closes"))
    }
}

async fn handle(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    outcome: AcceptOutcome,
    service: Service,
    mut closing: tokio::sync::watch::Receiver<bool>,
) -> ConnectionLog {
    let Service { protocol, tls, limits, log_confirmation } = service;
    let mut log = ConnectionLog {
        event: "connection",
        peer,
        outcome,
        bytes_in: 0,
        bytes_out: 0,
        in_syn: outcome.data_in_syn,
        confirmed: None,
        handled: false,
        http_status: None,
        greeting_in_syn_recv: None,
        tls: None,
        error: None,
    };
    let work = async {
        match (protocol, tls) {
            // Boxed: its buffers would make every plain connection's task
            // as large (20 KB, copied when the task is spawned).
            (protocol, Some(config)) => {
                Box::pin(crate::tls_serve::serve_tls(&mut stream, config, protocol == Protocol::Http, &mut log, limits))
                    .await
            }
            (Protocol::Raw, None) => echo_raw(&mut stream, &mut log, limits).await,
            (Protocol::Http, None) => echo_http(&mut stream, &mut log, limits).await,
        }
    };
    let result = tokio::select! {
        result = work => Some(result),
        _ = closing.wait_for(|closing| *closing) => None,
        () = tokio::time::sleep(limits.lifetime) => Some(Err(timed_out("open (--max-lifetime)", limits.lifetime))),
    };
    let finished = result.is_some();
    match result {
        Some(Err(e)) => {
            log.error.get_or_insert(e.to_string());
        }
        Some(Ok(Ending::Close)) => {}
        Some(Ok(Ending::Reset)) => {
            // Dropped with a zero linger: the reset leaves now, without a FIN first.
            log.confirmed = fastopen::handshake_state(&stream).ok().map(|s| s == fastopen::HandshakeState::Confirmed);
            return log;
        }
        None => log.error = Some("closed unfinished: the server is shutting down".into()),
    }
    if log.confirmed.is_none() && log_confirmation {
        log.confirmed = if outcome.handshake_at_accept == fastopen::HandshakeState::Confirmed {
            Some(true) // nothing to wait for, nothing to read: the close sends the FIN
        } else if finished {
            // The FIN goes now, not after the wait (the client may be waiting for it).
            let _ = stream.shutdown().await;
            final_confirmation(stream).await
        } else {
            fastopen::handshake_state(&stream).ok().map(|s| s == fastopen::HandshakeState::Confirmed)
        };
    }
    log
}

/// Reads with the idle timeout.
async fn read_idle(stream: &mut (impl AsyncRead + Unpin), buf: &mut [u8], idle: Duration) -> std::io::Result<usize> {
    tokio::time::timeout(idle, stream.read(buf)).await.map_err(|_| timed_out("idle", idle))?
}

async fn echo_raw(
    stream: &mut tokio::net::TcpStream,
    log: &mut ConnectionLog,
    limits: Limits,
) -> std::io::Result<Ending> {
    if let Some(banner) = limits.banner {
        write_counted(stream, banner, &mut log.bytes_out, limits.idle).await?;
        // Still pending once written: the greeting left before the client's ACK.
        let pending = fastopen::handshake_state(&*stream).ok().map(|s| s == fastopen::HandshakeState::Pending);
        log.greeting_in_syn_recv = pending;
    }
    let mut buf = vec![0u8; 64 * 1024];
    // Raw data has no "safe method": all of it is subject to the policy.
    let mut admitted = !log.in_syn;
    loop {
        let n = read_idle(stream, &mut buf, limits.idle).await?;
        if n == 0 {
            return Ok(Ending::Close); // the client is done: the close (or `handle`) sends our FIN
        }
        log.bytes_in += n as u64;
        if !admitted {
            if !admit_early(stream, log, limits).await? {
                if limits.early_data == EarlyData::Reject {
                    // Raw echo has no "425": the client is told by a reset, not a silent close.
                    let _ = stream.set_zero_linger();
                    return Ok(Ending::Reset);
                }
                return Ok(Ending::Close); // closed unhandled
            }
            admitted = true;
        }
        write_counted(stream, &buf[..n], &mut log.bytes_out, limits.idle).await?;
        log.handled = true;
    }
}

async fn echo_http(
    stream: &mut tokio::net::TcpStream,
    log: &mut ConnectionLog,
    limits: Limits,
) -> std::io::Result<Ending> {
    // Read straight into `buf`: a buffer array in this future would make
    // every connection's task that much larger, copied when it is spawned.
    let mut buf = Vec::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + limits.request;
    let mut continued = false;
    let mut scan = HeadScan::default();
    let response = loop {
        let state = if scan.ready(&buf) {
            examine_request(&buf, limits.max_body)
        } else {
            HttpRequest::Partial { expects_continue: false }
        };
        match state {
            HttpRequest::Complete { len, head } => {
                if log.in_syn && !is_safe_method(&buf) && !admit_early(stream, log, limits).await? {
                    if limits.early_data == EarlyData::Reject {
                        break http_response(
                            425,
                            "Too Early",
                            b"sent in the SYN before the handshake was confirmed; retry\n",
                        );
                    }
                    return Ok(Ending::Close); // never confirmed: dropped unhandled
                }
                log.handled = true;
                break echo_response(&buf[..len], head);
            }
            HttpRequest::Reject(status, reason) => break refusal(status, reason),
            HttpRequest::Partial { expects_continue } => {
                if expects_continue && !continued {
                    write_counted(stream, b"HTTP/1.1 100 Continue\r\n\r\n", &mut log.bytes_out, limits.idle).await?;
                    continued = true;
                }
            }
        }
        let wait = limits.idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(16 * 1024);
        }
        let n = match tokio::time::timeout(wait, stream.read_buf(&mut buf)).await {
            Ok(read) => read?,
            Err(_) if tokio::time::Instant::now() >= deadline => {
                break http_response(408, "Request Timeout", b"the request did not arrive in time\n");
            }
            Err(_) => return Err(timed_out("idle", limits.idle)),
        };
        if n == 0 {
            if buf.is_empty() {
                return Ok(Ending::Close); // connected and left without a word
            }
            break http_response(400, "Bad Request", b"incomplete request\n");
        }
        log.bytes_in += n as u64;
    };
    log.http_status = fastopen_wire::http::status_code(&response);
    // The close (or `handle`, before it waits for the ACK) sends the FIN.
    write_counted(stream, &response, &mut log.bytes_out, limits.idle).await.map(|()| Ending::Close)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_logged_once_per_interval() {
        let emfile = fastopen::Error::Io { what: "accept()", source: std::io::Error::from_raw_os_error(24) };
        assert!(fastopen::accept_starved(&emfile));
        let mut errors = AcceptErrors::default();
        let t0 = Instant::now();
        let first = errors.record(&emfile, t0).unwrap();
        assert!(first.contains("ulimit -n") && first.matches("Too many open files").count() == 1, "{first}");
        for i in 1..1000 {
            assert_eq!(errors.record(&emfile, t0 + Duration::from_millis(i)), None);
        }
        let next = errors.record(&emfile, t0 + ACCEPT_LOG_EVERY).unwrap();
        assert!(next.contains("999 more since the last line"), "{next}");
    }

    /// A connection's task is spawned (moved to the heap) once per
    /// connection: buffers belong on the heap, not in the future (a 16 KB
    /// array and the TLS path's made it 36 KB, copied for every connection).
    #[test]
    fn a_connection_task_is_small() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (stream, peer) = listener.accept().await.unwrap();
            let (_closing, closing) = tokio::sync::watch::channel(false);
            let outcome = crate::test_support::plain_accept();
            let service =
                Service { protocol: Protocol::Http, tls: None, limits: Limits::default(), log_confirmation: true };
            let task = handle(stream, peer, outcome, service, closing);
            let size = std::mem::size_of_val(&task);
            assert!(size <= 4096, "a connection's future is {size} bytes");
        });
    }

    #[test]
    fn response_is_valid_http() {
        let r = http_response(200, "OK", b"abc");
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(&r).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial"),
        };
        assert_eq!(resp.code, Some(200));
        assert_eq!(&r[head..], b"abc");
    }
}
