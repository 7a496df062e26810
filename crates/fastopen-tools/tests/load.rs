//! The load engine on its own, without the CLI: against the server engine
//! over HTTP in a private network namespace, TFO and plain interleaved; what
//! the engine counts is checked against what the server logged and what the
//! kernel counted.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastopen::ListenerBuilder;
use fastopen_tools::echo::{serve, Budget, ConnectionLog, Limits, Protocol, Service};
use fastopen_tools::load::{self, Kind, Plan};

#[test]
fn the_load_engine_counts_what_the_server_and_the_kernel_saw() {
    if !fastopen_lab::testing::root_or_skip("engine_load") {
        return;
    }
    fastopen_lab::netns::run_in_private(3, || {
        const REQUESTS: u64 = 200;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let listener =
            rt.block_on(async { ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind_tokio() }).unwrap();
        let addr = listener.local_addr().unwrap();
        let logs: Arc<Mutex<Vec<ConnectionLog>>> = Arc::default();
        let logs_in = logs.clone();
        let server = std::thread::spawn(move || {
            let service = Service { protocol: Protocol::Http, tls: None, limits: Limits::default() };
            rt.block_on(serve(
                Arc::new(listener),
                &service,
                &Budget::new(Some(REQUESTS)),
                std::future::pending(),
                move |log| logs_in.lock().unwrap().push(log),
                Arc::new(|_| {}),
            ));
        });
        let before = fastopen::FastOpenCounters::read().unwrap();
        let plan = Plan {
            addr,
            protocol: load::Protocol::Http { host: "engine".into(), path: "/load".into() },
            connections: 4,
            requests: REQUESTS,
            duration: Duration::from_secs(20),
            rate: None,
            kinds: vec![Kind::Tfo, Kind::Plain],
            timeout: Duration::from_secs(5),
            threads: 2,
        };
        let progress = Arc::new(load::Progress::default());
        let outcome = load::run(plan, progress.clone(), fastopen::Cancel::new().unwrap()).unwrap();
        let after = fastopen::FastOpenCounters::read().unwrap();
        server.join().unwrap(); // the budget is spent: every request reached it

        let (tfo, plain, all) = (&outcome.by_kind[&Kind::Tfo], &outcome.by_kind[&Kind::Plain], outcome.total());
        assert_eq!((tfo.sent, plain.sent), (REQUESTS / 2, REQUESTS / 2));
        assert_eq!((all.ok, all.errors(), all.cancelled()), (REQUESTS, 0, 0), "{:?}", all.failures);
        assert_eq!(progress.done.load(Ordering::Relaxed), REQUESTS);
        assert_eq!(all.latency.len(), REQUESTS);
        assert!(all.latency.quantile_ms(0.5) > 0.0 && all.latency.max_ms() < 5000.0);
        // Plain requests never ride in the SYN; TFO ones do once a cookie is
        // cached (the first few, racing for it, may not).
        assert_eq!(plain.tfo_used, 0);
        assert_eq!(plain.not_in_syn.values().sum::<u64>(), REQUESTS / 2);
        assert!(tfo.tfo_used >= REQUESTS / 2 - 4, "{tfo:?}");
        // The server's word and the kernel's.
        let logs = logs.lock().unwrap();
        let in_syn = logs.iter().filter(|l| l.in_syn).count() as u64;
        assert_eq!(in_syn, tfo.tfo_used, "the server saw as many requests in the SYN as the client counted");
        assert!(logs.iter().all(|l| l.http_status == Some(200)), "{logs:?}");
        assert_eq!(after.active - before.active, tfo.tfo_used, "TCPFastOpenActive");
    })
    .unwrap();
}

#[test]
fn a_refused_port_is_counted_as_refused() {
    if !fastopen_lab::testing::root_or_skip("engine_load_refused") {
        return;
    }
    fastopen_lab::netns::run_in_private(3, || {
        // A port nobody listens on, in a namespace of our own.
        let addr = "127.0.0.1:9".parse().unwrap();
        let plan = Plan {
            addr,
            protocol: load::Protocol::Raw,
            connections: 2,
            requests: 10,
            duration: Duration::from_secs(10),
            rate: None,
            kinds: vec![Kind::Tfo],
            timeout: Duration::from_secs(2),
            threads: 1,
        };
        let outcome = load::run(plan, Arc::default(), fastopen::Cancel::new().unwrap()).unwrap();
        let all = outcome.total();
        assert_eq!(all.failures.get(&load::Failure::Refused), Some(&10), "{:?}", all.failures);
        assert_eq!((all.ok, all.errors()), (0, 10));
        assert!(all.latency.is_empty());
    })
    .unwrap();
}

/// A server that accepts and never answers: each request ends at its own
/// deadline as a timeout (not at the run's end as cancelled), and the next
/// request gets a deadline of its own.
#[test]
fn a_silent_server_times_each_request_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Holds what it accepts, reads nothing, answers nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(8) {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let plan = Plan {
        addr,
        protocol: load::Protocol::Http { host: "silent".into(), path: "/".into() },
        connections: 2,
        requests: 6,
        duration: Duration::from_secs(20),
        rate: None,
        kinds: vec![Kind::Plain],
        timeout: Duration::from_millis(300),
        threads: 1,
    };
    let started = std::time::Instant::now();
    let outcome = load::run(plan, Arc::default(), fastopen::Cancel::new().unwrap()).unwrap();
    let all = outcome.total();
    assert_eq!(all.failures.get(&load::Failure::Timeout), Some(&6), "{:?}", all.failures);
    assert_eq!((all.ok, all.cancelled()), (0, 0));
    // Three requests in turn per client, each 300 ms to its deadline.
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
}
