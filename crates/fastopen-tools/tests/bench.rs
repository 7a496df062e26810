//! The bench engine on its own, across a lab of 10 ms RTT: every warm TFO
//! request carries its data in the SYN (the client namespace's kernel
//! counters agree), so it takes one round trip where plain TCP takes two;
//! the cold ones ask for a cookie; no time is under the path's; and bulk
//! data crosses the link whole. Times are checked by lower bounds only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fastopen_lab::path::PathConfig;
use fastopen_lab::{Lab, LabConfig};
use fastopen_tools::bench::{self, BenchRun, COLD};
use fastopen_tools::echo::{Limits, Protocol};
use fastopen_tools::lab_server::{ns_counters, HttpMethod, NsServer};

#[test]
fn warm_tfo_saves_a_round_trip_and_the_counters_agree() {
    if !fastopen_lab::testing::root_or_skip("engine_bench") {
        return;
    }
    let rtt = Duration::from_millis(10);
    let lab = Lab::start(LabConfig { path: PathConfig::with_rtt(rtt), ..LabConfig::default() }).unwrap();
    let addr = SocketAddr::new(lab.server_ip(false), 8000);
    let server =
        NsServer::start(lab.server(), addr, Protocol::Raw, None, Limits::default(), std::sync::Arc::new(|_| {}))
            .unwrap();
    let requests = 6;
    let run = BenchRun {
        addr: server.addr,
        rtt,
        size: 100,
        requests,
        http: false,
        tls: false,
        read_first: false,
        method: HttpMethod::Get,
        timeout: Some(Duration::from_secs(10)),
        cold_every: 3,
        cancel: None,
    };
    let before = ns_counters(lab.client()).unwrap();
    let progressed = AtomicU32::new(0);
    let row = bench::measure(&lab, &run, &|| {
        progressed.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    let active = ns_counters(lab.client()).unwrap().active - before.active;
    assert_eq!(row.failed, 0, "{row:?}");
    assert_eq!(row.tfo_used, requests, "{row:?}");
    // The warm-up, then per round plain and warm, and a cold one every 3 rounds.
    assert_eq!(progressed.load(Ordering::Relaxed), 1 + 2 * requests + 2);
    assert_eq!((row.series[COLD].len(), row.cold_cookie_requests), (2, 2), "{row:?}");
    // The kernel's side: the warm-up's and every warm request's data rode in the SYN.
    assert!(active >= u64::from(requests), "TCPFastOpenActive +{active}");
    // Lower bounds only (a busy machine makes anything slower): a round trip
    // is 10 ms; plain TCP's exchange takes two, TFO's one.
    let (plain, tfo) = (row.plain.unwrap(), row.tfo.unwrap());
    assert!(plain.min_ms >= 20.0 && tfo.min_ms >= 10.0, "plain {plain:?} tfo {tfo:?}");
    let connect = row.connect.unwrap();
    assert!(connect.p50_ms >= 10.0, "{connect:?}");
    // The client kernel's own timing of the handshake: never under the set
    // RTT, and, connection by connection, within the connect the program timed.
    let handshake = row.handshake_rtt.unwrap();
    assert!(handshake.p50_ms >= 9.99 && handshake.p50_ms <= connect.p50_ms, "{handshake:?} {connect:?}");
    drop(server);
}

#[test]
fn bulk_data_crosses_the_link_whole() {
    if !fastopen_lab::testing::root_or_skip("engine_throughput") {
        return;
    }
    let t = bench::throughput(4, false, None).unwrap();
    assert_eq!(t.megabytes, 4);
    assert!(t.seconds > 0.0 && t.gbit_per_s > 0.0, "{t:?}");
}

/// With TSO/GSO across the link, the path still sees segments: every packet
/// it forwards fits the MTU (a 64 KiB GSO packet would not fit a buffer of
/// the pool: the transfer would stall), each is delayed (the handshake's RTT
/// as the client's kernel timed it) and lost on its own (about the set 1%).
#[test]
fn offload_keeps_segments_delay_and_loss() {
    if !fastopen_lab::testing::root_or_skip("engine_offload") {
        return;
    }
    use std::io::{Read, Write};
    let mut path = PathConfig::with_rtt(Duration::from_millis(10));
    path.to_server.loss = 0.01;
    let lab = Lab::start(LabConfig { path, offload: true, ..LabConfig::default() }).unwrap();
    let addr = SocketAddr::new(lab.server_ip(false), 9100);
    let listener = lab.server().run(move || std::net::TcpListener::bind(addr)).unwrap().unwrap();
    let sink = lab
        .server()
        .spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            all.len()
        })
        .unwrap();
    let bytes = 8 << 20;
    let before = lab.counters();
    let rtt = lab
        .client()
        .run(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let rtt = fastopen::read_tcp_info(&s).unwrap().rtt_us;
            s.write_all(&vec![0x5a; bytes]).unwrap();
            rtt
        })
        .unwrap();
    assert_eq!(sink.join().unwrap(), bytes, "every byte across");
    let link = lab.counters().since(&before);
    assert!(link.to_server_bytes >= bytes as u64, "{link:?}");
    assert!(link.to_server_bytes <= link.to_server_packets * 1500, "segments, not GSO packets: {link:?}");
    let lost = link.lost as f64 / (link.to_server_packets + link.lost) as f64;
    assert!((0.004..0.02).contains(&lost), "loss {lost:.4} of the set 0.01: {link:?}");
    let rtt = rtt.expect("the handshake's RTT sample");
    assert!(rtt >= 10_000, "handshake RTT {rtt} us across a 10 ms path");
}
