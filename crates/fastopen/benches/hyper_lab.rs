//! `cargo bench -p fastopen --bench hyper_lab` (as root): what TFO buys a
//! hyper client, and what the TFO connector costs.
//!
//! 1. Over the lab at 50 ms RTT (client and server namespaces joined by the
//!    emulated link), an axum server on a `TokioListener`, and hyper-util's
//!    client with a new connection per request: time to the response head of
//!    a GET, TFO (`fastopen::hyper::Connector`) against plain
//!    (`.tfo(false)`), interleaved. Target: TFO/plain p50 ≤ 0.51.
//! 2. On loopback: the same GET with `fastopen::hyper::Connector` against
//!    hyper-util's own `HttpConnector`, interleaved. Target: within 5 % at p50.
//!
//! BENCH_N sets the requests per variant (default 200 on the lab, 10 times
//! that on loopback). Not a test: it prints numbers to compare.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fastopen::ListenerBuilder;
use fastopen_lab::{Lab, LabConfig, PathConfig};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !fastopen_lab::netns::is_root() {
        eprintln!("hyper_lab bench: needs root (a lab and a private namespace); run it with sudo");
        std::process::exit(2);
    }
    let n: usize = std::env::var("BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    over_the_lab(n);
    fastopen_lab::netns::run_in_private(3, || on_loopback(n * 10)).expect("private namespace");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// An axum "hello" server on a TFO listener, forever, on this thread's runtime.
async fn serve(addr: SocketAddr, ready: std::sync::mpsc::Sender<SocketAddr>) {
    let listener = ListenerBuilder::new(addr).bind_tokio().expect("bind");
    ready.send(listener.local_addr().expect("addr")).expect("ready");
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello\n" }));
    axum::serve(listener, app).await.expect("serve");
}

fn client<C: Connect + Clone + Send + Sync + 'static>(connector: C) -> Client<C, Empty<bytes::Bytes>> {
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector)
}

/// Time to the response head of one GET, on a new connection.
async fn get<C: Connect + Clone + Send + Sync + 'static>(
    client: &Client<C, Empty<bytes::Bytes>>,
    url: &hyper::Uri,
) -> Duration {
    let start = Instant::now();
    let response = client.get(url.clone()).await.expect("GET");
    let head = start.elapsed();
    response.into_body().collect().await.expect("body");
    head
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(title: &str, a: (&str, Vec<Duration>), b: (&str, Vec<Duration>), target: &str) {
    let (pa, pb) = (p50(a.1), p50(b.1));
    println!("{title}");
    println!("  {:<28} p50 {:>9.3} ms", a.0, pa.as_secs_f64() * 1e3);
    println!("  {:<28} p50 {:>9.3} ms", b.0, pb.as_secs_f64() * 1e3);
    println!("  ratio {}/{} = {:.3} ({target})", a.0, b.0, pa.as_secs_f64() / pb.as_secs_f64());
}

fn over_the_lab(n: usize) {
    let mut path = PathConfig::with_rtt(Duration::from_millis(50));
    path.busy_poll = true;
    let lab = Lab::start(LabConfig { path, ..LabConfig::default() }).expect("lab");
    let (tx, rx) = std::sync::mpsc::channel();
    let server_addr = SocketAddr::new(lab.server_ip(false), 8080);
    lab.server().spawn(move || runtime().block_on(serve(server_addr, tx))).expect("server thread");
    let addr = rx.recv().expect("server up");
    let url: hyper::Uri = format!("http://{addr}/").parse().expect("url");
    let (tfo, plain) = lab
        .client()
        .run(|| {
            runtime().block_on(async {
                let tfo = client(fastopen::hyper::Connector::new());
                let plain = client(fastopen::hyper::Connector::new().tfo(false));
                get(&tfo, &url).await; // the cookie
                let (mut t, mut p) = (Vec::new(), Vec::new());
                for i in 0..n {
                    if i % 2 == 0 {
                        t.push(get(&tfo, &url).await);
                        p.push(get(&plain, &url).await);
                    } else {
                        p.push(get(&plain, &url).await);
                        t.push(get(&tfo, &url).await);
                    }
                }
                (t, p)
            })
        })
        .expect("client namespace");
    report(
        &format!("hyper GET, new connection each, over the lab at 50 ms RTT ({n} each): time to the response head"),
        ("TFO", tfo),
        ("plain", plain),
        "target <= 0.51",
    );
}

fn on_loopback(n: usize) {
    fastopen_lab::netns::set_sysctl("net.ipv4.tcp_tw_reuse", "1").expect("tw_reuse");
    fastopen_lab::netns::set_sysctl("net.ipv4.ip_local_port_range", "10000 65000").expect("port range");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(move || runtime().block_on(serve("127.0.0.1:0".parse().unwrap(), tx)));
        let addr = rx.recv().expect("server up");
        let url: hyper::Uri = format!("http://{addr}/").parse().expect("url");
        let (ours, ours_plain, theirs) = runtime().block_on(async {
            let ours = client(fastopen::hyper::Connector::new());
            let ours_plain = client(fastopen::hyper::Connector::new().tfo(false));
            let theirs = client(HttpConnector::new());
            get(&ours, &url).await;
            let (mut o, mut op, mut t) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..n {
                // Rotate the order so that drift hits all three alike.
                for k in 0..3 {
                    match (i + k) % 3 {
                        0 => o.push(get(&ours, &url).await),
                        1 => op.push(get(&ours_plain, &url).await),
                        _ => t.push(get(&theirs, &url).await),
                    }
                }
            }
            (o, op, t)
        });
        let title = format!("hyper GET on loopback, new connection each ({n} each): the connector's cost");
        report(&title, ("fastopen, TFO off", ours_plain), ("HttpConnector", theirs.clone()), "target within 5 %");
        report(
            "  and with TFO on (the saved handshake shows even on loopback)",
            ("fastopen, TFO on", ours),
            ("HttpConnector", theirs),
            "",
        );
        std::process::exit(0); // the server thread runs forever
    });
}
