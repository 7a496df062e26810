//! `tfo load`: the load generator's command line: the target (a URL or
//! IP:PORT, loopback and lab addresses only), the plan, a progress line, and
//! the report, checked against the namespace's TFO counters. The engine is
//! `fastopen_tools::load`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fastopen::FastOpenCounters;
use serde::Serialize;

use crate::client_opts::parse_timeout;
use fastopen_tools::load::{self, Kind, KindStats, Plan, Protocol};
use fastopen_tools::tls_client::Trust;

/// Load a server with new connections, TFO or plain: requests/s, latency, errors.
///
/// Each request is a new connection: TCP Fast Open by default (the request
/// in the SYN once a cookie is cached), --plain for plain TCP, --both to
/// interleave the two in one run. TARGET is an http:// or https:// URL (a
/// GET with Connection: close; https with rustls, the ClientHello in the
/// SYN), or IP:PORT of an echo server (`tfo serve`), which must send each
/// line back.
///
/// Closed loop by default: --connections clients, each sending its next
/// request when the last is answered. --rate R is open loop: R requests
/// started per second whatever the server does (at most --connections in
/// flight), latency counted from when each should have started, so a
/// stalling server cannot hide its queue (as wrk2 does).
///
/// The run stops after --requests or --duration, whichever comes first.
/// Every reply is checked: the echo must be the line sent; an HTTP reply must
/// be a 2xx with its whole body, and a server that echoes requests must echo
/// this one. The report gives requests/s, latency percentiles, errors by
/// kind, and how many requests rode in the SYN (why not, for the others),
/// next to the namespace's TCPFastOpenActive counter.
///
/// tfo load floods: it only targets loopback and the lab's addresses
/// (198.18.0.0/15, fdf0:7466:6f00::/48).
///
/// Examples:
///   tfo serve --http &  tfo load http://127.0.0.1:8000/ -c 32 -n 20000
///   tfo load http://127.0.0.1:8080/ --both --rate 5000 --duration 10s
///   sudo tfo lab --rtt 10ms -- tfo load http://198.18.0.2:8000/
///
/// Exit: 0 every request answered correctly; 1 some were not; 2 usage.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// http://HOST[:PORT]/PATH, https://..., or IP:PORT of an echo server.
    target: String,
    /// Concurrent clients (closed loop), or the most requests in flight (--rate).
    #[arg(short = 'c', long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// Requests in all.
    #[arg(short = 'n', long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
    /// The longest the run may take.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_timeout)]
    duration: Duration,
    /// Open loop: start this many requests per second.
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Plain TCP only.
    #[arg(long, conflicts_with = "both")]
    plain: bool,
    /// TFO and plain TCP interleaved, each reported.
    #[arg(long)]
    both: bool,
    /// Each request's deadline, from connect to the reply's end.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Duration,
    /// Worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: Option<u32>,
    /// https: trust only the CAs in this PEM file.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// https: accept any certificate.
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// https: send each request as TLS 1.3 early data (0-RTT) when a session
    /// ticket from an earlier connection allows it: the ClientHello and the
    /// request ride in the SYN together, the answer comes one round trip
    /// after the connect. Early data can be replayed: only for requests that
    /// are safe to run twice (tfo load sends GETs).
    #[arg(long)]
    tls_early_data: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && (0.1..=10_000_000.0).contains(&r) => Ok(r),
        _ => Err(format!("{text:?}: give requests per second, from 0.1 to 10000000")),
    }
}

/// The report (`--json` prints it; its field names are a contract, README).
#[derive(Debug, Serialize)]
struct LoadReport {
    target: String,
    server: SocketAddr,
    /// `closed` (C clients) or `open` (a target rate).
    #[serde(rename = "loop")]
    loop_kind: &'static str,
    connections: u32,
    rate: Option<f64>,
    /// Every request of the run.
    #[serde(flatten)]
    all: Figures,
    duration_ms: f64,
    interrupted: bool,
    /// Each of `tfo` and `plain`, when both ran.
    by_kind: Vec<KindReport>,
    /// The namespace's TFO counters over the run.
    kernel: KernelCheck,
}

type BTreeMapStr = std::collections::BTreeMap<&'static str, u64>;

/// What requests got: the same fields for the run and for each kind.
#[derive(Debug, Serialize)]
struct Figures {
    /// Requests sent; `errors` of them got no correct reply.
    requests: u64,
    errors: u64,
    /// In flight when the run ended (its --duration, or Ctrl-C): not errors.
    cancelled: u64,
    /// Correct replies per second of the run.
    requests_per_second: f64,
    /// Requests whose data rode in the SYN.
    tfo_used: u64,
    /// Why the other requests' data did not (the library's reasons).
    not_in_syn: BTreeMapStr,
    errors_by_kind: BTreeMapStr,
    latency_ms: Latency,
    /// HTTPS: what TLS resumption and early data did.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsFigures>,
}

/// TLS resumption and early data, over the answered HTTPS requests.
#[derive(Debug, Serialize)]
struct TlsFigures {
    handshakes: u64,
    resumed: u64,
    /// Requests sent as early data (with the ClientHello: in the SYN when TFO carried it).
    early_data_sent: u64,
    /// Of those, the ones the server took (the others were sent again after the handshake).
    early_data_accepted: u64,
    early_data_rejected: u64,
    /// With --tls-early-data, why the others were not sent as early data:
    /// `no_ticket`, `server_allows_none`.
    early_data_not_sent: BTreeMapStr,
}

#[derive(Debug, Serialize)]
struct KindReport {
    kind: Kind,
    #[serde(flatten)]
    figures: Figures,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

#[derive(Debug, Serialize)]
struct KernelCheck {
    active: u64,
    active_fail: u64,
    cookie_reqd: u64,
    listen_overflow: u64,
    passive: u64,
    /// TCPFastOpenActive rose by `tfo_used`, or by up to the failed requests
    /// more (their SYN data may have been acknowledged before they failed);
    /// other TFO clients in this namespace during the run make it differ.
    agrees: bool,
    /// How much of the rise the failed requests explain.
    failed_may_have_used_tfo: u64,
}

impl Figures {
    fn of(s: &KindStats, elapsed: Duration) -> Figures {
        Figures {
            requests: s.sent,
            errors: s.errors(),
            cancelled: s.cancelled(),
            requests_per_second: s.ok as f64 / elapsed.as_secs_f64().max(1e-9),
            tfo_used: s.tfo_used,
            not_in_syn: s.not_in_syn.clone(),
            errors_by_kind: s
                .failures
                .iter()
                .filter(|(f, _)| **f != load::Failure::Cancelled)
                .map(|(f, n)| (f.as_str(), *n))
                .collect(),
            latency_ms: latency(s),
            tls: (s.tls.handshakes > 0).then(|| TlsFigures {
                handshakes: s.tls.handshakes,
                resumed: s.tls.resumed,
                early_data_sent: s.tls.early_data_sent,
                early_data_accepted: s.tls.early_data_accepted,
                early_data_rejected: s.tls.early_data_sent - s.tls.early_data_accepted,
                early_data_not_sent: s.tls.early_data_not_sent.clone(),
            }),
        }
    }
}

fn latency(s: &KindStats) -> Latency {
    let l = &s.latency;
    Latency {
        p50: l.quantile_ms(0.5),
        p90: l.quantile_ms(0.9),
        p99: l.quantile_ms(0.99),
        p999: l.quantile_ms(0.999),
        max: l.max_ms(),
        mean: l.mean_ms(),
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (addr, protocol) = target(&args)?;
    let kinds = match (args.plain, args.both) {
        (true, _) => vec![Kind::Plain],
        (false, true) => vec![Kind::Tfo, Kind::Plain],
        (false, false) => vec![Kind::Tfo],
    };
    let threads =
        args.threads.map_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()), |t| t as usize);
    let plan = Plan {
        addr,
        protocol,
        connections: args.connections as usize,
        requests: args.requests,
        duration: args.duration,
        rate: args.rate,
        kinds,
        timeout: args.timeout,
        threads,
    };
    crate::interrupt::install();
    let before = FastOpenCounters::read().ok();
    let progress = Arc::new(load::Progress::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = progress_thread(progress.clone(), stop.clone(), args.requests, args.json);
    let outcome = load::run(plan, progress, crate::interrupt::token());
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let outcome = outcome?;
    let after = FastOpenCounters::read().ok();
    let total = outcome.total();
    let delta = match (&after, &before) {
        (Some(a), Some(b)) => a - b,
        _ => FastOpenCounters::default(),
    };
    let report = LoadReport {
        target: args.target.clone(),
        server: addr,
        loop_kind: if args.rate.is_some() { "open" } else { "closed" },
        connections: args.connections,
        rate: args.rate,
        all: Figures::of(&total, outcome.elapsed),
        duration_ms: outcome.elapsed.as_secs_f64() * 1000.0,
        interrupted: outcome.interrupted,
        by_kind: outcome
            .by_kind
            .iter()
            .map(|(k, s)| KindReport { kind: *k, figures: Figures::of(s, outcome.elapsed) })
            .collect(),
        kernel: KernelCheck {
            active: delta.active,
            active_fail: delta.active_fail,
            cookie_reqd: delta.cookie_reqd,
            listen_overflow: delta.listen_overflow,
            passive: delta.passive,
            // Failed requests may have had their data acknowledged in the SYN too.
            agrees: (total.tfo_used..=total.tfo_used + total.errors()).contains(&delta.active),
            failed_may_have_used_tfo: delta.active.saturating_sub(total.tfo_used).min(total.errors()),
        },
    };
    let text = if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { render_text(&report) };
    crate::out::text(&text)?;
    Ok(if report.interrupted {
        ExitCode::from(130)
    } else if report.all.errors == 0 && total.ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The server address and what to send, from TARGET; refuses addresses
/// outside loopback and the lab.
fn target(args: &Args) -> anyhow::Result<(SocketAddr, Protocol)> {
    let text = args.target.trim();
    let (addr, protocol) = if text.contains("://") {
        let uri: http::Uri = text.parse().with_context(|| format!("{text:?} is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("{text:?}: the URL must start with http:// or https://"),
        };
        let host = uri.host().context("the URL has no host")?.trim_start_matches('[').trim_end_matches(']');
        // The port as typed: http's Uri drops a port above 65535 without a word.
        let authority = uri.authority().map_or("", |a| a.as_str());
        let typed_port = authority.rsplit_once(':').map(|(_, p)| p).filter(|p| !p.contains(']'));
        let port = match typed_port {
            None | Some("") => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => bail!("{text:?}: port {p} is not a server's port (1 to 65535)"),
                Ok(port) => port,
            },
        };
        let addr = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let host_header = uri.authority().map_or(host.to_string(), |a| a.as_str().to_string());
        let protocol = if https {
            let trust = Trust::from_flags(args.ca.as_deref(), args.insecure);
            let server_name = fastopen_tools::tls_client::server_name(Some(host), addr).map_err(anyhow::Error::msg)?;
            let mut client = crate::client_opts::tls_client(trust, true)?;
            if args.tls_early_data {
                client = client.with_early_data();
            }
            let early_data = args.tls_early_data;
            Protocol::Https { host: host_header, path, tls: client.config(), server_name, early_data }
        } else {
            if args.tls_early_data {
                bail!("--tls-early-data is for https:// targets (TLS 1.3 early data)");
            }
            Protocol::Http { host: host_header, path }
        };
        (addr, protocol)
    } else {
        let addr: SocketAddr = text.parse().map_err(|_| {
            anyhow::anyhow!("{text:?}: give an http:// or https:// URL, or IP:PORT of an echo server (tfo serve)")
        })?;
        if addr.port() == 0 {
            bail!("{text:?}: port 0 is not a server's port (1 to 65535)");
        }
        (addr, Protocol::Raw)
    };
    if !allowed(addr.ip()) {
        bail!(
            "{}: tfo load floods its target, so it only loads loopback and the lab's addresses (198.18.0.0/15, fdf0:7466:6f00::/48); run the server there, or across `tfo lab`",
            addr.ip()
        );
    }
    Ok((addr, protocol))
}

fn allowed(ip: IpAddr) -> bool {
    ip.is_loopback() || fastopen_lab::topology::is_lab_address(ip)
}

/// A progress line on stderr each second (a terminal only, and not with --json).
fn progress_thread(
    progress: Arc<load::Progress>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    total: u64,
    json: bool,
) -> std::thread::JoinHandle<()> {
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} requests, {per_sec}, {msg} [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    };
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if crate::interrupt::requested() {
                stop.store(true, Ordering::Relaxed);
            }
            bar.set_position(progress.done.load(Ordering::Relaxed));
            bar.set_message(format!("{} errors", progress.failed.load(Ordering::Relaxed)));
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    })
}

fn render_text(r: &LoadReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mode = if r.loop_kind == "open" {
        format!("open loop at {} requests/s, at most {} in flight", r.rate.unwrap_or_default(), r.connections)
    } else {
        format!("closed loop, {} clients", r.connections)
    };
    let _ = writeln!(out, "tfo load {} ({}): {mode}, a new connection per request", r.target, r.server);
    for k in &r.by_kind {
        let _ = writeln!(
        out,
            "  {:<5} {:>8} requests  {:>10.0} req/s  latency p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  errors {}",
            k.kind.as_str(),
            k.figures.requests,
            k.figures.requests_per_second,
            k.figures.latency_ms.p50,
            k.figures.latency_ms.p90,
            k.figures.latency_ms.p99,
            k.figures.latency_ms.max,
            k.figures.errors
        );
    }
    let _ = writeln!(
        out,
        "  all   {:>8} requests  {:>10.0} req/s  in {:.2} s{}",
        r.all.requests,
        r.all.requests_per_second,
        r.duration_ms / 1000.0,
        if r.interrupted { " (interrupted)" } else { "" }
    );
    let why: Vec<String> = r.all.not_in_syn.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        out,
        "  data in the SYN: {} of {} answered{}",
        r.all.tfo_used,
        r.all.requests - r.all.errors,
        if why.is_empty() { String::new() } else { format!("; not: {}", why.join(", ")) }
    );
    if let Some(tls) = &r.all.tls {
        let not: Vec<String> = tls.early_data_not_sent.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "  tls: {} handshakes, {} resumed; early data sent {}, accepted {}, rejected {}{}",
            tls.handshakes,
            tls.resumed,
            tls.early_data_sent,
            tls.early_data_accepted,
            tls.early_data_rejected,
            if not.is_empty() { String::new() } else { format!("; not sent: {}", not.join(", ")) }
        );
    }
    if r.all.cancelled > 0 {
        let _ = writeln!(out, "  in flight when the run ended, cancelled: {}", r.all.cancelled);
    }
    if r.all.errors > 0 {
        let kinds: Vec<String> = r.all.errors_by_kind.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "  errors: {}", kinds.join(", "));
    }
    let k = &r.kernel;
    let _ = writeln!(
        out,
        "  kernel: TCPFastOpenActive +{}, ActiveFail +{}, CookieReqd +{}, Passive +{}, ListenOverflow +{}: {}",
        k.active,
        k.active_fail,
        k.cookie_reqd,
        k.passive,
        k.listen_overflow,
        match (k.agrees, k.failed_may_have_used_tfo) {
            (true, 0) => "agrees".to_string(),
            (true, n) => format!("agrees ({n} of the failed requests had their SYN data acknowledged)"),
            (false, _) => "differs (other TFO clients in this namespace?)".to_string(),
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_the_lab() {
        for ok in ["127.0.0.1", "::1", "127.3.4.5", "198.18.0.2", "198.19.0.1", "fdf0:7466:6f00::2"] {
            assert!(allowed(ok.parse().unwrap()), "{ok}");
        }
        for no in ["10.0.0.1", "192.168.1.1", "8.8.8.8", "198.20.0.1", "fdf0:7466:6f01::2", "2001:db8::1"] {
            assert!(!allowed(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2000"), Ok(2000.0));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("fast").unwrap_err().contains("per second"));
    }
}
