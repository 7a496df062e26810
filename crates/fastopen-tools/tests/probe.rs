//! The probe engine on its own, in a private network namespace: a server
//! with TFO gets `works` (and the counters agree), a closed port `refused`,
//! a name that did not resolve `unresolved`; the fleet rounds against one
//! server see one cookie.

mod common;

use std::time::Duration;

use fastopen::{ClientMethod, FastOpenCounters, FleetVerdict, ProbeVerdict};
use fastopen_tools::echo::{Limits, Protocol};
use fastopen_tools::failure::Failure;
use fastopen_tools::probe::fleet::{self, FleetProbe};
use fastopen_tools::probe::{Diagnosis, Job, Probe};

fn probe() -> Probe {
    Probe {
        method: ClientMethod::SendTo,
        timeout: Duration::from_secs(5),
        http: true,
        tls: None,
        read_first: false,
        cancel: None,
    }
}

fn job(addr: Result<std::net::SocketAddr, String>) -> Job {
    Job { target: "t".into(), name: None, port_given: true, addr }
}

#[test]
fn a_server_with_tfo_works_a_closed_port_is_refused_a_bad_name_unresolved() {
    if !fastopen_lab::testing::root_or_skip("engine_probe") {
        return;
    }
    fastopen_lab::netns::run_in_private(3, || {
        let (addr, server) = common::server(Protocol::Http, Limits::default(), 3);
        let before = FastOpenCounters::read().unwrap();
        let report = probe().address(&job(Ok(addr)));
        let delta = &FastOpenCounters::read().unwrap() - &before;
        assert_eq!(report.diagnosis, Diagnosis::Tfo(ProbeVerdict::Works), "{report:?}");
        assert!(report.tfo_works);
        assert_eq!(report.attempts.len(), 3);
        assert!(!report.attempts[0].outcome.tfo_used && report.attempts[1].outcome.tfo_used, "{report:?}");
        // The kernel's side: the second connection's data was accepted in the SYN.
        assert!(delta.passive >= 1, "TCPFastOpenPassive {delta:?}");
        server.join().unwrap();

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let report = probe().address(&job(Ok(closed)));
        assert_eq!(report.diagnosis, Diagnosis::Failed(Failure::Refused), "{report:?}");
        assert!(!report.tfo_works);

        let report = probe().address(&job(Err("nowhere.test: no address".into())));
        assert_eq!(report.diagnosis.as_str(), "unresolved");
        assert!(report.server.is_none() && report.explanation.contains("nowhere.test"));
    })
    .unwrap();
}

#[test]
fn fleet_rounds_against_one_server_see_one_cookie() {
    if !fastopen_lab::testing::root_or_skip("engine_fleet") {
        return;
    }
    fastopen_lab::netns::run_in_private(3, || {
        let rounds = 3;
        let (addr, server) = common::server(Protocol::Http, Limits::default(), 2 * rounds as u64);
        let report = fleet::run(&FleetProbe {
            addr,
            rounds,
            method: ClientMethod::SendTo,
            timeout: Duration::from_secs(5),
            request: probe().request(&job(Ok(addr)), addr),
            keys: Vec::new(),
            candidates: Vec::new(),
            cancel: None,
        })
        .unwrap();
        assert_eq!(report.verdict, FleetVerdict::Healthy, "{report:?}");
        assert_eq!((report.rounds, report.distinct_cookies, report.accepted), (3, 1, 3), "{report:?}");
        assert!(report.client.is_loopback());
        server.join().unwrap();
    })
    .unwrap();
}
