//! `tfo bench`: plain TCP vs TFO over the lab's emulated path, side by side.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fastopen_lab::parse::parse_duration;
use fastopen_lab::{Lab, LabConfig};
use fastopen_tools::bench::{self, BenchError, BenchRun, Row, Throughput, COLD, EARLY, PLAIN, WARM};
use fastopen_tools::echo::Protocol;
use fastopen_tools::lab_server::{HttpMethod, NsServer};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::impairments::{split_rtt, Impairments};
use crate::interrupt;
use crate::plot;

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
/// accuracy (the client kernel's handshake RTT, and the plain connect time,
/// vs the configured RTT). --throughput-mb also measures bulk TCP through the
/// link at zero delay, without and with TSO/GSO across it (`tfo lab --offload`).
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
    method: HttpMethodArg,
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

/// `tfo bench --json`. The field names are a contract (README).
#[derive(Debug, Serialize)]
struct BenchReport<'a> {
    config: BenchConfig,
    results: &'a [Row],
    throughput: Option<Throughput>,
    /// The same with TSO/GSO across the link (`tfo lab --offload`).
    throughput_offload: Option<Throughput>,
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
        let server =
            NsServer::start(lab.server(), addr, protocol, server_tls, limits, crate::report::lab_server_notices())?;
        for &size in &args.size {
            bar.set_message(format!("RTT {} ms, {size} B", crate::report::ms(rtt)));
            let run = BenchRun {
                addr: server.addr,
                rtt,
                size,
                requests: args.requests,
                http: args.http,
                tls: args.tls,
                read_first: args.read_first,
                method: args.method.into(),
                timeout: args.timeout,
                cold_every,
                cancel: Some(interrupt::token()),
            };
            let row = bench::measure(&lab, &run, &|| bar.inc(1))?;
            rows.push(row);
            if interrupt::requested() {
                break 'rtts;
            }
        }
        drop(server);
    }
    bar.finish_and_clear();
    let interrupted = interrupt::requested();
    let mut throughputs = Vec::new();
    for offload in [false, true] {
        if args.throughput_mb == 0 || interrupt::requested() {
            break;
        }
        match bench::throughput(args.throughput_mb, offload, Some(interrupt::token())) {
            Err(BenchError::Cancelled) => return Err(interrupt::Interrupted.into()),
            other => throughputs.push(other?),
        }
    }
    let throughput = throughputs.first().copied();
    let throughput_offload = throughputs.get(1).copied();
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
                method: (args.http || args.tls).then_some(args.method.into()),
                early_data: args.early_data.into(),
                read_first: args.read_first,
                tls: args.tls,
                ipv6: args.ipv6,
                seed: args.path.seed,
            },
            results: &rows,
            throughput,
            throughput_offload,
            interrupted,
        };
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_table(&rows, args.read_first)?;
        for t in &throughputs {
            outln!(
                "link throughput at zero delay{}: {:.2} Gbit/s ({} MB in {:.2} s, one TCP connection, MTU {})",
                if t.offload { ", TSO/GSO across it (--offload)" } else { "" },
                t.gbit_per_s,
                t.megabytes,
                t.seconds,
                t.mtu
            )?;
        }
    }
    // The results are out first: a plot that fails to write loses nothing else.
    if let (Some(file), Some(path)) = (plot_file, &args.plot) {
        let panels: Vec<plot::Panel> = rows.iter().map(panel).collect();
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

/// A row's latency distributions, for the plot.
fn panel(row: &Row) -> plot::Panel {
    plot::Panel {
        title: format!("RTT {} ms, {} B requests", row.rtt_ms, row.size),
        plain: row.series[PLAIN].cdf(),
        tfo_cold: row.series[COLD].cdf(),
        tfo_warm: row.series[WARM].cdf(),
        tfo_early_data: row.series[EARLY].cdf(),
    }
}

/// The method of `--http` requests (the engine's `HttpMethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum HttpMethodArg {
    /// Safe: runs from early data at once.
    Get,
    /// Unsafe: subject to --early-data.
    Post,
}

impl From<HttpMethodArg> for HttpMethod {
    fn from(m: HttpMethodArg) -> HttpMethod {
        match m {
            HttpMethodArg::Get => HttpMethod::Get,
            HttpMethodArg::Post => HttpMethod::Post,
        }
    }
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
        if let Some(h) = r.handshake_rtt {
            outln!(
                "{:>18} link: handshake RTT (the client kernel's SYN to SYN-ACK) p50 {:.3} ms ({:+.3}), p99 {:.3} ms ({:+.3}); connect adds the program's wake-up",
                "", h.p50_ms, h.error_p50_ms, h.p99_ms, h.error_p99_ms,
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
