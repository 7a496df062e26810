//! `tfo bench`: plain TCP vs TFO over the lab's emulated path, side by side.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use fastopen::{Connector, FailReason};
use fastopen_lab::parse::parse_duration;
use fastopen_lab::{Lab, LabConfig, LinkCounters};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::impairments::{split_rtt, Impairments};
use crate::interrupt;
use crate::labrun::{http_request_with, HttpMethod, NsServer};
use crate::plot;
use fastopen_tools::echo::Protocol;
use fastopen_tools::exchange::{exchange, ExchangeError, Limits, Until};
use fastopen_tools::latency::{Series, Summary};
use fastopen_tools::tls_client::{TlsClient, Trust};

/// Measure plain TCP against TFO over an emulated path (needs root).
///
/// For each round-trip time it builds a lab (client and server namespaces
/// joined by a userspace link that holds packets for RTT/2 each way), starts
/// `tfo serve` in the server namespace, and makes --requests plain requests and
/// --requests TFO requests, interleaved so both see the same conditions. Every
/// tenth round also flushes the client's cookie cache and makes a cold TFO
/// request (a cookie request: no saving).
///
/// It reports, per RTT and size: min/p50/p90/p99/max of the time to the full
/// reply for plain, TFO cold and TFO warm; the TFO/plain p50 ratio (the floor
/// is 0.5: one round trip saved of two) and the saved milliseconds; how many
/// TFO requests really carried their data in the SYN; and the link's own
/// accuracy (plain connect time vs the configured RTT). --throughput-mb also
/// measures bulk TCP through the link at zero delay.
///
/// Examples:
///   tfo bench --rtt 100ms
///   tfo bench --rtt 10ms,50ms,100ms,200ms --requests 200 --plot tfo.svg --json
///   tfo bench --rtt 50ms --middlebox strip-tfo     # what a stripping firewall costs
///   tfo bench --rtt 50ms --size 64,1400,4000        # requests larger than a segment
///   tfo bench --rtt 50ms --tls                      # HTTPS: 3, 2 and 1 round trips
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Round-trip times, comma-separated.
    #[arg(long, default_value = "10ms,50ms,100ms,200ms", value_delimiter = ',', value_parser = parse_duration)]
    rtt: Vec<Duration>,
    /// Requests per mode and RTT (plain and TFO each).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    requests: u32,
    /// Request sizes in bytes, comma-separated.
    #[arg(long, default_value = "64", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=16_000_000))]
    size: Vec<u32>,
    /// HTTP through `tfo serve --http` instead of raw echo.
    #[arg(long)]
    http: bool,
    /// With --http: GET (safe: runs from early data at once) or POST (subject to --early-data).
    #[arg(long, value_enum, default_value = "get", requires = "http")]
    method: HttpMethod,
    /// The server's early-data policy (see `tfo serve --help`). Default
    /// `allow`, to measure TFO's gain; `wait` shows what replay safety costs.
    #[arg(long, value_enum, default_value = "allow", value_name = "POLICY")]
    early_data: crate::client_opts::EarlyDataArg,
    /// A server that speaks first (SMTP, FTP, SSH): the server greets at
    /// accept, and each request is a read-first connect timed to the greeting.
    /// Plain takes 2 round trips; TFO sends the cookie without data and the
    /// server greets in SYN_RECV: 1 round trip.
    #[arg(long, conflicts_with_all = ["http", "size", "method", "early_data"])]
    read_first: bool,
    /// HTTPS (TLS 1.3, a GET): the ladder of round trips to the answer.
    /// plain: TCP then TLS (3 round trips); tfo: the ClientHello in the SYN
    /// (2); tfo early data: on a resumed session the GET goes as TLS early
    /// data with the ClientHello, in the SYN (1). The server is `tfo serve
    /// --http --tls-cert` with a throwaway self-signed certificate.
    #[arg(long, conflicts_with_all = ["read_first", "http"])]
    tls: bool,
    /// Use IPv6 (the lab's ULA addresses).
    #[arg(long)]
    ipv6: bool,
    /// Also measure bulk TCP throughput through the link at zero delay (MB to send; 0 skips).
    #[arg(long, default_value_t = 0, value_name = "MB")]
    throughput_mb: u32,
    /// Let the link sleep between packets instead of busy-polling (saves a CPU,
    /// adds the forwarder's wake-up latency, 50-150 us on a VM, to each packet).
    #[arg(long)]
    no_busy_poll: bool,
    /// Deadline per request (default: 30s plus 8 round trips). A request
    /// that misses it is counted as failed, and the run goes on.
    #[arg(long, value_name = "DURATION", value_parser = crate::client_opts::parse_timeout)]
    timeout: Option<Duration>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Write an SVG plot of the latency distributions.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    path: Impairments,
}

/// Results for one (RTT, size).
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) rtt_ms: f64,
    pub(crate) size: u32,
    pub(crate) requests: u32,
    pub(crate) plain: Option<Summary>,
    pub(crate) tfo: Option<Summary>,
    pub(crate) tfo_cold: Option<Summary>,
    /// `--tls`: TFO with the request as TLS early data (0-RTT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tfo_early_data: Option<Summary>,
    /// `--tls`: of those, the requests the server took as early data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) early_data_accepted: Option<u32>,
    /// `--tls`: TFO + early data p50 over plain p50 (the floor is 1/3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ratio_p50_early_data: Option<f64>,
    pub(crate) ratio_p50: Option<f64>,
    pub(crate) saved_ms_p50: Option<f64>,
    /// Warm TFO requests that carried their data in the SYN.
    pub(crate) tfo_used: u32,
    /// Requests (of any mode, the warm-up included) that got no complete
    /// reply within --timeout: lost, not crashed.
    pub(crate) failed: u32,
    /// Why they failed (kind -> count): timeout, connect_timeout, reset, ...
    pub(crate) failures: std::collections::BTreeMap<&'static str, u32>,
    /// Why warm TFO requests did not (reason -> count).
    pub(crate) tfo_fail_reasons: std::collections::BTreeMap<&'static str, u32>,
    pub(crate) cold_cookie_requests: u32,
    pub(crate) connect: Option<Accuracy>,
    pub(crate) link: LinkCounters,
    #[serde(skip)]
    pub(crate) series: [Series; 4],
}

/// `tfo bench --json`. The field names are a contract (README).
#[derive(Debug, Serialize)]
struct BenchReport<'a> {
    config: BenchConfig,
    results: &'a [Row],
    throughput: Option<Throughput>,
    /// Ctrl-C ended the run; `results` holds what was measured before.
    interrupted: bool,
}

/// What was asked of `tfo bench`.
#[derive(Debug, Serialize)]
struct BenchConfig {
    rtt_ms: Vec<f64>,
    requests: u32,
    sizes: Vec<u32>,
    /// [to the server, to the client].
    loss: [f64; 2],
    jitter_ms: [f64; 2],
    rate_bps: Option<[u64; 2]>,
    middleboxes: Vec<String>,
    http: bool,
    method: Option<HttpMethod>,
    early_data: fastopen_tools::echo::EarlyData,
    /// Time to a greeting of a server that speaks first (`--read-first`).
    read_first: bool,
    /// HTTPS, with the TFO + TLS early data series (`--tls`).
    tls: bool,
    ipv6: bool,
    seed: u64,
}

/// The link's accuracy: plain connect time against the configured RTT.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Accuracy {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) error_p50_ms: f64,
    pub(crate) error_p99_ms: f64,
}

const PLAIN: usize = 0;
const WARM: usize = 1;
const COLD: usize = 2;
/// `--tls`: TFO with the request as TLS early data.
const EARLY: usize = 3;

fn progress(total: u64, json: bool) -> ProgressBar {
    if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} requests, {eta} left") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !fastopen_lab::netns::is_root() {
        anyhow::bail!(
            "tfo bench needs root: it builds network namespaces and TUN devices for the emulated path. Run `sudo tfo bench`."
        );
    }
    let loss = args.path.loss;
    // A ratio (1.0 is 100%).
    if loss.to_server >= 1.0 || loss.to_client >= 1.0 {
        anyhow::bail!(
            "--loss {}%/{}% lets no exchange through: there would be nothing to measure (tfo lab takes it, to watch a black hole)",
            loss.to_server * 100.0,
            loss.to_client * 100.0
        );
    }
    // A --plot path that cannot be written is said now, not after the whole bench.
    let plot_file = args.plot.as_deref().map(crate::output_file::OutputFile::create).transpose()?;
    interrupt::install_saying("the lab was torn down");
    let cold_every = 10u32;
    let modes = if args.tls { 3 } else { 2 };
    let per_size = u64::from(args.requests) * modes + u64::from(args.requests.div_ceil(cold_every)) + 1;
    let bar = progress(per_size * args.rtt.len() as u64 * args.size.len() as u64, args.json);
    let mut rows = Vec::new();
    'rtts: for &rtt in &args.rtt {
        let path = args.path.path(split_rtt(rtt), !args.no_busy_poll);
        let lab = Lab::start(LabConfig { path, ..LabConfig::default() }).context("building the lab")?;
        let protocol = if args.http || args.tls { Protocol::Http } else { Protocol::Raw };
        let banner: Option<&'static [u8]> = args.read_first.then_some(b"220 tfo bench ready\r\n");
        let limits = fastopen_tools::echo::Limits { early_data: args.early_data.into(), banner, ..Default::default() };
        let server_tls = if args.tls { Some(fastopen_tools::tls_serve::throwaway_config()?) } else { None };
        let addr = SocketAddr::new(lab.server_ip(args.ipv6), 8000);
        let server = NsServer::start(lab.server(), addr, protocol, server_tls, limits)?;
        for &size in &args.size {
            bar.set_message(format!("RTT {} ms, {size} B", crate::report::ms(rtt)));
            let row = measure(&lab, server.addr, rtt, size, &args, cold_every, &bar)?;
            rows.push(row);
            if interrupt::requested() {
                break 'rtts;
            }
        }
        drop(server);
    }
    bar.finish_and_clear();
    let interrupted = interrupt::requested();
    let throughput = if args.throughput_mb > 0 && !interrupted { Some(throughput(args.throughput_mb)?) } else { None };
    if args.json {
        let ms = crate::report::ms;
        let report = BenchReport {
            config: BenchConfig {
                rtt_ms: args.rtt.iter().map(|d| ms(*d)).collect(),
                requests: args.requests,
                sizes: args.size.clone(),
                loss: [args.path.loss.to_server, args.path.loss.to_client],
                jitter_ms: [ms(args.path.jitter.to_server), ms(args.path.jitter.to_client)],
                rate_bps: args.path.rate.map(|r| [r.to_server, r.to_client]),
                middleboxes: args.path.middlebox_names(),
                http: args.http || args.tls,
                method: (args.http || args.tls).then_some(args.method),
                early_data: args.early_data.into(),
                read_first: args.read_first,
                tls: args.tls,
                ipv6: args.ipv6,
                seed: args.path.seed,
            },
            results: &rows,
            throughput,
            interrupted,
        };
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_table(&rows, args.read_first)?;
        if let Some(t) = throughput {
            outln!(
                "link throughput at zero delay: {:.2} Gbit/s ({} MB in {:.2} s, one TCP connection, MTU {})",
                t.gbit_per_s,
                t.megabytes,
                t.seconds,
                t.mtu
            )?;
        }
    }
    // The results are out first: a plot that fails to write loses nothing else.
    if let (Some(file), Some(path)) = (plot_file, &args.plot) {
        let panels: Vec<plot::Panel> = rows.iter().map(Row::panel).collect();
        plot::latency_cdf(file, &panels).with_context(|| format!("writing the plot {}", path.display()))?;
        if !args.json {
            outln!("plot: {}", path.display())?;
        }
    }
    if interrupted {
        errln!("tfo bench: interrupted; the results above are those gathered so far, and the lab was torn down");
        return Ok(ExitCode::from(130));
    }
    let empty: Vec<String> = rows
        .iter()
        .filter(|r| [&r.plain, &r.tfo].iter().all(|s| s.as_ref().is_none_or(|s| s.n == 0)))
        .map(|r| format!("RTT {} ms, {} B", r.rtt_ms, r.size))
        .collect();
    if !empty.is_empty() {
        errln!(
            "tfo bench: no request completed for {} (every one lost or timed out): nothing was measured there",
            empty.join("; ")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the interleaved series for one (RTT, size) on a thread in the client namespace.
fn measure(
    lab: &Lab,
    addr: SocketAddr,
    rtt: Duration,
    size: u32,
    args: &Args,
    cold_every: u32,
    bar: &ProgressBar,
) -> anyhow::Result<Row> {
    let (request, until) = if args.http || args.tls {
        (http_request_with(args.method, addr, size as usize), Until::HttpResponse)
    } else {
        (vec![b'x'; size as usize], Until::Bytes(size as usize))
    };
    let timeout = args.timeout.unwrap_or(Duration::from_secs(30) + rtt * 8);
    let plain = Connector::new().tfo(false);
    let tfo = Connector::new();
    let requests = args.requests;
    let before = lab.counters();
    // Stop at Ctrl-C (keeping what was measured) or at once if the link fails.
    let cancel = || interrupt::cancel().or_else(|| lab.link_failure());
    // --tls: full handshakes for plain, cold and warm TFO; sessions resumed
    // with early data for the last series.
    let full = TlsClient::new(Trust::Anything, true)?.cancel_on(Some(crate::interrupt::token()));
    let resumed = full.clone().with_early_data();
    let one = |connector: &Connector, mode: usize| {
        if args.tls {
            let client = if mode == EARLY { &resumed } else { &full };
            return tls_request(client, connector, addr, &request, timeout);
        }
        if args.read_first {
            // The greeting of a server that speaks first, as an exchange.
            let limits = Limits { cancel: &cancel, ..crate::interrupt::limits(timeout, until) };
            return fastopen_tools::greeting::read_greeting(connector, addr, &limits)
                .map(Into::into)
                .map_err(Into::into);
        }
        let limits = Limits {
            cancel: &cancel,
            max_reply: request.len() + 64 * 1024,
            ..crate::interrupt::limits(timeout, until)
        };
        exchange(connector, addr, &request, until, &limits)
    };
    let row = lab.client().run(|| -> anyhow::Result<Row> {
        let mut tally = Tally::default();
        // Warm the cookie cache (not measured; a failure is counted).
        if let Err(e) = one(&tfo, WARM) {
            if tally.failure(&e)? {
                return Ok(tally.into_row(rtt, size, requests));
            }
        }
        bar.inc(1);
        'rounds: for round in 0..requests {
            for mode in round_modes(round, cold_every, args.tls) {
                if interrupt::requested() {
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
                bar.inc(1);
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
) -> Result<fastopen_tools::exchange::Exchange, ExchangeError> {
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let x = client.exchange(connector, addr, name, Some(request), timeout)?;
    match (x.answered, x.error, x.http_status) {
        (Some(total), None, Some(status)) => Ok(fastopen_tools::exchange::Exchange {
            outcome: x.outcome,
            reply: format!("HTTP/1.1 {status}").into_bytes(),
            total,
            first_byte: x.first_byte,
            early_data_accepted: x.early_data == Some("accepted"),
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
    used: u32,
    cold_requests: u32,
    failed: u32,
    reasons: std::collections::BTreeMap<&'static str, u32>,
    failures: std::collections::BTreeMap<&'static str, u32>,
}

/// Whether an HTTP reply's status is 2xx.
fn http_ok(reply: &[u8]) -> bool {
    reply.get(9..10) == Some(b"2")
}

impl Tally {
    /// Counts a reply with an HTTP error status as a failure of its kind.
    fn refused(&mut self, reply: &[u8]) {
        let kind = if reply.get(9..12) == Some(b"425") { "too_early" } else { "http_error" };
        self.failed += 1;
        *self.failures.entry(kind).or_insert(0) += 1;
    }

    fn success(&mut self, mode: usize, ex: &fastopen_tools::exchange::Exchange) {
        self.series[mode].record(ex.total);
        let o = &ex.outcome;
        match mode {
            PLAIN => self.connect.record(o.connect_time),
            EARLY => self.early_data_accepted += u32::from(ex.early_data_accepted),
            COLD => self.cold_requests += u32::from(o.fail_reason == Some(FailReason::CookieUnavailable)),
            // Read first: the cookie in a SYN without data is TFO's use.
            _ if o.tfo_used() || o.cookie_only_syn => self.used += 1,
            _ => *self.reasons.entry(o.fail_reason.map_or("none", |r| r.as_str())).or_insert(0) += 1,
        }
    }

    /// Counts a failed request; `Ok(true)` when Ctrl-C stopped it (stop
    /// measuring, keep the results); an error when the link failed.
    fn failure(&mut self, e: &ExchangeError) -> anyhow::Result<bool> {
        if let ExchangeError::Cancelled(why) = e {
            if interrupt::requested() {
                return Ok(true);
            }
            anyhow::bail!("{why}");
        }
        self.failed += 1;
        *self.failures.entry(e.kind()).or_insert(0) += 1;
        Ok(false)
    }

    fn into_row(self, rtt: Duration, size: u32, requests: u32) -> Row {
        let (p, w) = (self.series[PLAIN].summary(), self.series[WARM].summary());
        let early = self.series[EARLY].summary();
        let rtt_ms = crate::report::ms(rtt);
        let connect = self.connect.summary().map(|c| Accuracy {
            p50_ms: c.p50_ms,
            p99_ms: c.p99_ms,
            error_p50_ms: round3(c.p50_ms - rtt_ms),
            error_p99_ms: round3(c.p99_ms - rtt_ms),
        });
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
            series: self.series,
            ..Row::partial(rtt, size, requests)
        }
    }
}

impl Row {
    /// The row's latency distributions, for the plot.
    fn panel(&self) -> plot::Panel {
        plot::Panel {
            title: format!("RTT {} ms, {} B requests", self.rtt_ms, self.size),
            plain: self.series[PLAIN].cdf(),
            tfo_cold: self.series[COLD].cdf(),
            tfo_warm: self.series[WARM].cdf(),
            tfo_early_data: self.series[EARLY].cdf(),
        }
    }

    /// A row with nothing measured yet.
    fn partial(rtt: Duration, size: u32, requests: u32) -> Row {
        Row {
            rtt_ms: crate::report::ms(rtt),
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

fn print_table(rows: &[Row], read_first: bool) -> Result<(), crate::out::StdoutFailed> {
    outln!(
        "{}",
        if read_first { "time to the server's greeting (read first), ms" } else { "time to the full reply, ms" }
    )?;
    let used = if read_first { "cookie SYN without data" } else { "data in SYN" };
    outln!(
        "{:>8} {:>7}  {:<9} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "RTT",
        "size",
        "mode",
        "n",
        "min",
        "p50",
        "p90",
        "p99",
        "max"
    )?;
    for r in rows {
        let mut modes = vec![("plain", r.plain), ("tfo cold", r.tfo_cold), ("tfo", r.tfo)];
        if r.tfo_early_data.is_some() {
            modes.push(("tfo 0-rtt", r.tfo_early_data));
        }
        for (i, (name, s)) in modes.into_iter().enumerate() {
            let (rtt, size) = if i == 0 {
                (format!("{} ms", r.rtt_ms), if read_first { "-".to_string() } else { format!("{} B", r.size) })
            } else {
                (String::new(), String::new())
            };
            match s {
                Some(s) => outln!(
                    "{rtt:>8} {size:>7}  {name:<9} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                    s.n,
                    s.min_ms,
                    s.p50_ms,
                    s.p90_ms,
                    s.p99_ms,
                    s.max_ms
                ),
                None => outln!("{rtt:>8} {size:>7}  {name:<9} {:>5}", 0),
            }?;
        }
        let reasons: Vec<String> = r.tfo_fail_reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
        outln!(
            "{:>18} TFO/plain p50 {}, saved {} ms; {used} {}/{}{}; cold: {}/{} asked for a cookie",
            "",
            r.ratio_p50.map_or("-".into(), |x| format!("{x:.3}")),
            r.saved_ms_p50.map_or("-".into(), |x| format!("{x:.2}")),
            r.tfo_used,
            r.requests,
            if reasons.is_empty() { String::new() } else { format!(" (not: {})", reasons.join(", ")) },
            r.cold_cookie_requests,
            r.series[COLD].len(),
        )?;
        if let (Some(ratio), Some(accepted), Some(e)) =
            (r.ratio_p50_early_data, r.early_data_accepted, r.tfo_early_data)
        {
            outln!("{:>18} TFO + TLS early data/plain p50 {ratio:.3}; early data accepted {accepted}/{}", "", e.n)?;
        }
        if let Some(c) = r.connect {
            outln!(
                "{:>18} link: plain connect p50 {:.3} ms ({:+.3}), p99 {:.3} ms ({:+.3}) against RTT {} ms; packets left p50 {} us, p99 {} us after their due time",
                "", c.p50_ms, c.error_p50_ms, c.p99_ms, c.error_p99_ms, r.rtt_ms,
                r.link.late_p50_us.map_or("-".into(), |v| format!("<{v}")),
                r.link.late_p99_us.map_or("-".into(), |v| format!("<{v}")),
            )?;
        }
        if r.failed > 0 {
            let kinds: Vec<String> = r.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
            outln!("{:>18} failed requests (no complete reply): {} ({})", "", r.failed, kinds.join(", "))?;
        }
        let l = &r.link;
        if l.lost + l.queue_drops > 0 || l.middleboxes.any() {
            outln!("{:>18} path: lost {}, queue drops {}, {}", "", l.lost, l.queue_drops, l.middleboxes.describe())?;
        }
    }
    Ok(())
}

/// Bulk throughput through the link.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Throughput {
    pub(crate) megabytes: u32,
    pub(crate) seconds: f64,
    pub(crate) gbit_per_s: f64,
    pub(crate) mtu: u16,
}

/// Sends `mb` MB over one TCP connection through a zero-delay lab.
fn throughput(mb: u32) -> anyhow::Result<Throughput> {
    let lab = Lab::start(LabConfig::default())?;
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
    let seconds = lab.client().run(move || -> anyhow::Result<f64> {
        let chunk = vec![0x5a_u8; 256 * 1024];
        let start = Instant::now();
        let mut s = TcpStream::connect(addr)?;
        let mut sent = 0u64;
        while sent < bytes {
            interrupt::check()?;
            let n = (bytes - sent).min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n])?;
            sent += n as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack)?;
        anyhow::ensure!(
            u64::from_be_bytes(ack) == bytes,
            "the sink received {} of {bytes} bytes",
            u64::from_be_bytes(ack)
        );
        Ok(start.elapsed().as_secs_f64())
    })??;
    sink.join().map_err(|_| anyhow::anyhow!("the sink thread panicked"))??;
    Ok(Throughput { megabytes: mb, seconds, gbit_per_s: bytes as f64 * 8.0 / seconds / 1e9, mtu: lab.config().mtu })
}
