//! `cargo bench -p tfo --bench accept_path` (as root): the library's accept
//! path against a plain tokio `TcpListener`, side by side in one run.
//!
//! Two servers in one private namespace (tcp_fastopen=3), built alike: a
//! single-threaded tokio runtime per core, each on its own listener of one
//! `ListenerBuilder::bind_group` (so both do TFO), reading each connection's
//! HTTP request head and answering a fixed 200, then closing. One accepts
//! with `fastopen::TokioListener` (accept, then `accept_outcome`: the TFO
//! outcome from `tcp_info`); the other wraps the same kind of socket in
//! tokio's `TcpListener` and only accepts. `tfo load` (TFO, `-c 32`) loads
//! each in turn, ROUNDS times (default 5) with REQUESTS each (default 20 000).
//! Reported per round: requests/s of each, the CPU the servers used per
//! request (getrusage of this process, which runs nothing else), and the
//! ratios; then the medians. Each server goes first every other round.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use fastopen::ListenerBuilder;
use nix::sys::resource::UsageWho;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::env;

fn main() {
    support::root_or_exit("accept_path");
    let (rounds, requests) = (env("ROUNDS", 5), env("REQUESTS", 20_000));
    fastopen_lab::netns::run_in_private(3, move || bench(rounds, requests)).expect("namespace");
}

/// Which accept a server uses.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Accept {
    Library,
    PlainTokio,
}

fn bench(rounds: u64, requests: u64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let library = start(Accept::Library, cores);
    let plain = start(Accept::PlainTokio, cores);
    let (mut rps_ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
    println!("accept_path: {cores} workers each, tfo load -c 32 -n {requests} (TFO), {rounds} rounds");
    for round in 1..=rounds {
        // Each goes first every other round: neither gets the warmer caches always.
        let ((lib_rps, lib_cpu), (plain_rps, plain_cpu)) = if round % 2 == 1 {
            let lib = measure(library, requests);
            (lib, measure(plain, requests))
        } else {
            let plain = measure(plain, requests);
            (measure(library, requests), plain)
        };
        println!(
            "accept_path: round {round}: library {lib_rps:.0} req/s {lib_cpu:.2} µs CPU/request; plain tokio {plain_rps:.0} req/s {plain_cpu:.2} µs/request; library/plain: {:.3} req/s, {:.3} CPU",
            lib_rps / plain_rps,
            lib_cpu / plain_cpu
        );
        rps_ratios.push(lib_rps / plain_rps);
        cpu_ratios.push(lib_cpu / plain_cpu);
    }
    println!(
        "accept_path: medians, library/plain: {:.3} req/s, {:.3} CPU per request",
        median(&mut rps_ratios),
        median(&mut cpu_ratios)
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Requests per second and the servers' CPU µs per request over one `tfo load` run.
fn measure(addr: SocketAddr, requests: u64) -> (f64, f64) {
    let before = support::cpu(UsageWho::RUSAGE_SELF);
    let out = Command::new(env!("CARGO_BIN_EXE_tfo"))
        .args(["load", &format!("http://{addr}/"), "-c", "32", "-n", &requests.to_string(), "--json"])
        .output()
        .expect("run tfo load");
    let cpu = support::cpu(UsageWho::RUSAGE_SELF) - before;
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["errors"], 0, "{report:#}");
    let rps = report["requests_per_second"].as_f64().unwrap();
    (rps, cpu.as_secs_f64() * 1e6 / requests as f64)
}

/// Starts a server of `workers` workers; returns its address.
fn start(accept: Accept, workers: usize) -> SocketAddr {
    let group = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind_group(workers).expect("bind");
    let addr = group[0].local_addr().unwrap();
    for listener in group {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let std_listener = listener.into_std();
            std_listener.set_nonblocking(true).unwrap();
            runtime.block_on(async move {
                match accept {
                    Accept::Library => {
                        let listener = Arc::new(fastopen::TokioListener::from_std(std_listener).unwrap());
                        loop {
                            let (stream, _, outcome) = listener.accept().await.unwrap();
                            std::hint::black_box(outcome);
                            tokio::spawn(answer(stream));
                        }
                    }
                    Accept::PlainTokio => {
                        let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                        loop {
                            let (stream, _) = listener.accept().await.unwrap();
                            tokio::spawn(answer(stream));
                        }
                    }
                }
            });
        });
    }
    addr
}

/// Reads the request head, answers 200, closes.
async fn answer(mut stream: tokio::net::TcpStream) {
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n";
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = stream.write_all(RESPONSE).await;
}
