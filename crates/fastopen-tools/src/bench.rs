//! `tfo bench`'s runs: for one (RTT, size) across a lab, plain TCP, warm
//! and cold TFO (and TLS early data) interleaved, each request timed, its
//! TFO outcome and failure counted, the link's accuracy against the set RTT;
//! and bulk throughput through a zero-delay lab. The CLI builds the lab per
//! RTT, starts the server ([`crate::lab_server`]), calls these and prints.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use fastopen::{Cancel, Connector, FailReason};
use fastopen_lab::netns::NamedNetnsError;
use fastopen_lab::{Lab, LabConfig, LabError, LinkCounters};
use serde::Serialize;

use crate::exchange::{exchange, Exchange, ExchangeError, Limits, Until};
use crate::fields::ms;
use crate::greeting::read_greeting;
use crate::lab_server::{http_request_with, HttpMethod};
use crate::latency::{Series, Summary};
use crate::tls_client::{TlsClient, TlsClientError, Trust};

/// One (RTT, size) to measure.
#[derive(Debug, Clone)]
pub struct BenchRun {
    /// The server, inside the lab.
    pub addr: SocketAddr,
    /// The lab's round-trip time (the connect time's reference).
    pub rtt: Duration,
    /// Request bytes (echoed; with `http`, the HTTP request's size).
    pub size: u32,
    /// Rounds: each a plain and a warm TFO request (and TLS early data).
    pub requests: u32,
    pub http: bool,
    /// HTTPS, with the TFO + TLS early data series.
    pub tls: bool,
    /// Time to the greeting of a server that speaks first.
    pub read_first: bool,
    pub method: HttpMethod,
    /// Each request's deadline (default: 30 s + 8 RTT).
    pub timeout: Option<Duration>,
    /// A cold TFO request every this many rounds.
    pub cold_every: u32,
    pub cancel: Option<Cancel>,
}

/// Why a bench run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Netns(#[from] NamedNetnsError),
    #[error("building the lab")]
    Lab(#[from] LabError),
    #[error(transparent)]
    Tls(#[from] TlsClientError),
    /// The lab's link failed (or the sink of the throughput run).
    #[error("{0}")]
    Link(String),
    #[error("the throughput run")]
    Io(#[from] std::io::Error),
    #[error("the sink received {received} of {sent} bytes")]
    Short { received: u64, sent: u64 },
    #[error("cancelled")]
    Cancelled,
}

/// Results for one (RTT, size).
#[derive(Debug, Serialize)]
pub struct Row {
    pub rtt_ms: f64,
    pub size: u32,
    pub requests: u32,
    pub plain: Option<Summary>,
    pub tfo: Option<Summary>,
    pub tfo_cold: Option<Summary>,
    /// `--tls`: TFO with the request as TLS early data (0-RTT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tfo_early_data: Option<Summary>,
    /// `--tls`: of those, the requests the server took as early data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_data_accepted: Option<u32>,
    /// `--tls`: TFO + early data p50 over plain p50 (the floor is 1/3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_p50_early_data: Option<f64>,
    pub ratio_p50: Option<f64>,
    pub saved_ms_p50: Option<f64>,
    /// Warm TFO requests that carried their data in the SYN.
    pub tfo_used: u32,
    /// Requests (of any mode, the warm-up included) that got no complete
    /// reply within --timeout: lost, not crashed.
    pub failed: u32,
    /// Why they failed (kind -> count): timeout, connect_timeout, reset, ...
    pub failures: std::collections::BTreeMap<&'static str, u32>,
    /// Why warm TFO requests did not (reason -> count).
    pub tfo_fail_reasons: std::collections::BTreeMap<&'static str, u32>,
    pub cold_cookie_requests: u32,
    pub connect: Option<Accuracy>,
    /// The plain connects' handshake round trip as the client's kernel timed
    /// it (SYN to SYN-ACK): the link's own accuracy, without the wake-up of
    /// the program that `connect` includes.
    pub handshake_rtt: Option<Accuracy>,
    pub link: LinkCounters,
    /// Each request's time, by series ([`PLAIN`], [`WARM`], [`COLD`], [`EARLY`]).
    #[serde(skip)]
    pub series: [Series; 4],
}

/// The link's accuracy: plain connect time against the configured RTT.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Accuracy {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub error_p50_ms: f64,
    pub error_p99_ms: f64,
}

/// The series of a row, by index into [`Row::series`]: plain TCP.
pub const PLAIN: usize = 0;
/// TFO with a cookie cached (data in the SYN).
pub const WARM: usize = 1;
/// TFO after the cookie cache was flushed (the SYN asks for a cookie).
pub const COLD: usize = 2;
/// With TLS: TFO with the request as TLS early data.
pub const EARLY: usize = 3;

/// Runs the interleaved series for one (RTT, size) on a thread in the
/// client namespace: plain and warm TFO alternating, a cold TFO request
/// every `cold_every` rounds, TLS early data with `tls`. `progress` is
/// called after each request. Cancelled, it returns what was measured.
pub fn measure(lab: &Lab, run: &BenchRun, progress: &(dyn Fn() + Sync)) -> Result<Row, BenchError> {
    let (addr, rtt, size) = (run.addr, run.rtt, run.size);
    let (request, until) = if run.http || run.tls {
        (http_request_with(run.method, addr, size as usize), Until::HttpResponse)
    } else {
        (vec![b'x'; size as usize], Until::Bytes(size as usize))
    };
    let timeout = run.timeout.unwrap_or(Duration::from_secs(30) + rtt * 8);
    let plain = Connector::new().tfo(false);
    let tfo = Connector::new();
    let requests = run.requests;
    let cold_every = run.cold_every;
    let before = lab.counters();
    // Stop when cancelled (keeping what was measured) or at once if the link fails.
    let link_failure = || lab.link_failure();
    let limits = |until| Limits { cancel: &link_failure, token: run.cancel.clone(), ..Limits::new(timeout, until) };
    // TLS: full handshakes for plain, cold and warm TFO; sessions resumed
    // with early data for the last series.
    let full = TlsClient::new(Trust::Anything, true)?.cancel_on(run.cancel.clone());
    let resumed = full.clone().with_early_data();
    let one = |connector: &Connector, mode: usize| {
        if run.tls {
            let client = if mode == EARLY { &resumed } else { &full };
            return tls_request(client, connector, addr, &request, timeout);
        }
        if run.read_first {
            // The greeting of a server that speaks first, as an exchange.
            return read_greeting(connector, addr, &limits(until)).map(Into::into).map_err(Into::into);
        }
        let limits = Limits { max_reply: request.len() + 64 * 1024, ..limits(until) };
        exchange(connector, addr, &request, until, &limits)
    };
    let cancelled = || run.cancel.as_ref().is_some_and(Cancel::is_cancelled);
    let row = lab.client().run(|| -> Result<Row, BenchError> {
        let mut tally = Tally { cancel: run.cancel.clone(), ..Tally::default() };
        // Warm the cookie cache (not measured; a failure is counted).
        if let Err(e) = one(&tfo, WARM) {
            if tally.failure(&e)? {
                return Ok(tally.into_row(rtt, size, requests));
            }
        }
        progress();
        'rounds: for round in 0..requests {
            for mode in round_modes(round, cold_every, run.tls) {
                if cancelled() {
                    break 'rounds;
                }
                if mode == COLD {
                    lab.flush_cookies()?;
                }
                match one(if mode == PLAIN { &plain } else { &tfo }, mode) {
                    // An HTTP error status (425 Too Early under --early-data reject) is not a reply.
                    Ok(ex) if until == Until::HttpResponse && !http_ok(&ex.reply) => tally.refused(&ex.reply),
                    Ok(ex) => tally.success(mode, &ex),
                    Err(e) if tally.failure(&e)? => break 'rounds,
                    Err(_) => {}
                }
                progress();
            }
        }
        Ok(tally.into_row(rtt, size, requests))
    })??;
    let after = lab.counters();
    Ok(Row { link: after.since(&before), ..row })
}

/// The modes of one round: a cold request every `cold_every` rounds, then
/// plain and warm TFO, their order alternating so that neither always goes first.
/// With `early` (`--tls`), a TFO + early data request too, its place rotating.
fn round_modes(round: u32, cold_every: u32, early: bool) -> Vec<usize> {
    let mut modes = Vec::with_capacity(4);
    if round.is_multiple_of(cold_every) {
        modes.push(COLD);
    }
    if early {
        let ladder = [PLAIN, WARM, EARLY];
        modes.extend((0..3).map(|i| ladder[(i + round as usize) % 3]));
    } else {
        modes.extend(if round.is_multiple_of(2) { [PLAIN, WARM] } else { [WARM, PLAIN] });
    }
    modes
}

/// One HTTPS request (`--tls`): the time to the answer's status line, as an exchange.
fn tls_request(
    client: &TlsClient,
    connector: &Connector,
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<Exchange, ExchangeError> {
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let x = client.exchange(connector, addr, name, Some(request), timeout)?;
    match (x.answered, x.error, x.http_status) {
        (Some(total), None, Some(status)) => Ok(Exchange {
            outcome: x.outcome,
            reply: format!("HTTP/1.1 {status} \r\n\r\n").into_bytes(),
            total,
            first_byte: x.first_byte,
            early_data_accepted: x.early_data == Some("accepted"),
            handshake_rtt: None,
        }),
        (_, error, _) => Err(ExchangeError::Tls { addr, why: error.unwrap_or_else(|| "no answer".into()) }),
    }
}

/// What one (RTT, size) measured so far.
#[derive(Default)]
struct Tally {
    series: [Series; 4],
    early_data_accepted: u32,
    connect: Series,
    handshake: Series,
    used: u32,
    cold_requests: u32,
    failed: u32,
    /// Cancelled: stop measuring, keep the results.
    cancel: Option<Cancel>,
    reasons: std::collections::BTreeMap<&'static str, u32>,
    failures: std::collections::BTreeMap<&'static str, u32>,
}

/// Whether an HTTP reply's status is 2xx.
fn http_ok(reply: &[u8]) -> bool {
    fastopen_wire::http::status_code(reply).is_some_and(|code| (200..300).contains(&code))
}

impl Tally {
    /// Counts a reply with an HTTP error status as a failure of its kind.
    fn refused(&mut self, reply: &[u8]) {
        let kind = if fastopen_wire::http::status_code(reply) == Some(425) { "too_early" } else { "http_error" };
        self.failed += 1;
        *self.failures.entry(kind).or_insert(0) += 1;
    }

    fn success(&mut self, mode: usize, ex: &Exchange) {
        self.series[mode].record(ex.total);
        let o = &ex.outcome;
        match mode {
            PLAIN => {
                self.connect.record(o.connect_time);
                if let Some(rtt) = ex.handshake_rtt {
                    self.handshake.record(rtt);
                }
            }
            EARLY => self.early_data_accepted += u32::from(ex.early_data_accepted),
            COLD => self.cold_requests += u32::from(o.fail_reason == Some(FailReason::CookieUnavailable)),
            // Read first: the cookie in a SYN without data is TFO's use.
            _ if o.tfo_used() || o.cookie_only_syn => self.used += 1,
            _ => *self.reasons.entry(o.fail_reason.map_or("none", |r| r.as_str())).or_insert(0) += 1,
        }
    }

    /// Counts a failed request; `Ok(true)` when the run was cancelled (stop
    /// measuring, keep the results); an error when the link failed.
    fn failure(&mut self, e: &ExchangeError) -> Result<bool, BenchError> {
        if let ExchangeError::Cancelled(why) = e {
            if self.cancel.as_ref().is_some_and(Cancel::is_cancelled) {
                return Ok(true);
            }
            return Err(BenchError::Link(why.clone()));
        }
        self.failed += 1;
        *self.failures.entry(e.kind()).or_insert(0) += 1;
        Ok(false)
    }

    fn into_row(self, rtt: Duration, size: u32, requests: u32) -> Row {
        let (p, w) = (self.series[PLAIN].summary(), self.series[WARM].summary());
        let early = self.series[EARLY].summary();
        let rtt_ms = ms(rtt);
        let against_rtt = |c: Summary| Accuracy {
            p50_ms: c.p50_ms,
            p99_ms: c.p99_ms,
            error_p50_ms: round3(c.p50_ms - rtt_ms),
            error_p99_ms: round3(c.p99_ms - rtt_ms),
        };
        let connect = self.connect.summary().map(against_rtt);
        let handshake_rtt = self.handshake.summary().map(against_rtt);
        Row {
            plain: p,
            tfo: w,
            tfo_cold: self.series[COLD].summary(),
            tfo_early_data: early,
            early_data_accepted: early.map(|_| self.early_data_accepted),
            ratio_p50_early_data: p.zip(early).map(|(p, e)| round3(e.p50_ms / p.p50_ms)),
            ratio_p50: p.zip(w).map(|(p, w)| round3(w.p50_ms / p.p50_ms)),
            saved_ms_p50: p.zip(w).map(|(p, w)| round3(p.p50_ms - w.p50_ms)),
            tfo_used: self.used,
            failed: self.failed,
            failures: self.failures,
            tfo_fail_reasons: self.reasons,
            cold_cookie_requests: self.cold_requests,
            connect,
            handshake_rtt,
            series: self.series,
            ..Row::partial(rtt, size, requests)
        }
    }
}

impl Row {
    /// A row with nothing measured yet.
    fn partial(rtt: Duration, size: u32, requests: u32) -> Row {
        Row {
            rtt_ms: ms(rtt),
            size,
            requests,
            plain: None,
            tfo: None,
            tfo_cold: None,
            ratio_p50: None,
            saved_ms_p50: None,
            tfo_used: 0,
            failed: 0,
            failures: Default::default(),
            tfo_fail_reasons: Default::default(),
            cold_cookie_requests: 0,
            connect: None,
            handshake_rtt: None,
            link: LinkCounters::default(),
            tfo_early_data: None,
            early_data_accepted: None,
            ratio_p50_early_data: None,
            series: [Series::new(), Series::new(), Series::new(), Series::new()],
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Bulk throughput through the link.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    pub megabytes: u32,
    pub seconds: f64,
    pub gbit_per_s: f64,
    pub mtu: u16,
    /// TSO/GSO across the link.
    pub offload: bool,
}

/// Sends `mb` MB over one TCP connection through a zero-delay lab (with
/// `offload`: TSO/GSO across the link).
pub fn throughput(mb: u32, offload: bool, cancel: Option<Cancel>) -> Result<Throughput, BenchError> {
    let lab = Lab::start(LabConfig { offload, ..LabConfig::default() })?;
    let addr = SocketAddr::new(lab.server_ip(false), 9000);
    let listener = lab.server().run(move || TcpListener::bind(addr))??;
    let sink = lab.server().spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        s.write_all(&total.to_be_bytes())?;
        Ok(total)
    })?;
    let bytes = u64::from(mb) * 1_000_000;
    let seconds = lab.client().run(move || -> Result<f64, BenchError> {
        let chunk = vec![0x5a_u8; 256 * 1024];
        let start = Instant::now();
        let mut s = TcpStream::connect(addr)?;
        let mut sent = 0u64;
        while sent < bytes {
            if cancel.as_ref().is_some_and(Cancel::is_cancelled) {
                return Err(BenchError::Cancelled);
            }
            let n = (bytes - sent).min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n])?;
            sent += n as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack)?;
        let received = u64::from_be_bytes(ack);
        if received != bytes {
            return Err(BenchError::Short { received, sent: bytes });
        }
        Ok(start.elapsed().as_secs_f64())
    })??;
    sink.join().map_err(|_| BenchError::Link("the sink thread panicked".into()))??;
    let gbit_per_s = bytes as f64 * 8.0 / seconds / 1e9;
    Ok(Throughput { megabytes: mb, seconds, gbit_per_s, mtu: lab.config().mtu, offload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_has_plain_and_warm_and_a_cold_one_every_n() {
        let rounds: Vec<Vec<usize>> = (0..4).map(|r| round_modes(r, 2, false)).collect();
        assert_eq!(rounds[0], [COLD, PLAIN, WARM]);
        assert_eq!(rounds[1], [WARM, PLAIN], "the order alternates");
        assert_eq!(rounds[2], [COLD, PLAIN, WARM]);
        let early: Vec<Vec<usize>> = (0..3).map(|r| round_modes(r, 10, true)).collect();
        assert_eq!(early[1], [WARM, EARLY, PLAIN], "early data's place rotates");
        assert!(early.iter().all(|m| m.contains(&EARLY)));
    }

    #[test]
    fn replies_are_judged_by_their_status() {
        assert!(http_ok(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(http_ok(b"HTTP/1.1 204 \r\n\r\n"), "the TLS path's stand-in reply");
        assert!(!http_ok(b"HTTP/1.1 425 Too Early\r\n\r\n"));
        let mut tally = Tally::default();
        tally.refused(b"HTTP/1.1 425 Too Early\r\n\r\n");
        tally.refused(b"HTTP/1.1 500 Oops\r\n\r\n");
        assert_eq!(tally.failures.get("too_early"), Some(&1));
        assert_eq!(tally.failures.get("http_error"), Some(&1));
    }
}
