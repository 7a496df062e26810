//! `tfo watch --prometheus ADDR`: what the watch sees, as Prometheus metrics
//! on `/metrics` (the text format, by `prometheus-client`, served by hyper on
//! a thread of its own): the namespace's TCPFastOpen* counters, the
//! connections reported by role and outcome, and the client's cookie cache.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context;
use fastopen::FastOpenCounters;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The kernel counters, each as `tfo_kernel_<name>_total`, in
/// `fastopen::COUNTER_NAMES` order.
const KERNEL_COUNTERS: [(&str, &str, &str); 8] = [
    ("TCPFastOpenActive", "active", "Client SYNs whose data the server acknowledged (TcpExt TCPFastOpenActive)"),
    (
        "TCPFastOpenActiveFail",
        "active_fail",
        "Client SYN data not acknowledged, or a TFO connection's third timeout (TcpExt TCPFastOpenActiveFail)",
    ),
    (
        "TCPFastOpenPassive",
        "passive",
        "Server connections created from a SYN with a valid cookie (TcpExt TCPFastOpenPassive)",
    ),
    (
        "TCPFastOpenPassiveFail",
        "passive_fail",
        "Server SYNs whose cookie matched no key, or whose child failed (TcpExt TCPFastOpenPassiveFail)",
    ),
    (
        "TCPFastOpenListenOverflow",
        "listen_overflow",
        "Server SYNs with data handled as plain SYNs: the TFO queue was full (TcpExt TCPFastOpenListenOverflow)",
    ),
    ("TCPFastOpenCookieReqd", "cookie_reqd", "Server SYNs asking for a cookie (TcpExt TCPFastOpenCookieReqd)"),
    (
        "TCPFastOpenBlackhole",
        "blackhole",
        "Times client TFO was turned off by blackhole detection (TcpExt TCPFastOpenBlackhole)",
    ),
    (
        "TCPFastOpenPassiveAltKey",
        "passive_alt_key",
        "Server cookies that matched the backup key (TcpExt TCPFastOpenPassiveAltKey)",
    ),
];

/// A connection's labels: `role` (client, server), `outcome` (`tfo`, a
/// client's fail reason, or `no_tfo` for a server's connection without SYN
/// data) and `process` (its name; `unknown` when not named; `other` past the
/// first `--max-processes` names, so the label set stays bounded).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    role: &'static str,
    outcome: &'static str,
    process: String,
}

/// `tfo_watch_unnamed_connections_total`'s label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

/// The metrics, updated by the watch loop, encoded on each scrape.
#[derive(Debug)]
pub(crate) struct Exporter {
    /// Where `/metrics` is served.
    pub(crate) addr: SocketAddr,
    kernel: Vec<Counter>,
    kernel_seen: Option<FastOpenCounters>,
    connections: Family<ConnectionLabels, Counter>,
    unnamed: Family<RoleLabel, Counter>,
    cookies: Gauge<i64, std::sync::atomic::AtomicI64>,
    lost: Counter<u64, AtomicU64>,
    /// The process names with a label of their own (at most `max_processes`).
    named: std::sync::Mutex<std::collections::HashSet<String>>,
    max_processes: usize,
}

impl Exporter {
    /// Binds `addr` (now, so a taken port is an error at once) and serves
    /// `/metrics` from a thread until the process ends.
    pub(crate) fn start(addr: SocketAddr, max_processes: usize) -> anyhow::Result<Exporter> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("--prometheus {addr}: cannot listen there (in use? give another port)"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut registry = Registry::with_prefix("tfo");
        let kernel: Vec<Counter> = KERNEL_COUNTERS
            .iter()
            .map(|(_, name, help)| {
                let c = Counter::default();
                registry.register(format!("kernel_{name}"), *help, c.clone());
                c
            })
            .collect();
        let connections = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "connections",
            "Connections tfo watch reported, by role, TFO outcome (tfo, a client's fail reason, or no_tfo) and process name",
            connections.clone(),
        );
        let unnamed = Family::<RoleLabel, Counter>::default();
        registry.register(
            "watch_unnamed_connections",
            "Connections reported without a process name (gone before a read, and no BPF backend or listener to name them)",
            unnamed.clone(),
        );
        let cookies = Gauge::default();
        registry.register(
            "cookie_cache_destinations",
            "Destinations with a TFO cookie in this namespace's client cache (tcp_metrics)",
            cookies.clone(),
        );
        let lost = Counter::default();
        registry.register(
            "watch_lost_notifications",
            "Times the kernel's queue of destroyed-socket notifications overflowed (connections may be missing)",
            lost.clone(),
        );
        let registry = Arc::new(registry);
        std::thread::Builder::new().name("metrics".into()).spawn(move || serve(listener, registry))?;
        Ok(Exporter {
            addr,
            kernel,
            kernel_seen: None,
            connections,
            unnamed,
            cookies,
            lost,
            named: Default::default(),
            max_processes,
        })
    }

    /// Brings the kernel counters to `now` (their first value is their total since the namespace began).
    pub(crate) fn kernel_counters(&mut self, now: &FastOpenCounters) {
        let before = self.kernel_seen.take().unwrap_or_default();
        let delta = now - &before;
        for ((_, value), counter) in delta.iter().zip(&self.kernel) {
            counter.inc_by(value);
        }
        self.kernel_seen = Some(now.clone());
    }

    pub(crate) fn connection(&self, role: &'static str, outcome: &'static str, process: Option<&str>) {
        let process = match process {
            None => {
                self.unnamed.get_or_create(&RoleLabel { role }).inc();
                "unknown".to_string()
            }
            Some(name) => {
                let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
                if named.contains(name) || (named.len() < self.max_processes && named.insert(name.to_string())) {
                    name.to_string()
                } else {
                    "other".to_string()
                }
            }
        };
        self.connections.get_or_create(&ConnectionLabels { role, outcome, process }).inc();
    }

    pub(crate) fn cookie_cache(&self, destinations_with_cookie: usize) {
        self.cookies.set(destinations_with_cookie as i64);
    }

    pub(crate) fn lost_notifications(&self) {
        self.lost.inc();
    }
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// Answers `GET /metrics` (and HEAD; other methods 405, other paths 404)
/// over HTTP/1.1, whatever is done to the port: see [`MAX_CONNECTIONS`],
/// [`CONNECTION_LIFETIME`], [`ACCEPT_BACKOFF`].
fn serve(listener: std::net::TcpListener, registry: Arc<Registry>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
        Ok(r) => r,
        Err(e) => return errln!("tfo watch: the metrics server cannot start: {e}"),
    };
    runtime.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of descriptors or memory: wait, never spin, never end the watch.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            // Past the cap a connection is closed at once: the port cannot take
            // the watch's descriptors (node_exporter's --web.max-requests).
            let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
            let registry = registry.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let response = respond(req.method(), req.uri().path(), &registry);
                async move { response }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(io, service);
                // A client that asks and never reads is cut off: a connection lives at most this long.
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
                drop(slot);
            });
        }
    });
}

/// At most this many connections to the metrics port at once.
const MAX_CONNECTIONS: usize = 64;
/// The longest a metrics connection lives (a scrape takes milliseconds).
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);
/// The pause after a failed accept.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// GET or HEAD /metrics; 405 for other methods, 404 elsewhere.
fn respond(
    method: &hyper::Method,
    path: &str,
    registry: &Registry,
) -> Result<Response<Full<Bytes>>, hyper::http::Error> {
    if path != "/metrics" {
        return Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from("see /metrics\n")));
    }
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header("allow", "GET, HEAD")
            .body(Full::new(Bytes::from("GET or HEAD /metrics\n")));
    }
    Response::builder()
        .header("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(Full::new(Bytes::from(encode(registry))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_and_values() {
        let mut exporter = Exporter::start("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let mut counters = FastOpenCounters::default();
        (counters.active, counters.cookie_reqd) = (5, 2);
        exporter.kernel_counters(&counters);
        counters.active = 7;
        exporter.kernel_counters(&counters);
        exporter.connection("client", "cookie_unavailable", Some("curl"));
        exporter.connection("client", "cookie_unavailable", Some("curl"));
        exporter.connection("server", "tfo", Some("nginx"));
        exporter.connection("client", "tfo", Some("python3")); // a third name: past the bound of 2
        exporter.connection("client", "tfo", None);
        exporter.cookie_cache(3);
        let text = get(exporter.addr, "/metrics");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-type: application/openmetrics-text"), "{text}");
        for line in [
            "# HELP tfo_kernel_active Client SYNs whose data the server acknowledged (TcpExt TCPFastOpenActive).",
            "# TYPE tfo_kernel_active counter",
            "tfo_kernel_active_total 7",
            "tfo_kernel_cookie_reqd_total 2",
            "tfo_kernel_passive_total 0",
            "tfo_connections_total{role=\"client\",outcome=\"cookie_unavailable\",process=\"curl\"} 2",
            "tfo_connections_total{role=\"server\",outcome=\"tfo\",process=\"nginx\"} 1",
            "tfo_connections_total{role=\"client\",outcome=\"tfo\",process=\"other\"} 1",
            "tfo_connections_total{role=\"client\",outcome=\"tfo\",process=\"unknown\"} 1",
            "tfo_watch_unnamed_connections_total{role=\"client\"} 1",
            "tfo_cookie_cache_destinations 3",
            "tfo_watch_lost_notifications_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        assert!(get(exporter.addr, "/").starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn only_get_and_head_and_a_flood_of_idle_connections_is_capped() {
        use std::io::{Read, Write};
        let exporter = Exporter::start("127.0.0.1:0".parse().unwrap(), 20).unwrap();
        let ask = |method: &str| {
            let mut s = std::net::TcpStream::connect(exporter.addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            write!(s, "{method} /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        };
        assert!(ask("POST").starts_with("HTTP/1.1 405"), "{}", ask("POST"));
        assert!(ask("DELETE").contains("allow: GET, HEAD"));
        assert!(ask("HEAD").starts_with("HTTP/1.1 200"));
        // Idle connections past the cap are closed at once, not kept.
        let idle: Vec<_> = (0..MAX_CONNECTIONS).map(|_| std::net::TcpStream::connect(exporter.addr).unwrap()).collect();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut extra = std::net::TcpStream::connect(exporter.addr).unwrap();
        extra.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(extra.read(&mut buf).unwrap_or(0), 0, "closed at once past the cap");
        drop(idle);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(get(exporter.addr, "/metrics").starts_with("HTTP/1.1 200"), "serves again once they are gone");
    }

    /// Every metric the Grafana dashboard in `contrib/grafana` queries is one the exporter serves.
    #[test]
    fn the_grafana_dashboard_queries_only_served_metrics() {
        let exporter = Exporter::start("127.0.0.1:0".parse().unwrap(), 20).unwrap();
        exporter.connection("client", "tfo", None);
        let served = get(exporter.addr, "/metrics");
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../../contrib/grafana/tfo-watch.json")).unwrap();
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for name in
                    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("tfo_"))
                {
                    assert!(served.lines().any(|l| l.starts_with(name)), "{name} in {expr:?} is not served");
                    queried += 1;
                }
            }
        }
        assert!(queried >= 10, "{queried}");
    }

    /// One HTTP/1.0-style GET over a plain socket (the exporter is the server under test).
    fn get(addr: SocketAddr, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    }
}
