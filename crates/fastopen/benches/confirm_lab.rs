//! `cargo bench -p fastopen --bench confirm_lab` (as root): how soon
//! `wait_confirmed` wakes after the client's ACK reaches the server, and what
//! the wait costs in CPU.
//!
//! Over the lab at 50 ms RTT with the link capturing: for each TFO request,
//! the server thread waits for confirmation and notes CLOCK_MONOTONIC when the
//! wait returns; the link notes (same clock) when it delivered the handshake's
//! final ACK to the server. The difference is the wake-up delay. The waiting
//! thread's CPU time (CLOCK_THREAD_CPUTIME_ID) over all waits gives the cost.
//! BENCH_N sets the requests (default 200).
//!
//! Then, on loopback in a private namespace, LOOPBACK_N (default 100 000)
//! legitimate TFO requests to an echo server that waits for confirmation
//! before answering (what `tfo serve --early-data wait` does): how many were
//! refused or hung (no reply within 5 s). Both must be 0.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use fastopen::{Connector, ListenerBuilder};
use fastopen_lab::{CapturePoint, Lab, LabConfig, PathConfig};
use fastopen_wire::TcpPacket;
use nix::time::{clock_gettime, ClockId};

fn ns(clock: ClockId) -> u64 {
    let t = clock_gettime(clock).expect("clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !fastopen_lab::netns::is_root() {
        eprintln!("confirm_lab bench: needs root (a lab); run it with sudo");
        std::process::exit(2);
    }
    let n: usize = std::env::var("BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut path = PathConfig::with_rtt(Duration::from_millis(50));
    path.busy_poll = true;
    let lab = Lab::start(LabConfig { path, ..LabConfig::default() }).expect("lab");
    let addr = SocketAddr::new(lab.server_ip(false), 8000);
    let listener = lab.server().run(move || ListenerBuilder::new(addr).bind()).expect("ns").expect("bind");
    let (tx, rx) = std::sync::mpsc::channel();
    lab.server()
        .spawn(move || {
            let mut cpu = 0u64;
            for _ in 0..=n {
                let (mut s, peer, outcome) = listener.accept().expect("accept");
                let cpu_before = ns(ClockId::CLOCK_THREAD_CPUTIME_ID);
                let confirmation = fastopen::wait_confirmed(&s, Duration::from_secs(5)).expect("wait");
                let woke = ns(ClockId::CLOCK_MONOTONIC);
                cpu += ns(ClockId::CLOCK_THREAD_CPUTIME_ID) - cpu_before;
                let mut req = Vec::new();
                let _ = s.read_to_end(&mut req);
                let _ = s.write_all(&req);
                tx.send((peer.port(), outcome.data_in_syn, confirmation.is_confirmed(), woke, cpu)).expect("send");
            }
        })
        .expect("server thread");
    lab.stats().set_capture(true);
    let results: Vec<_> = lab
        .client()
        .run(move || {
            (0..=n)
                .map(|_| {
                    let (mut s, _) = Connector::new().connect(addr, b"confirm me").expect("connect");
                    s.shutdown(Shutdown::Write).expect("shutdown");
                    let mut reply = Vec::new();
                    s.read_to_end(&mut reply).expect("reply");
                    rx.recv().expect("server result")
                })
                .collect()
        })
        .expect("client namespace");
    // When the link delivered each connection's first pure ACK to the server (by client port).
    let mut ack_at = std::collections::HashMap::new();
    for p in lab.stats().take_capture() {
        if p.point != CapturePoint::Delivered {
            continue;
        }
        let Ok(t) = TcpPacket::parse_ip(&p.bytes) else { continue };
        if t.dst_port == 8000 && t.flags.0 == fastopen_wire::TcpFlags::ACK && t.payload.is_empty() {
            ack_at.entry(t.src_port).or_insert(p.time.as_nanos() as u64);
        }
    }
    let mut delays: Vec<u64> = results
        .iter()
        .skip(1) // the cookie request
        .filter(|r| r.1 && r.2)
        .filter_map(|r| ack_at.get(&r.0).map(|ack| r.3.saturating_sub(*ack)))
        .collect();
    delays.sort();
    let pick = |q: f64| delays[((delays.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    let cpu_total = results.last().map_or(0, |r| r.4);
    println!("wait_confirmed over the lab at 50 ms RTT, {} TFO connections:", delays.len());
    println!(
        "  wake-up after the ACK reached the server: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    println!(
        "  CPU of the waiting thread: {:.1} us per wait (each wait lasts about one RTT, 50 ms)",
        cpu_total as f64 / 1000.0 / (n + 1) as f64
    );
    drop(lab);
    let loopback_n: usize = std::env::var("LOOPBACK_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    fastopen_lab::netns::run_in_private(3, || legitimate_on_loopback(loopback_n)).expect("private namespace");
}

/// `n` TFO requests on loopback to an echo server that waits for each
/// handshake's confirmation before answering.
fn legitimate_on_loopback(n: usize) {
    fastopen_lab::netns::set_sysctl("net.ipv4.tcp_tw_reuse", "1").expect("tw_reuse");
    fastopen_lab::netns::set_sysctl("net.ipv4.ip_local_port_range", "10000 65000").expect("port range");
    let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().expect("bind");
    let addr = listener.local_addr().unwrap();
    let unconfirmed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = unconfirmed.clone();
    std::thread::spawn(move || loop {
        let Ok((mut s, _, _)) = listener.accept() else { continue };
        let seen = seen.clone();
        // One thread per connection keeps the waits independent (each is short on loopback).
        std::thread::spawn(move || {
            let confirmed =
                fastopen::wait_confirmed(&s, Duration::from_secs(5)).map(|c| c.is_confirmed()).unwrap_or(false);
            if !confirmed {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            let mut req = Vec::new();
            let _ = s.read_to_end(&mut req);
            let _ = s.write_all(&req);
        });
    });
    let connector = Connector::new().connect_timeout(Some(Duration::from_secs(5)));
    let (mut refused, mut hung, mut in_syn) = (0usize, 0usize, 0usize);
    let start = std::time::Instant::now();
    for _ in 0..n {
        match connector.connect(addr, b"legitimate") {
            Ok((mut s, outcome)) => {
                in_syn += usize::from(outcome.tfo_used());
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.shutdown(Shutdown::Write);
                let mut reply = Vec::new();
                match s.read_to_end(&mut reply) {
                    Ok(_) if reply == b"legitimate" => {}
                    Ok(_) => refused += 1,
                    Err(_) => hung += 1,
                }
            }
            Err(_) => refused += 1,
        }
    }
    println!(
        "{n} legitimate TFO requests on loopback, server waiting for confirmation: {refused} refused, {hung} hung, {in_syn} with data in the SYN, {} never confirmed, {:.1} s",
        unconfirmed.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
}
