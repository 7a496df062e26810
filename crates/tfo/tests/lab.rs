//! The lab's behaviour (not its timing precision: that is `tfo bench`'s job):
//! delay applied, each middlebox producing the kernel behaviour it should, and
//! nothing left behind. Root only; each test builds its own lab.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fastopen::{AcceptOutcome, ClientOutcome, Connector, FailReason, FastOpenCounters, ListenerBuilder};
use fastopen_lab::{Lab, LabConfig, Middlebox, PathConfig};

fn lab(rtt_ms: u64, middleboxes: Vec<Middlebox>) -> Option<Lab> {
    if !fastopen_lab::netns::root_or_skip("lab") {
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
