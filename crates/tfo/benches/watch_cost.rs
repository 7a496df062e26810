//! `cargo bench -p tfo --bench watch_cost` (as root): what `tfo watch` costs
//! on a busy namespace, and what it misses.
//!
//! In a private namespace: HELD connections (default 5 000, so 10 000 open
//! sockets) stay open to a local listener; then `tfo watch --json` runs
//! while a client opens RATE new connections per second (default 2 000) for
//! SECONDS (default 10), each closed at once by both ends. Reported: the
//! rate reached, the CPU time `tfo watch` used (user + system, from
//! getrusage of the reaped child) per second of watching, and how many of
//! the new connections it did not report (by client port). BACKEND chooses
//! the backend (`bpf`, `sock-diag`; default `auto`), to compare the two.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource, UsageWho};

mod support;

use support::env;

fn main() {
    support::root_or_exit("watch_cost");
    let (held, rate, seconds) = (env("HELD", 5_000), env("RATE", 2_000), env("SECONDS", 10));
    // Both ends of each held connection are in this process.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("fd limit");
    assert!(
        2 * held + 1024 <= hard,
        "HELD={held} needs {} file descriptors; the hard limit is {hard}",
        2 * held + 1024
    );
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise the fd limit");
    fastopen_lab::netns::run_in_private(3, move || bench(held as usize, rate, seconds)).expect("namespace");
}

fn bench(held: usize, rate: u64, seconds: u64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The server keeps the first `held` connections, and closes the others at once.
    std::thread::spawn(move || {
        let mut kept = Vec::with_capacity(held);
        for stream in listener.incoming().flatten() {
            if kept.len() < held {
                kept.push(stream);
            }
        }
    });
    let open: Vec<TcpStream> = (0..held).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let backend = std::env::var("BACKEND").unwrap_or_else(|_| "auto".to_string());
    let cpu_before = support::cpu(UsageWho::RUSAGE_CHILDREN);
    let mut watch = Command::new(env!("CARGO_BIN_EXE_tfo"))
        .args(["watch", "--json", "--interval", "1s", "--backend", &backend, "--duration"])
        .arg(format!("{}s", seconds + 3))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(watch.stderr.take().unwrap()).read_line(&mut ready).unwrap();
    let lines = watch.stdout.take().unwrap();
    let held_ports: HashSet<u16> = open.iter().map(|s| s.local_addr().unwrap().port()).collect();
    let reader = std::thread::spawn(move || reported_new_clients(lines, addr, &held_ports));
    std::thread::sleep(Duration::from_millis(1500));

    let started = Instant::now();
    let total = rate * seconds;
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        drop(TcpStream::connect(addr).unwrap());
    }
    let elapsed = started.elapsed();
    let status = watch.wait().unwrap();
    let reported = reader.join().unwrap();
    let cpu = support::cpu(UsageWho::RUSAGE_CHILDREN) - cpu_before;
    let missed = total.saturating_sub(reported);
    println!(
        "watch_cost: {held} held connections ({} sockets), {total} new connections in {:.2} s ({:.0}/s)",
        2 * held,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
    );
    println!(
        "watch_cost: tfo watch --backend {backend} ({status}) used {:.2} s of CPU over {} s of watching: {:.1} % of one core; it reported {reported} client lines for the {total} new connections: missed {missed}",
        cpu.as_secs_f64(),
        seconds + 3,
        100.0 * cpu.as_secs_f64() / (seconds + 3) as f64,
    );
    drop(open);
}

/// How many client connections to `server` the watch reported, apart from the held ones
/// (counted by line: a client port is reused by later connections on loopback).
fn reported_new_clients(lines: std::process::ChildStdout, server: SocketAddr, held: &HashSet<u16>) -> u64 {
    let mut count = 0;
    for line in BufReader::new(lines).lines().map_while(Result::ok) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let port = v["local"].as_str().and_then(|l| l.rsplit(':').next()?.parse::<u16>().ok());
        if v["role"] == "client" && v["peer"] == server.to_string() && port.is_some_and(|p| !held.contains(&p)) {
            count += 1;
        }
    }
    count
}
