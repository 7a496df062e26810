//! The lab's behaviour (not its timing precision: that is `tfo bench`'s job):
//! delay applied, each middlebox producing the kernel behaviour it should, and
//! nothing left behind. Root only; each test builds its own lab.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fastopen::{AcceptOutcome, ClientOutcome, Connector, FailReason, FastOpenCounters, ListenerBuilder};
use fastopen_lab::netns::Netns;
use fastopen_lab::{Lab, LabConfig, Middlebox, PathConfig};

fn lab(rtt_ms: u64, middleboxes: Vec<Middlebox>) -> Option<Lab> {
    if !fastopen_lab::testing::root_or_skip("lab") {
        return None;
    }
    let path = PathConfig { middleboxes, ..PathConfig::with_rtt(Duration::from_millis(rtt_ms)) };
    Some(Lab::start(LabConfig { path, ..LabConfig::default() }).expect("lab starts"))
}

/// An echo server in the lab's server namespace; sends each accepted outcome and request.
fn echo_server(lab: &Lab, ipv6: bool) -> (SocketAddr, mpsc::Receiver<(AcceptOutcome, Vec<u8>)>) {
    let bind = SocketAddr::new(lab.server_ip(ipv6), 8000);
    let listener = lab.server().run(move || ListenerBuilder::new(bind).bind()).unwrap().expect("bind in server ns");
    let (tx, rx) = mpsc::channel();
    lab.server()
        .spawn(move || {
            while let Ok((mut s, _, outcome)) = listener.accept() {
                let mut req = Vec::new();
                if s.read_to_end(&mut req).is_ok() {
                    let _ = s.write_all(&req);
                }
                if tx.send((outcome, req)).is_err() {
                    break;
                }
            }
        })
        .unwrap();
    (bind, rx)
}

fn client_exchange(
    lab: &Lab,
    connector: Connector,
    addr: SocketAddr,
    data: &'static [u8],
) -> (ClientOutcome, Duration) {
    lab.client()
        .run(move || {
            let start = Instant::now();
            let (mut s, outcome) = connector.connect(addr, data).expect("connect through the lab");
            s.shutdown(Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            s.read_to_end(&mut reply).unwrap();
            assert_eq!(reply, data);
            (outcome, start.elapsed())
        })
        .unwrap()
}

fn counters_in(ns: &fastopen_lab::netns::Netns) -> FastOpenCounters {
    ns.run(|| FastOpenCounters::read().unwrap()).unwrap()
}

#[test]
fn delay_is_applied_and_tfo_saves_a_round_trip() {
    let Some(lab) = lab(40, vec![]) else { return };
    for ipv6 in [false, true] {
        let (addr, server) = echo_server(&lab, ipv6);
        let (plain, t_plain) = client_exchange(&lab, Connector::new().tfo(false), addr, b"plain");
        assert!(plain.connect_time >= Duration::from_millis(40), "connect took {:?}", plain.connect_time);
        assert!(t_plain >= Duration::from_millis(80), "plain request+reply takes two round trips: {t_plain:?}");
        let (cold, _) = client_exchange(&lab, Connector::new(), addr, b"cold");
        assert_eq!(cold.fail_reason, Some(FailReason::CookieUnavailable));
        let (warm, t_warm) = client_exchange(&lab, Connector::new(), addr, b"warm");
        assert!(warm.tfo_used(), "{warm}");
        assert!(t_warm >= Duration::from_millis(40), "one round trip at least: {t_warm:?}");
        for _ in 0..3 {
            server.recv_timeout(Duration::from_secs(5)).unwrap();
        }
    }
    assert!(lab.counters().to_server_packets > 10);
}

#[test]
fn strip_tfo_means_no_cookie_ever_and_requests_still_answered() {
    let Some(lab) = lab(10, vec![Middlebox::StripTfo]) else { return };
    let (addr, server) = echo_server(&lab, false);
    for _ in 0..3 {
        let (o, _) = client_exchange(&lab, Connector::new(), addr, b"stripped");
        assert_eq!(o.fail_reason, Some(FailReason::CookieUnavailable), "{o}");
        let (accepted, request) = server.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(!accepted.data_in_syn);
        assert_eq!(request, b"stripped");
    }
    let s = counters_in(lab.server());
    assert_eq!((s.cookie_reqd, s.passive), (0, 0), "the server never saw a TFO option: {s:?}");
    assert!(lab.counters().middleboxes.of(Middlebox::StripTfo) >= 3, "{:?}", lab.counters());
}

#[test]
fn drop_syn_data_makes_the_client_retransmit_without_data() {
    let Some(lab) = lab(10, vec![Middlebox::DropSynData]) else { return };
    let (addr, server) = echo_server(&lab, false);
    let (cold, _) = client_exchange(&lab, Connector::new(), addr, b"cookie please");
    assert_eq!(cold.fail_reason, Some(FailReason::CookieUnavailable), "a SYN without data passes");
    server.recv_timeout(Duration::from_secs(5)).unwrap();
    let before = counters_in(lab.client());
    let (warm, _) = client_exchange(&lab, Connector::new(), addr, b"dropped in the SYN");
    assert!(matches!(warm.fail_reason, Some(FailReason::SynRetransmitted | FailReason::DataNotAcked)), "{warm}");
    assert!(warm.syn_bytes_sent > 0 && warm.bytes_in_syn == 0, "{warm:?}");
    let (accepted, request) = server.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(request, b"dropped in the SYN", "answered after the retransmission");
    assert!(!accepted.data_in_syn);
    let d = &counters_in(lab.client()) - &before;
    assert_eq!((d.active, d.active_fail), (0, 1), "{d:?}");
    assert_eq!(lab.counters().middleboxes.of(Middlebox::DropSynData), 1);
}

#[test]
fn drop_tfo_syn_makes_the_kernel_fall_back_to_a_plain_syn() {
    let Some(lab) = lab(10, vec![Middlebox::DropTfoSyn]) else { return };
    let (addr, server) = echo_server(&lab, false);
    let before = counters_in(lab.client());
    let (o, elapsed) = client_exchange(&lab, Connector::new(), addr, b"fallback");
    // The SYN with the cookie request is dropped; the retransmitted SYN carries no TFO option.
    assert_eq!((o.fail_reason, o.syn_bytes_sent), (Some(fastopen::FailReason::CookieUnavailable), 0), "{o}");
    assert!(elapsed >= Duration::from_millis(900), "answered only after the SYN retransmission timeout: {elapsed:?}");
    let (accepted, request) = server.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(request, b"fallback");
    assert!(!accepted.data_in_syn);
    let d = &counters_in(lab.client()) - &before;
    let s = counters_in(lab.server());
    assert_eq!((d.active, s.cookie_reqd, s.passive), (0, 0, 0), "client {d:?} server {s:?}");
    assert_eq!(lab.counters().middleboxes.of(Middlebox::DropTfoSyn), 1, "only the first SYN had the option");
    eprintln!("drop-tfo-syn: client outcome {o}, client counters {d:?}");
}

#[test]
fn replay_syn_data_delivers_the_request_twice() {
    let Some(lab) = lab(10, vec![Middlebox::ReplaySynData(Duration::from_millis(300))]) else { return };
    let (addr, server) = echo_server(&lab, false);
    let (cold, _) = client_exchange(&lab, Connector::new(), addr, b"cookie");
    assert_eq!(cold.fail_reason, Some(FailReason::CookieUnavailable));
    server.recv_timeout(Duration::from_secs(5)).unwrap();
    let (warm, _) = client_exchange(&lab, Connector::new(), addr, b"transfer 100 EUR");
    assert!(warm.tfo_used(), "{warm}");
    let (first, req1) = server.recv_timeout(Duration::from_secs(5)).unwrap();
    let (second, req2) = server.recv_timeout(Duration::from_secs(5)).expect("the replayed SYN reaches the application");
    assert!(first.data_in_syn && second.data_in_syn);
    assert_eq!((req1.as_slice(), req2.as_slice()), (&b"transfer 100 EUR"[..], &b"transfer 100 EUR"[..]));
    assert_eq!(counters_in(lab.server()).passive, 2, "the kernel accepted the same SYN data twice");
    assert_eq!(lab.counters().middleboxes.of(Middlebox::ReplaySynData(Duration::ZERO)), 1);
}

#[test]
fn nothing_is_left_behind_even_after_a_panic() {
    if !fastopen_lab::testing::root_or_skip("lab_cleanup") {
        return;
    }
    let names = std::panic::catch_unwind(|| {
        let lab = Lab::start(LabConfig::default()).unwrap();
        let names = [lab.client().name().to_string(), lab.server().name().to_string()];
        assert!(std::path::Path::new(&format!("/run/netns/{}", names[0])).exists());
        std::panic::panic_any(names);
    })
    .expect_err("the closure panics")
    .downcast::<[String; 2]>()
    .unwrap();
    for name in names.iter() {
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists(), "{name} left behind");
    }
    // A live lab whose owner runs in another PID namespace (its pid in the
    // name means nothing here) holds its lock: the next start leaves it alone.
    let live_base = format!("{}999999-0-beef", fastopen_lab::netns::NAME_PREFIX);
    let live = format!("{live_base}-client");
    let lock = fastopen_lab::netns::LabLock::acquire(&live_base).unwrap();
    fastopen_lab::netns::ip(&["netns", "add", &live]).unwrap();
    let lab = Lab::start(LabConfig::default()).unwrap();
    let exists = |n: &str| std::path::Path::new(&format!("/run/netns/{n}")).exists();
    assert!(exists(&live), "a live lab (lock held) was deleted");
    assert_eq!(fastopen_lab::netns::running("client").iter().filter(|n| **n == live).count(), 1);
    drop(lab);
    // Its owner gone (lock released, as the kernel does when a process dies):
    // now it is a leftover, and the next start sweeps it.
    drop(lock);
    let stale = format!("{}999998-0-dead-server", fastopen_lab::netns::NAME_PREFIX);
    fastopen_lab::netns::ip(&["netns", "add", &stale]).unwrap();
    let lab = Lab::start(LabConfig::default()).unwrap();
    assert!(!exists(&live) && !exists(&stale), "leftovers not swept");
    drop(lab);
}

#[test]
fn tfo_lab_runs_curl_against_tfo_serve_across_the_path() {
    if !fastopen_lab::testing::root_or_skip("tfo_lab_cli") || !common::have_tool("tfo_lab_cli", "curl") {
        return;
    }
    let tfo = env!("CARGO_BIN_EXE_tfo");
    let curl = "curl -sS --tcp-fastopen -o /dev/null http://$TFOKIT_SERVER_IP:8000/";
    let o = std::process::Command::new(tfo)
        .args(["lab", "--rtt", "20ms", "--json", "--server"])
        .arg(format!("{tfo} serve $TFOKIT_SERVER_IP:8000 --http"))
        .args(["--client", curl, "--client", curl])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let v = common::json(&o);
    assert_eq!(v["client_counters_delta"]["active"], 1, "{v}");
    assert_eq!(v["server_counters_delta"]["passive"], 1, "{v}");
    assert_eq!(v["server_counters_delta"]["cookie_reqd"], 1, "{v}");
    assert!(v["link"]["to_server_packets"].as_u64().unwrap() >= 6);
}

#[test]
fn tfo_bench_reports_both_modes_and_the_outcomes() {
    if !fastopen_lab::testing::root_or_skip("tfo_bench_cli") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tfo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("bench.svg");
    let o = common::run_tfo(&["bench", "--rtt", "20ms", "--requests", "6", "--json", "--plot", svg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let v = common::json(&o);
    let r = &v["results"][0];
    assert_eq!(r["requests"], 6);
    assert_eq!(r["tfo_used"], 6, "{r}");
    assert_eq!(r["cold_cookie_requests"], 1, "{r}");
    // Physics, not timing: plain needs two round trips, TFO at least one.
    assert!(r["plain"]["p50_ms"].as_f64().unwrap() >= 40.0, "{r}");
    assert!(r["tfo"]["p50_ms"].as_f64().unwrap() >= 20.0, "{r}");
    assert!(r["ratio_p50"].as_f64().unwrap() < 1.0, "{r}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.contains("<svg") && plot.contains("time to the full reply"), "plot has axis labels");

    // Through a stripping middlebox TFO never happens, and the report says why.
    let o =
        common::run_tfo(&["bench", "--rtt", "10ms", "--requests", "3", "--json", "--middlebox", "strip-tfo", "--http"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let r = &common::json(&o)["results"][0];
    assert_eq!(r["tfo_used"], 0, "{r}");
    assert_eq!(r["tfo_fail_reasons"]["cookie_unavailable"], 3, "{r}");
    assert!(r["link"]["stripped"].as_u64().unwrap() > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_and_lab_without_root_explain() {
    if !fastopen_lab::testing::root_or_skip("lab_nonroot") {
        return;
    }
    for args in [&["bench", "--rtt", "10ms"][..], &["lab", "--client", "true"][..]] {
        let o = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_tfo")])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(common::stderr(&o).contains("needs root"), "{}", common::stderr(&o));
    }
}

#[test]
fn the_link_capture_shows_the_option_stripped_on_the_way() {
    let Some(lab) = lab(10, vec![Middlebox::StripTfo]) else { return };
    let (addr, server) = echo_server(&lab, false);
    lab.stats().set_capture(true);
    client_exchange(&lab, Connector::new(), addr, b"watch the wire");
    server.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut tracker = fastopen_wire::timeline::Tracker::new();
    for p in lab.stats().take_capture() {
        let point = if p.point == fastopen_lab::CapturePoint::Sent { 0 } else { 1 };
        // Not everything on the link is TCP (IPv6 neighbour discovery, for one).
        if let Ok(packet) = fastopen_wire::TcpPacket::parse_ip(&p.bytes) {
            tracker.push(p.time, point, &packet);
        }
    }
    let conns = tracker.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].verdict(), fastopen_wire::timeline::Verdict::OptionStripped);
    // The client's SYN left with a cookie request and arrived without it.
    let syns: Vec<_> = conns[0].events.iter().filter(|e| e.flags.is_syn()).collect();
    assert_eq!((syns[0].point, syns[0].tfo.is_some()), (0, true));
    assert_eq!((syns[1].point, syns[1].tfo.is_some()), (1, false));
}

/// `tfo probe` run by `tfo lab` in the client namespace against `tfo serve`.
fn probe_through(middlebox: Option<&str>, serve_args: &str) -> serde_json::Value {
    let tfo = env!("CARGO_BIN_EXE_tfo");
    let mut cmd = std::process::Command::new(tfo);
    cmd.args(["lab", "--rtt", "20ms"]);
    if let Some(m) = middlebox {
        cmd.args(["--middlebox", m]);
    }
    let o = cmd
        .arg("--server")
        .arg(format!("{tfo} serve $TFOKIT_SERVER_IP:8000 {serve_args} > /dev/null"))
        .arg("--client")
        .arg(format!("{tfo} probe $TFOKIT_SERVER_IP:8000 --json"))
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", common::stderr(&o)))
}

#[test]
fn probe_names_where_tfo_breaks() {
    if !fastopen_lab::testing::root_or_skip("probe") {
        return;
    }
    let works = probe_through(None, "");
    assert_eq!((works["tfo_works"].as_bool(), works["diagnosis"].as_str()), (Some(true), Some("works")), "{works}");
    assert!(works["saved_ms"].is_number(), "a saving is reported when TFO works: {works}");
    assert_eq!(works["attempts"][1]["tfo_used"], true, "{works}");
    for (middlebox, serve, diagnosis) in [
        (None, "--queue 0", "no_cookie"),
        (Some("strip-tfo"), "", "no_cookie"),
        (Some("drop-syn-data"), "", "syn_data_dropped"),
        (Some("drop-tfo-syn"), "", "tfo_syn_dropped"),
    ] {
        let v = probe_through(middlebox, serve);
        assert_eq!(v["tfo_works"], false, "{middlebox:?} {serve}: {v}");
        assert_eq!(v["diagnosis"], diagnosis, "{middlebox:?} {serve}: {v}");
    }
}

#[test]
fn one_way_delays_can_differ() {
    if !fastopen_lab::testing::root_or_skip("asymmetric") {
        return;
    }
    let tfo = env!("CARGO_BIN_EXE_tfo");
    let o = std::process::Command::new(tfo)
        .args(["lab", "--delay", "30ms/10ms", "--loss", "0/0%", "--server"])
        .arg(format!("{tfo} serve $TFOKIT_SERVER_IP:8000 > /dev/null"))
        .arg("--client")
        .arg(format!("{tfo} send $TFOKIT_SERVER_IP:8000 --data x --no-tfo --json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["connect_ms"].as_f64().unwrap() >= 40.0, "SYN 30 ms + SYN-ACK 10 ms: {v}");
    assert!(common::stderr(&o).contains("RTT 40 ms (30 + 10)"), "{}", common::stderr(&o));
}

#[test]
fn tfo_trace_captures_a_lab_side_live_on_its_tun_device() {
    if !common::have_tool("trace_lab", "tcpdump") {
        return;
    }
    let Some(lab) = lab(20, vec![]) else { return };
    let (addr, server) = echo_server(&lab, false);
    client_exchange(&lab, Connector::new(), addr, b"cookie first");
    server.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut trace = common::Guard(
        std::process::Command::new(env!("CARGO_BIN_EXE_tfo"))
            .args(["trace", "--netns", lab.client().name(), "-i", "tfo0", "--json", "--port", "8000"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = std::io::BufReader::new(trace.0.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.starts_with("capturing on tfo0"), "{line}");
    let (o, _) = client_exchange(&lab, Connector::new(), addr, b"in the SYN, through the lab");
    assert!(o.tfo_used());
    server.recv_timeout(Duration::from_secs(5)).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(trace.0.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = std::mem::replace(&mut trace.0, std::process::Command::new("true").spawn().unwrap())
        .wait_with_output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v["connections"][0];
    assert_eq!(c["verdict"], "tfo_used", "{v}");
    assert_eq!(c["bytes_in_syn"], 27);
    assert_eq!(v["stats"]["malformed"], 0, "raw IP frames from the TUN device decode: {v}");
}

/// With the replay middlebox: the real connection's handshake is confirmed
/// (waiting about one round trip for the client's ACK), the replayed one's
/// never is (the real client answers its SYN-ACK with a reset). The blocking,
/// async and at-close waits agree.
#[test]
fn waiting_for_confirmation_filters_the_replayed_syn() {
    let Some(lab) = lab(20, vec![Middlebox::ReplaySynData(Duration::from_millis(100))]) else { return };
    let bind = SocketAddr::new(lab.server_ip(false), 8001);
    let listener = lab.server().run(move || ListenerBuilder::new(bind).bind()).unwrap().expect("bind");
    let (tx, rx) = mpsc::channel();
    lab.server()
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            for i in 0.. {
                let Ok((s, _, outcome)) = listener.accept() else { break };
                // In turn: the blocking wait, the async one, and the one for a
                // finished connection (on a copy of the socket, which it closes):
                // all must agree, real and replayed connections alike.
                let confirmation = match i % 3 {
                    0 => fastopen::wait_confirmed(&s, Duration::from_secs(5)).unwrap(),
                    1 => rt.block_on(fastopen::wait_confirmed_async(&s, Duration::from_secs(5))).unwrap(),
                    _ => {
                        let copy = s.try_clone().unwrap();
                        copy.set_nonblocking(true).unwrap();
                        let confirmation = rt.block_on(async {
                            let copy = tokio::net::TcpStream::from_std(copy).unwrap();
                            fastopen::confirmation_at_close(copy, Duration::from_secs(5)).await
                        });
                        s.set_nonblocking(false).unwrap(); // the copy shares the flag
                        confirmation.unwrap()
                    }
                };
                if tx.send((outcome, confirmation)).is_err() {
                    break;
                }
                let mut s = s;
                let mut req = Vec::new();
                let _ = s.read_to_end(&mut req);
                let _ = s.write_all(&req);
            }
        })
        .unwrap();
    let (cold, _) = client_exchange(&lab, Connector::new(), bind, b"cookie");
    assert_eq!(cold.fail_reason, Some(FailReason::CookieUnavailable));
    let (plain_outcome, plain_confirmation) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(!plain_outcome.data_in_syn);
    // A plain connection is accepted after its handshake: confirmed at once.
    assert!(plain_confirmation.is_confirmed(), "{plain_confirmation:?}");
    for _ in 0..3 {
        let (warm, _) = client_exchange(&lab, Connector::new(), bind, b"transfer 100 EUR");
        assert!(warm.tfo_used(), "{warm}");
        let (first, confirmed) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let (second, replayed) = rx.recv_timeout(Duration::from_secs(10)).expect("the replay is accepted");
        assert!(first.data_in_syn && second.data_in_syn);
        match confirmed {
            fastopen::Confirmation::Confirmed { waited } => {
                // The ACK comes one round trip after the SYN (20 ms here).
                assert!(waited >= Duration::from_millis(15), "confirmed too early: {waited:?}");
            }
            other => panic!("the real connection was not confirmed: {other:?}"),
        }
        assert_eq!(replayed, fastopen::Confirmation::Failed, "the replayed SYN must never be confirmed");
    }
}

/// Starts `tfo serve ARGS --json` in `ns` and waits for its "listening"
/// line; returns the process and its remaining log lines.
fn start_serve(
    ns: &Netns,
    args: &[&str],
) -> (std::process::Child, std::io::Lines<std::io::BufReader<std::process::ChildStdout>>) {
    use std::io::BufRead;
    let mut child = ns
        .command(env!("CARGO_BIN_EXE_tfo"))
        .arg("serve")
        .args(args)
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = lines.next().unwrap().unwrap();
    assert!(listening.contains("listening"), "{listening}");
    (child, lines)
}

/// Where `serve_replayed` runs: servers (one per namespace, each with the
/// extra arguments) and a client.
struct Replayed<'a> {
    servers: Vec<&'a Netns>,
    client: &'a Netns,
    bind: SocketAddr,
    connect: SocketAddr,
    extra: Vec<String>,
}

/// Runs `tfo serve --json --early-data POLICY` in each server namespace,
/// makes `n` TFO requests with unique ids from the client, stops the servers
/// and returns their connection log lines (all servers together).
fn serve_replayed(at: &Replayed, policy: &str, http: bool, n: usize) -> Vec<serde_json::Value> {
    let mut servers = Vec::new();
    for ns in &at.servers {
        let bind = at.bind.to_string();
        let mut args = vec![bind.as_str(), "--early-data", policy];
        args.extend(at.extra.iter().map(String::as_str));
        if http {
            args.push("--http");
        }
        let (child, lines) = start_serve(ns, &args);
        let reader = std::thread::spawn(move || {
            lines
                .map_while(Result::ok)
                .map(|l| serde_json::from_str::<serde_json::Value>(&l).unwrap())
                .collect::<Vec<_>>()
        });
        servers.push((child, reader));
    }
    let addr = at.connect;
    at.client
        .run(move || {
            for id in 0..n {
                let body = format!("transfer #{id}");
                let request = if http {
                    format!("POST / HTTP/1.1\r\nHost: lab\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
                } else {
                    body.clone().into_bytes()
                };
                let (mut s, _) = Connector::new().connect(addr, &request).expect("connect");
                s.shutdown(Shutdown::Write).unwrap();
                let mut reply = Vec::new();
                s.read_to_end(&mut reply).unwrap();
                assert!(reply.ends_with(body.as_bytes()), "request {id} lost: {}", String::from_utf8_lossy(&reply));
            }
        })
        .unwrap();
    // Let the last replays arrive and be answered by the client's reset.
    std::thread::sleep(Duration::from_millis(400));
    let mut log = Vec::new();
    for (mut child, reader) in servers {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let _ = child.wait();
        log.extend(reader.join().unwrap());
    }
    log
}

/// Each request's SYN is replayed by the path. Under `wait` every request is
/// handled exactly once and every replay is held and dropped; under `allow`
/// the replays are handled too (the danger `wait` guards against).
#[test]
fn early_data_wait_handles_each_request_once_under_replay() {
    let Some(lab) = lab(2, vec![Middlebox::ReplaySynData(Duration::from_millis(20))]) else { return };
    // Not ("allow", true): the HTTP server answers at once and closes first, so
    // its TIME_WAIT absorbs a replay of the same connection; the fleet test
    // shows HTTP under `allow` handling a replay that reaches another server.
    for (policy, http) in [("wait", false), ("wait", true), ("allow", false)] {
        let n = 1000;
        let before = lab.counters().middleboxes.of(Middlebox::ReplaySynData(Duration::ZERO));
        let addr = SocketAddr::new(lab.server_ip(false), 8100);
        let at =
            Replayed { servers: vec![lab.server()], client: lab.client(), bind: addr, connect: addr, extra: vec![] };
        let log = serve_replayed(&at, policy, http, n);
        let replays = (lab.counters().middleboxes.of(Middlebox::ReplaySynData(Duration::ZERO)) - before) as usize;
        let handled = log.iter().filter(|l| l["handled"] == true).count();
        let unconfirmed_in_syn = log.iter().filter(|l| l["in_syn"] == true && l["confirmed"] == false).count();
        assert!(replays >= n - 1, "{policy}: the path replayed {replays} SYNs");
        // A replay reset before the application accepts it never reaches it; every
        // one that was accepted has its log line, and is never confirmed.
        let accepted_replays = log.len() - n;
        assert!(accepted_replays >= 10 && accepted_replays <= replays, "{policy}: {accepted_replays} of {replays}");
        assert_eq!(unconfirmed_in_syn, accepted_replays, "{policy}: each accepted replay is seen unconfirmed");
        match policy {
            "wait" => {
                assert_eq!(handled, n, "http={http}: each request handled exactly once");
                assert!(log.iter().all(|l| l["handled"] == true || l["confirmed"] == false), "only replays unhandled");
            }
            _ => assert_eq!(handled, n + accepted_replays, "allow handles every accepted replay too"),
        }
        lab.flush_cookies().unwrap();
    }
}

/// `tfo bench --http --method POST --early-data POLICY` measures what replay
/// safety costs: `wait` gives up TFO's saving, `allow` keeps it, `reject`
/// refuses the requests that came in the SYN (425, counted as failed).
#[test]
fn bench_measures_early_data_policies() {
    if !fastopen_lab::testing::root_or_skip("bench_early_data") {
        return;
    }
    let run = |policy: &str| {
        let o = common::run_tfo(&[
            "bench",
            "--rtt",
            "20ms",
            "--requests",
            "4",
            "--http",
            "--method",
            "post",
            "--early-data",
            policy,
            "--json",
        ]);
        assert!(o.status.success(), "{}", common::stderr(&o));
        let v = common::json(&o);
        assert_eq!((v["config"]["method"].clone(), v["config"]["early_data"].clone()), ("POST".into(), policy.into()));
        v["results"][0].clone()
    };
    let wait = run("wait");
    let ratio = wait["ratio_p50"].as_f64().unwrap();
    assert!(ratio > 0.9, "wait costs the round trip TFO saved: ratio {ratio}");
    let allow = run("allow");
    let ratio = allow["ratio_p50"].as_f64().unwrap();
    assert!(ratio < 0.75, "allow keeps the saving: ratio {ratio}");
    let reject = run("reject");
    assert_eq!(reject["failures"]["too_early"], 4, "{reject}");
}

/// A fleet of two backends that own the VIP and share one key (so a cookie
/// from one is good at the other), behind a real Linux balancer; the network
/// replays each SYN with data to the backend that did not get it, where no
/// TIME_WAIT or connection absorbs it. Under `wait` every request runs once
/// and each replay that reaches a server is held and dropped; under `allow`
/// the replays run on the other server: the same request twice.
#[test]
fn a_replay_reaching_another_server_of_the_fleet() {
    use fastopen_lab::{Fleet, FleetConfig};
    if !fastopen_lab::testing::root_or_skip("fleet_replay") {
        return;
    }
    let fleet = Fleet::start(FleetConfig::default()).expect("fleet starts");
    let dir = common::tempdir("fleet_replay");
    let key = dir.join("fleet.key");
    common::write_key(&key, "00112233-44556677-8899aabb-ccddeeff");
    let replayer = fleet.replay_syn_data_to_next(Duration::from_millis(20)).expect("replayer");
    let n = 200;
    for policy in ["wait", "allow"] {
        let at = Replayed {
            servers: fleet.backends().iter().collect(),
            client: fleet.client(),
            bind: SocketAddr::new(fleet.vip(), 8080),
            connect: SocketAddr::new(fleet.vip(), 8080),
            extra: vec!["--key-file".into(), key.display().to_string()],
        };
        let before = fleet.backends().iter().map(counters_in).collect::<Vec<_>>();
        let replays_before = replayer.replayed();
        let log = serve_replayed(&at, policy, true, n);
        let replays = (replayer.replayed() - replays_before) as usize;
        let passive: u64 = fleet.backends().iter().zip(&before).map(|(ns, b)| (&counters_in(ns) - b).passive).sum();
        // One cookie for the whole fleet: every request after the first rode in the SYN.
        let cookie_fail: u64 =
            fleet.backends().iter().zip(&before).map(|(ns, b)| (&counters_in(ns) - b).passive_fail).sum();
        assert_eq!(cookie_fail, 0, "{policy}: a shared key and the VIP give one cookie");
        assert!(replays >= n - 1, "{policy}: the network replayed {replays} SYNs");
        let replayed_lines: Vec<_> = log.iter().filter(|l| l["in_syn"] == true && l["confirmed"] == false).collect();
        // Nothing holds the original connection at the other server, and the
        // client answers from TIME_WAIT with an ACK, not a reset: the replays
        // reach the application there (every one in our runs), each logged.
        assert!(replayed_lines.len() * 10 >= replays * 9, "{policy}: {} of {replays} accepted", replayed_lines.len());
        // The kernel counts each connection made on a SYN with data, original or
        // replay: at least every log line that says "in the SYN". (An original
        // can itself end unconfirmed, so originals plus "replayed" lines would
        // count it twice.)
        let in_syn_lines = log.iter().filter(|l| l["in_syn"] == true).count();
        assert!(in_syn_lines > n - 1, "{policy}: {in_syn_lines} lines in the SYN: the originals and the replays");
        assert!(
            passive as usize >= in_syn_lines,
            "{policy}: TCPFastOpenPassive +{passive}, {in_syn_lines} lines in the SYN"
        );
        let handled = log.iter().filter(|l| l["handled"] == true).count();
        let replays_handled = replayed_lines.iter().filter(|l| l["handled"] == true).count();
        match policy {
            "wait" => {
                assert_eq!(handled, n, "each request handled exactly once across the fleet");
                assert_eq!(replays_handled, 0, "no replay handled");
            }
            _ => {
                assert_eq!(handled, n + replays_handled, "allow: the replays ran too");
                assert_eq!(replays_handled, replayed_lines.len(), "allow: every replay that reached a server ran");
            }
        }
        fleet.flush_cookies().unwrap();
    }
    drop(replayer);
    let _ = std::fs::remove_dir_all(dir);
}

/// `tfo probe --fleet` against a real Linux balancer (iptables) in front of
/// two `tfo serve` backends: one key behind a VIP is healthy; different keys
/// give two cookies (traced to "different keys" with the key file); one key
/// behind DNAT gives two cookies too, traced to the backends' own addresses;
/// a backend with TFO off refuses every cookie.
#[test]
fn probe_fleet_tells_shared_keys_from_different_keys_and_dnat() {
    use fastopen_lab::fleet::backend_ip;
    use fastopen_lab::{BalancerMode, Fleet, FleetConfig};
    if !fastopen_lab::testing::root_or_skip("probe_fleet") {
        return;
    }
    let dir = common::tempdir("probe_fleet");
    let (key_a, key_b) = (dir.join("a.key"), dir.join("b.key"));
    common::write_key(&key_a, "00112233-44556677-8899aabb-ccddeeff");
    common::write_key(&key_b, "ffeeddcc-bbaa9988-77665544-33221100");
    let candidates = format!("{},{}", backend_ip(0), backend_ip(1));
    let a = key_a.to_str().unwrap();
    // (mode, each backend's key, whether backend 1 has TFO off, probe arguments, verdict)
    type Case<'a> = (BalancerMode, [&'a std::path::Path; 2], bool, &'a [&'a str], &'a str);
    let cases: [Case; 5] = [
        (BalancerMode::Vip, [&key_a, &key_a], false, &["--key-file", a], "healthy"),
        (BalancerMode::Vip, [&key_a, &key_b], false, &[], "backends_disagree"),
        (BalancerMode::Vip, [&key_a, &key_b], false, &["--key-file", a], "different_keys"),
        (BalancerMode::Dnat, [&key_a, &key_a], false, &["--key-file", a, "--candidates", &candidates], "dnat"),
        (BalancerMode::Vip, [&key_a, &key_a], true, &["--key-file", a], "cookies_refused"),
    ];
    for (mode, keys, tfo_off_on_b1, probe_args, verdict) in cases {
        let fleet = Fleet::start(FleetConfig { mode, ..FleetConfig::default() }).expect("fleet starts");
        let _servers: Vec<common::Guard> = fleet
            .backends()
            .iter()
            .zip(keys)
            .enumerate()
            .map(|(i, (ns, key))| {
                let queue = if i == 1 && tfo_off_on_b1 { "0" } else { "16" };
                let args = ["0.0.0.0:8080", "--key-file", key.to_str().unwrap(), "--queue", queue];
                common::Guard(start_serve(ns, &args).0)
            })
            .collect();
        let (code, v) = probe_fleet(&fleet, probe_args);
        let what = format!("{mode:?} {verdict}: {v}");
        assert_eq!(v["verdict"], verdict, "{what}");
        assert_eq!(code, Some(if verdict == "healthy" { 0 } else { 1 }), "{what}");
        match verdict {
            "healthy" => {
                assert_eq!((v["distinct_cookies"].as_u64(), v["accepted"].as_u64()), (Some(1), Some(6)), "{what}");
                assert_eq!(v["cookies"][0]["made_for"], "198.19.0.1", "{what}");
            }
            // One backend without TFO: one cookie, and the data SYN always reaches the other.
            "cookies_refused" => {
                assert_eq!((v["distinct_cookies"].as_u64(), v["accepted"].as_u64()), (Some(1), Some(0)), "{what}");
            }
            _ => {
                assert_eq!(v["distinct_cookies"], 2, "{what}");
                // Round robin: the data SYN always reaches the other backend.
                assert_eq!(v["accepted"], 0, "{what}");
            }
        }
        if verdict == "dnat" {
            let mut made_for: Vec<String> =
                v["cookies"].as_array().unwrap().iter().map(|c| c["made_for"].as_str().unwrap().to_string()).collect();
            made_for.sort();
            assert_eq!(made_for, [backend_ip(0).to_string(), backend_ip(1).to_string()], "{what}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `tfo probe VIP:8080 --fleet 6 --json ARGS` from the fleet's client.
fn probe_fleet(fleet: &fastopen_lab::Fleet, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let vip = SocketAddr::new(fleet.vip(), 8080).to_string();
    let o = fleet
        .client()
        .command(env!("CARGO_BIN_EXE_tfo"))
        .args(["probe", &vip, "--fleet", "6", "--json"])
        .args(args)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code(), v)
}

/// A key rotation rolled out one backend at a time, as operators do: while
/// backend 0 has the new key (the old one as backup) and backend 1 only the
/// old, the fleet is mid-rotation, and the key file tells the two cookies
/// apart by key; once backend 1's file changes too (`tfo serve` follows it,
/// keeping the old key as backup), the fleet is healthy again.
#[test]
fn probe_fleet_sees_a_rotation_mid_run_and_its_end() {
    use fastopen_lab::{BalancerMode, Fleet, FleetConfig};
    if !fastopen_lab::testing::root_or_skip("probe_fleet_rotation") {
        return;
    }
    let dir = common::tempdir("probe_fleet_rotation");
    let (old, new) = ("00112233-44556677-8899aabb-ccddeeff", "ffeeddcc-bbaa9988-77665544-33221100");
    let (b0, b1, rotated) = (dir.join("b0.key"), dir.join("b1.key"), dir.join("rotated.key"));
    common::write_key(&b0, &format!("{new},{old}"));
    common::write_key(&b1, old);
    common::write_key(&rotated, &format!("{new},{old}"));
    let fleet = Fleet::start(FleetConfig { mode: BalancerMode::Vip, ..FleetConfig::default() }).expect("fleet starts");
    let _servers: Vec<common::Guard> = fleet
        .backends()
        .iter()
        .zip([&b0, &b1])
        .map(|(ns, key)| common::Guard(start_serve(ns, &["0.0.0.0:8080", "--key-file", key.to_str().unwrap()]).0))
        .collect();

    let (code, v) = probe_fleet(&fleet, &["--key-file", rotated.to_str().unwrap()]);
    assert_eq!((code, v["verdict"].as_str()), (Some(1), Some("mid_rotation")), "{v}");
    let mut made_with: Vec<&str> =
        v["cookies"].as_array().unwrap().iter().map(|c| c["made_with"].as_str().unwrap()).collect();
    made_with.sort();
    assert_eq!(made_with, ["backup", "primary"], "{v}");
    assert!(v["cookies"].as_array().unwrap().iter().all(|c| c["made_for"] == "198.19.0.1"), "{v}");
    let (_, v) = probe_fleet(&fleet, &[]);
    assert_eq!(v["verdict"], "backends_disagree", "without the key: {v}");

    // Backend 1 gets the new key; the old one stays its backup.
    common::write_key(&b1, new);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let v = loop {
        let (code, v) = probe_fleet(&fleet, &["--key-file", rotated.to_str().unwrap()]);
        if code == Some(0) || std::time::Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(v["verdict"], "healthy", "after the rotation: {v}");
    assert_eq!((v["cookies"][0]["made_with"].as_str(), v["accepted"].as_u64()), (Some("primary"), Some(6)), "{v}");
    let _ = std::fs::remove_dir_all(dir);
}

/// nginx with `listen VIP:8080 fastopen=256` on each backend, keyed by `tfo
/// key apply` (the namespace's key), behaves as `tfo serve` does: one key is
/// healthy, two keys are told apart.
#[test]
fn nginx_backends_of_a_fleet_behave_like_tfo_serve() {
    use fastopen_lab::{BalancerMode, Fleet, FleetConfig};
    if !fastopen_lab::testing::root_or_skip("fleet_nginx") || !common::have_tool("fleet_nginx", "nginx") {
        return;
    }
    let dir = common::tempdir("fleet_nginx");
    let (key_a, key_b) = (dir.join("a.key"), dir.join("b.key"));
    common::write_key(&key_a, "00112233-44556677-8899aabb-ccddeeff");
    common::write_key(&key_b, "ffeeddcc-bbaa9988-77665544-33221100");
    for (keys, verdict) in [([&key_a, &key_a], "healthy"), ([&key_a, &key_b], "different_keys")] {
        let fleet = Fleet::start(FleetConfig { mode: BalancerMode::Vip, ..FleetConfig::default() }).expect("fleet");
        let listen = [format!("{}:8080 fastopen=256", fleet.vip())];
        let mut nginxes = Vec::new();
        for (ns, key) in fleet.backends().iter().zip(keys) {
            ns.exec(env!("CARGO_BIN_EXE_tfo"), &["key", "apply", "--key-file", key.to_str().unwrap()], "tfo").unwrap();
            let nginx = ns.run(|| fastopen_lab::testing::Nginx::start("fleet_nginx", &listen, "", "hello\n")).unwrap();
            nginxes.push(nginx.expect("nginx is installed"));
        }
        let (code, v) = probe_fleet(&fleet, &["--http", "--key-file", key_a.to_str().unwrap()]);
        assert_eq!(v["verdict"], verdict, "{v}");
        assert_eq!(code, Some(if verdict == "healthy" { 0 } else { 1 }), "{v}");
        if verdict == "healthy" {
            assert_eq!((v["accepted"].as_u64(), v["cookies"][0]["made_for"].as_str()), (Some(6), Some("198.19.0.1")));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Raw echo under `--early-data reject`: data in the SYN, its handshake not
/// yet confirmed (the client's ACK is half a round trip away), is refused
/// with a reason in the log, and the client is told by a reset.
#[test]
fn early_data_reject_in_raw_mode_logs_why_and_resets() {
    let Some(lab) = lab(100, vec![]) else { return };
    let addr = SocketAddr::new(lab.server_ip(false), 8300);
    let bind = addr.to_string();
    let (mut child, mut lines) = start_serve(lab.server(), &[bind.as_str(), "--early-data", "reject"]);
    let replies: Vec<std::io::Result<Vec<u8>>> = lab
        .client()
        .run(move || {
            (0..2)
                .map(|i| {
                    let (mut s, _) = Connector::new().connect(addr, format!("request {i}").as_bytes())?;
                    s.shutdown(Shutdown::Write)?;
                    let mut reply = Vec::new();
                    s.read_to_end(&mut reply).map(|_| reply)
                })
                .collect()
        })
        .unwrap();
    // The first asked for a cookie (no data in the SYN): echoed. The second's
    // data rode in the SYN: refused and reset.
    assert_eq!(replies[0].as_deref().ok(), Some(&b"request 0"[..]), "{replies:?}");
    let refused = replies[1].as_ref().expect_err("the early data is refused");
    // The reset: seen by the read, or already by the half-close if it came first.
    let reset = [std::io::ErrorKind::ConnectionReset, std::io::ErrorKind::NotConnected];
    assert!(reset.contains(&refused.kind()), "{refused}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = child.wait();
    let log: Vec<serde_json::Value> =
        lines.by_ref().map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect();
    let rejected: Vec<_> = log.iter().filter(|l| l["in_syn"] == true).collect();
    assert_eq!(rejected.len(), 1, "{log:?}");
    assert_eq!(rejected[0]["handled"], false);
    assert!(rejected[0]["error"].as_str().unwrap_or("").contains("early data refused"), "{:?}", rejected[0]);
}

/// A server that speaks first (`tfo serve --banner`) across a 100 ms path:
/// `tfo send --read-first` gets the greeting after 2 round trips on the first
/// connection (it asks for a cookie) and after 1 on the next (the cookie in a
/// SYN without data: the server greets in SYN_RECV), and the server's log
/// says so; a plain client that never heard of TFO still gets its greeting.
#[test]
fn read_first_gets_the_greeting_a_round_trip_sooner_with_the_cookie() {
    let Some(lab) = lab(100, vec![]) else { return };
    let addr = SocketAddr::new(lab.server_ip(false), 2525);
    let bind = addr.to_string();
    let (mut child, mut lines) = start_serve(lab.server(), &[bind.as_str(), "--banner", "220 lab ESMTP ready"]);
    let send = |extra: &[&str]| {
        let o = lab
            .client()
            .command(env!("CARGO_BIN_EXE_tfo"))
            .args(["send", "--read-first", &bind, "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let first = send(&[]);
    let second = send(&["--data", "EHLO lab"]);
    for (v, trips, cookie) in [(&first, 2.0, false), (&second, 1.0, true)] {
        assert_eq!(v["greeting"], "220 lab ESMTP ready\r\n", "{v}");
        let n = v["greeting_round_trips"].as_f64().unwrap();
        assert!((n - trips).abs() < 0.3, "{trips} round trips expected: {v}");
        assert_eq!(
            (v["cookie_sent"].as_bool(), v["greeting_with_handshake"].as_bool()),
            (Some(cookie), Some(cookie)),
            "{v}"
        );
    }
    assert_eq!(second["reply"], "EHLO lab", "the data after the greeting is echoed: {second}");
    // A plain client: connect, read the greeting.
    let plain = lab
        .client()
        .run(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut greeting = [0u8; 21];
            s.read_exact(&mut greeting).map(|()| greeting.to_vec())
        })
        .unwrap()
        .unwrap();
    assert_eq!(plain, b"220 lab ESMTP ready\r\n");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = child.wait();
    let log: Vec<serde_json::Value> =
        lines.by_ref().map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect();
    // Each worker logs its own connections: found by what they carried, not by order.
    assert_eq!(log.len(), 3, "{log:?}");
    for l in &log {
        let with_cookie = l["bytes_in"] == 8; // the --data of the second send
        assert_eq!(l["greeting_in_syn_recv"].as_bool(), Some(with_cookie), "{l}");
    }
}

/// OpenSSH's sshd, which nobody here wrote and which never asks for TFO, is
/// given it by `net.ipv4.tcp_fastopen=0x403` in the server namespace (TFO on
/// every listener): `tfo probe --read-first` finds it greeting in SYN_RECV.
/// With 0x3 (no TFO on its listener) the verdict is "no cookie".
#[test]
fn probe_read_first_finds_a_real_sshd_answering_in_syn_recv() {
    if !fastopen_lab::testing::root_or_skip("probe_read_first_sshd")
        || !fastopen_lab::testing::have_tool("probe_read_first_sshd", "sshd")
        || !fastopen_lab::testing::have_tool("probe_read_first_sshd", "ssh-keygen")
    {
        return;
    }
    let Some(lab) = lab(100, vec![]) else { return };
    let dir = common::tempdir("sshd");
    let key = dir.join("host_key");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::create_dir_all("/run/sshd").unwrap(); // sshd's privilege separation directory
    let addr = SocketAddr::new(lab.server_ip(false), 22);
    let target = addr.to_string();
    let probe = |mode: &str| {
        // The server's mode decides at listen(): set it, then start sshd.
        lab.server().set_sysctl("net.ipv4.tcp_fastopen", mode).unwrap();
        let sshd = lab
            .server()
            .command("/usr/sbin/sshd")
            .args(["-D", "-e", "-f", "/dev/null", "-h", key.to_str().unwrap()])
            .args(["-o", &format!("ListenAddress={}", addr), "-o", "PidFile=none"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let _sshd = common::Guard(sshd);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !lab.server().has_listener() {
            assert!(std::time::Instant::now() < deadline, "sshd did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        lab.flush_cookies().unwrap();
        let o = lab
            .client()
            .command(env!("CARGO_BIN_EXE_tfo"))
            .args(["probe", "--read-first", &target, "--json", "--timeout", "3s"])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)))
    };
    let on = probe("1027"); // 0x403
    assert_eq!(on["diagnosis"], "answers_in_syn_recv", "{on}");
    assert_eq!(on["attempts"][1]["cookie_only_syn"], true, "{on}");
    let off = probe("3");
    assert_eq!(off["diagnosis"], "no_cookie", "{off}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tfo bench --read-first`: a greeting takes 2 round trips plain and 1 with
/// the cookie in a SYN without data (a ratio near 0.5, in round trips).
#[test]
fn bench_read_first_halves_the_time_to_the_greeting() {
    if !fastopen_lab::testing::root_or_skip("bench_read_first") {
        return;
    }
    let o = common::run_tfo(&["bench", "--read-first", "--rtt", "50ms", "--requests", "4", "--json"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let v = common::json(&o);
    assert_eq!(v["config"]["read_first"], true);
    let r = &v["results"][0];
    assert_eq!(r["tfo_used"], 4, "each warm request sent the cookie without data: {r}");
    let rtts = |mode: &str| r[mode]["p50_ms"].as_f64().unwrap() / 50.0;
    assert!((rtts("plain") - 2.0).abs() < 0.4, "plain: two round trips: {r}");
    assert!((rtts("tfo") - 1.0).abs() < 0.4, "cookie: one round trip: {r}");
}

/// `tfo bench --tls`: the HTTPS ladder across the lab at 50 ms, in round
/// trips to the answer: plain TCP then TLS 3, the ClientHello in the SYN 2,
/// the GET as TLS early data with it 1 (every resumed request accepted).
#[test]
fn bench_tls_ladder_three_two_one_round_trips() {
    if !fastopen_lab::testing::root_or_skip("bench_tls_ladder") {
        return;
    }
    let o = common::run_tfo(&["bench", "--tls", "--rtt", "50ms", "--requests", "6", "--json"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let v = common::json(&o);
    assert_eq!(v["config"]["tls"], true);
    let r = &v["results"][0];
    let rtts = |mode: &str| r[mode]["p50_ms"].as_f64().unwrap() / 50.0;
    assert!((rtts("plain") - 3.0).abs() < 0.4, "plain TLS: three round trips: {r}");
    assert!((rtts("tfo") - 2.0).abs() < 0.4, "the ClientHello in the SYN: two: {r}");
    assert!((rtts("tfo_early_data") - 1.0).abs() < 0.4, "the GET as early data in the SYN: one: {r}");
    assert!(r["early_data_accepted"].as_u64().unwrap() >= 5, "{r}");
    assert_eq!(r["tfo_used"], 6, "{r}");
}
