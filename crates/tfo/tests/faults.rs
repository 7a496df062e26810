//! `tfo serve` under faults, loaded by `tfo load`, each in a private
//! namespace: a restart in the middle of a run (same key file: TFO goes on at
//! once; another key: the control, where it cannot), a slowloris (idle and
//! byte-a-second connections), and the file descriptor limit. Nothing wrong
//! is ever answered; every error is of a clean kind, within the stated timeout.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// `tfo serve ADDR --http ARGS` through `prefix` (e.g. prlimit), once it listens.
fn start_serve(prefix: &[&str], addr: &str, args: &[&str]) -> Guard {
    let mut command = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(env!("CARGO_BIN_EXE_tfo"));
            c
        }
        None => tfo(),
    };
    let mut child = command
        .args(["serve", addr, "--http", "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tfo serve");
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    // The first byte of the `listening` line: bound and listening.
    stdout.read_exact(&mut first).expect("tfo serve listens");
    // The connection lines are read and thrown away, as a log collector would take them.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    Guard(child)
}

/// SIGTERM, then the exit and the stderr.
fn stop(mut server: Guard) -> String {
    let pid = nix::unistd::Pid::from_raw(server.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = server.0.wait().unwrap();
    let mut err = String::new();
    server.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "tfo serve after SIGTERM: {status}\n{err}");
    err
}

fn load_json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)))
}

/// Error kinds that are not clean: a wrong or missing answer, or an unbounded wait.
fn unclean_errors(report: &Value) -> Vec<String> {
    let clean = ["refused", "reset", "connect_timeout", "timeout"];
    report["errors_by_kind"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|kind| !clean.contains(&kind.as_str()))
        .cloned()
        .collect()
}

#[test]
fn a_restart_mid_run_gives_clean_errors_and_with_the_same_key_tfo_goes_on_at_once() {
    in_netns("faults_restart", 3, || {
        let dir = tempdir("faults_restart");
        let key = dir.join("key");
        write_key(&key, "00112233445566778899aabbccddeeff\n");
        let key_arg = key.to_str().unwrap();
        let addr = "127.0.0.1:8000";
        let server = start_serve(&[], addr, &["--key-file", key_arg]);
        // The cookie is cached before the run: every answered request can ride in the SYN.
        assert!(run_tfo(&["send", addr, "--data", "GET / HTTP/1.1\r\n\r\n"]).status.success());
        let before = counters();
        let load = tfo()
            .args(["load", "http://127.0.0.1:8000/", "--rate", "500", "-n", "2000", "-c", "16"])
            .args(["--timeout", "2s", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let summary = stop(server);
        assert!(summary.contains("0 with errors"), "the old server finished what it had: {summary}");
        std::thread::sleep(Duration::from_millis(200)); // down for a while: refusals
        let server = start_serve(&[], addr, &["--key-file", key_arg]);
        let o = load.wait_with_output().unwrap();
        let d = &counters() - &before;
        let r = load_json(&o);
        let errors = r["errors"].as_u64().unwrap();
        assert_eq!(r["requests"].as_u64(), Some(2000), "{r:#}");
        assert!(errors >= 1, "the restart was seen: {r:#}");
        assert!(errors < 500, "only while the server was down: {r:#}");
        assert!(unclean_errors(&r).is_empty(), "{r:#}");
        eprintln!(
            "faults_restart: {errors} of 2000 failed while the server was down ({}), the other {} answered in the SYN; latency max {} ms",
            r["errors_by_kind"], r["tfo_used"], r["latency_ms"]["max"]
        );
        // After the restart the clients' cookies still work: every answered
        // request in the SYN, but one whose SYN met the restart itself (sent as
        // the old listener went, it was retransmitted, and the kernel's
        // retransmission carries no data).
        let not_in_syn = r["not_in_syn"].as_object().unwrap();
        assert!(not_in_syn.keys().all(|reason| reason == "syn_retransmitted"), "{r:#}");
        let retransmitted = not_in_syn.get("syn_retransmitted").and_then(Value::as_u64).unwrap_or(0);
        assert!(retransmitted <= 4, "{r:#}");
        assert_eq!(r["tfo_used"].as_u64(), Some(2000 - errors - retransmitted), "{r:#}");
        assert_eq!((d.passive_fail, d.cookie_reqd), (0, 0), "{d:?}");

        // The control: a restart with another key. The cached cookie is refused
        // (PassiveFail), the data waits for the handshake, and a new cookie comes.
        stop(server);
        write_key(&key, "ffeeddccbbaa99887766554433221100\n");
        let _server = start_serve(&[], addr, &["--key-file", key_arg]);
        let before = counters();
        let o = run_tfo(&["send", addr, "--data", "GET / HTTP/1.1\r\n\r\n", "--json"]);
        let d = &counters() - &before;
        let sent = json(&o);
        assert_eq!(sent["tfo_used"], false, "{sent}");
        assert_eq!(d.passive_fail, 1, "{d:?}");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Raises this process's soft open-file limit to its hard limit (children inherit it).
fn raise_fd_limit(needed: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(hard >= needed, "this test needs {needed} file descriptors; the hard limit is {hard}");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// Connections that are never answered: each read sees the close (`Ok(0)`)
/// or a reset; returns, for each, when that came (None: not within `within`).
fn wait_closed(conns: &mut [TcpStream], opened: Instant, within: Duration) -> Vec<Option<Duration>> {
    let mut closed_at = vec![None; conns.len()];
    for c in conns.iter() {
        c.set_nonblocking(true).unwrap();
    }
    let mut buf = [0u8; 512];
    while opened.elapsed() < within && closed_at.iter().any(Option::is_none) {
        for (c, at) in conns.iter_mut().zip(closed_at.iter_mut()).filter(|(_, at)| at.is_none()) {
            match c.read(&mut buf) {
                Ok(0) => *at = Some(opened.elapsed()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *at = Some(opened.elapsed()),
                Ok(_) => {} // a reply (408) first; the close follows
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    closed_at
}

#[test]
fn a_slowloris_does_not_stop_service_and_its_connections_close_after_the_stated_timeouts() {
    in_netns("faults_slowloris", 3, || {
        raise_fd_limit(8192);
        let addr: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let _server = start_serve(&[], "127.0.0.1:8000", &["--idle-timeout", "2s", "--request-timeout", "4s"]);
        let url = "http://127.0.0.1:8000/";
        let baseline = load_json(&tfo().args(["load", url, "-n", "3000", "-c", "32", "--json"]).output().unwrap());

        // 1 000 connections that send nothing, and 1 000 that send a byte a second.
        let opened = Instant::now();
        let mut idle: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut drip: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let drip_clones: Vec<TcpStream> = drip.iter().map(|c| c.try_clone().unwrap()).collect();
        let dripping = std::thread::spawn(move || {
            let request = b"GET / HTTP/1.1\r\nHost: a-very-slow-client\r\n";
            for byte in request.iter().take(6) {
                for c in &drip_clones {
                    let _ = (&*c).write(std::slice::from_ref(byte)); // fails once the server closed
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let under_attack = load_json(&tfo().args(["load", url, "-n", "3000", "-c", "32", "--json"]).output().unwrap());
        assert_eq!((under_attack["requests"].as_u64(), under_attack["errors"].as_u64()), (Some(3000), Some(0)));
        eprintln!(
            "faults_slowloris: {:.0} req/s with 2 000 slow connections open, {:.0} req/s before (ratio {:.2})",
            under_attack["requests_per_second"].as_f64().unwrap(),
            baseline["requests_per_second"].as_f64().unwrap(),
            under_attack["requests_per_second"].as_f64().unwrap() / baseline["requests_per_second"].as_f64().unwrap()
        );

        // The idle ones close at the idle timeout (2 s), not before; the drip
        // ones keep the idle clock running but meet the request timeout (4 s).
        let idle_closed = wait_closed(&mut idle, opened, Duration::from_secs(20));
        let drip_closed = wait_closed(&mut drip, opened, Duration::from_secs(20));
        dripping.join().unwrap();
        for (what, closed, timeout) in [("idle", idle_closed, 2.0), ("drip", drip_closed, 4.0)] {
            let open = closed.iter().filter(|c| c.is_none()).count();
            assert_eq!(open, 0, "{what}: {open} of 1000 still open after 20 s");
            let earliest = closed.iter().flatten().min().unwrap().as_secs_f64();
            assert!(earliest >= timeout - 0.05, "{what}: one closed after {earliest:.2} s, before its {timeout} s");
        }
    });
}

#[test]
fn at_the_fd_limit_the_server_keeps_serving_and_says_why() {
    if !have_tool("faults_fd_limit", "prlimit") {
        return;
    }
    in_netns("faults_fd_limit", 3, || {
        let addr: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let server = start_serve(&["prlimit", "--nofile=256", "--"], "127.0.0.1:8000", &["--idle-timeout", "2s"]);
        let pid = server.0.id();
        let cpu_before = process_cpu(pid);
        // More idle connections than the server has descriptors for; then a load.
        let idle: Vec<TcpStream> = (0..300).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let started = Instant::now();
        let o = tfo()
            .args(["load", "http://127.0.0.1:8000/", "-n", "1000", "-c", "32", "--timeout", "10s", "--json"])
            .output()
            .unwrap();
        let r = load_json(&o);
        let wall = started.elapsed();
        let cpu = process_cpu(pid) - cpu_before;
        assert_eq!((r["requests"].as_u64(), r["errors"].as_u64()), (Some(1000), Some(0)), "{r:#}");
        eprintln!(
            "faults_fd_limit: 1000 requests answered past 300 idle connections at nofile=256 in {:.2} s (p50 {} ms, max {} ms); server CPU {:.2} s",
            wall.as_secs_f64(),
            r["latency_ms"]["p50"],
            r["latency_ms"]["max"],
            cpu.as_secs_f64()
        );
        drop(idle);
        let err = stop(server);
        assert!(err.contains("Too many open files") && err.contains("ulimit -n"), "it says why: {err}");
        // Waiting for descriptors is not spinning: the server slept through the wait.
        assert!(
            cpu < wall.mul_f64(0.5),
            "{:.2} s of CPU over {:.2} s at the limit",
            cpu.as_secs_f64(),
            wall.as_secs_f64()
        );
    });
}

/// User + system CPU time of a live process, from /proc/PID/stat.
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}
