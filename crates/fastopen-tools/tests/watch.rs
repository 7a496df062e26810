//! The watch's collector on its own, in a private network namespace: two
//! HTTP exchanges with the server engine (the first asks for a cookie, the
//! second carries its request in the SYN) are each reported once per side,
//! with their outcomes and this process as their owner.

mod common;

use std::time::{Duration, Instant};

use fastopen::sock_diag::Role;
use fastopen::{Connector, FailReason};
use fastopen_tools::echo::{Limits, Protocol};
use fastopen_tools::exchange::{self, exchange, Until};
use fastopen_tools::watch::{Backend, Collector, ConnectionReport};

#[test]
fn each_connection_is_reported_once_with_its_outcome_and_process() {
    if !fastopen_lab::testing::root_or_skip("engine_watch") {
        return;
    }
    fastopen_lab::netns::run_in_private(3, || {
        let mut notes = Vec::new();
        let mut collector = Collector::open(Backend::Auto, true, &mut |n| notes.push(n)).unwrap();
        assert!(notes.iter().any(|n| n.contains("backend")), "{notes:?}");
        let (addr, server) = common::server(Protocol::Http, Limits::default(), 2);
        assert!(collector.read().unwrap().is_empty(), "a listener alone is no connection");
        for _ in 0..2 {
            let limits = exchange::Limits::new(Duration::from_secs(5), Until::HttpResponse);
            exchange(&Connector::new(), addr, b"GET / HTTP/1.1\r\nHost: w\r\n\r\n", Until::HttpResponse, &limits)
                .unwrap();
        }
        server.join().unwrap();
        let mut reports: Vec<ConnectionReport> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reports.len() < 4 && Instant::now() < deadline {
            reports.extend(collector.read().unwrap());
            reports.extend(collector.closed(Duration::from_millis(100)).unwrap().reports);
        }
        // Nothing is reported twice, however many reads and notifications come after.
        for _ in 0..3 {
            reports.extend(collector.read().unwrap());
            reports.extend(collector.closed(Duration::from_millis(50)).unwrap().reports);
        }
        let side = |role| -> Vec<&ConnectionReport> {
            let mut v: Vec<&ConnectionReport> = reports.iter().filter(|r| r.role == role).collect();
            v.sort_by_key(|r| if role == Role::Client { r.local.port() } else { r.peer.port() });
            v
        };
        let (clients, servers) = (side(Role::Client), side(Role::Server));
        assert_eq!((clients.len(), servers.len()), (2, 2), "{reports:#?}");
        assert_eq!(clients.iter().filter(|r| r.tfo_used).count(), 1, "{clients:#?}");
        assert!(clients.iter().any(|r| r.fail_reason == Some(FailReason::CookieUnavailable)), "{clients:#?}");
        assert_eq!(servers.iter().filter(|r| r.tfo_used).count(), 1, "{servers:#?}");
        for r in &reports {
            assert_eq!(r.pid, Some(std::process::id()), "{r:#?}");
            assert!(r.named_by.is_some(), "{r:#?}");
        }
        assert!(clients.iter().all(|r| r.peer == addr) && servers.iter().all(|r| r.local == addr));
    })
    .unwrap();
}
