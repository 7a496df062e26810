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

/// Runs 200 requests, TFO and plain interleaved, against the server engine
/// speaking `served`, and checks what the load engine counted against what
/// the server logged and what the kernel counted. `rate`: open loop (the
/// tokio engine); `None`: closed loop (the event-loop engine, for plain HTTP
/// and echo).
fn counts_what_the_server_and_the_kernel_saw(test: &str, served: Protocol, rate: Option<f64>) {
    if !fastopen_lab::testing::root_or_skip(test) {
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
        let http = served == Protocol::Http;
        let server = std::thread::spawn(move || {
            let service = Service { protocol: served, tls: None, limits: Limits::default(), log_confirmation: true };
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
        let protocol = if http { http_to("engine") } else { load::Protocol::Raw };
        let plan = Plan {
            connections: 4,
            rate,
            kinds: vec![Kind::Tfo, Kind::Plain],
            threads: 2,
            ..plan(addr, protocol, REQUESTS)
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
        if http {
            assert!(logs.iter().all(|l| l.http_status == Some(200)), "{logs:?}");
        }
        assert_eq!(after.active - before.active, tfo.tfo_used, "TCPFastOpenActive");
    })
    .unwrap();
}

#[test]
fn the_load_engine_counts_what_the_server_and_the_kernel_saw() {
    counts_what_the_server_and_the_kernel_saw("engine_load", Protocol::Http, None);
}

#[test]
fn echo_requests_are_counted_alike() {
    counts_what_the_server_and_the_kernel_saw("engine_load_echo", Protocol::Raw, None);
}

#[test]
fn the_open_loop_engine_counts_alike() {
    counts_what_the_server_and_the_kernel_saw("engine_load_open_loop", Protocol::Http, Some(2000.0));
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
            duration: Duration::from_secs(10),
            kinds: vec![Kind::Tfo],
            timeout: Duration::from_secs(2),
            ..plan(addr, load::Protocol::Raw, 10)
        };
        let outcome = load::run(plan, Arc::default(), fastopen::Cancel::new().unwrap()).unwrap();
        let all = outcome.total();
        assert_eq!(all.failures.get(&load::Failure::Refused), Some(&10), "{:?}", all.failures);
        assert_eq!((all.ok, all.errors()), (0, 10));
        assert!(all.latency.is_empty());
        // The count ends the run, not its 10 s duration.
        assert!(outcome.elapsed < Duration::from_secs(5), "{:?}", outcome.elapsed);
    })
    .unwrap();
}

/// A server that accepts and never answers: each request ends at its own
/// deadline as a timeout (not at the run's end as cancelled), and the next
/// request gets a deadline of its own.
#[test]
fn a_silent_server_times_each_request_out() {
    let addr = silent_server();
    let plan = Plan { timeout: Duration::from_millis(300), ..plan(addr, http_to("silent"), 6) };
    let started = std::time::Instant::now();
    let outcome = load::run(plan, Arc::default(), fastopen::Cancel::new().unwrap()).unwrap();
    let all = outcome.total();
    assert_eq!(all.failures.get(&load::Failure::Timeout), Some(&6), "{:?}", all.failures);
    assert_eq!((all.ok, all.cancelled()), (0, 0));
    // Three requests in turn per client, each 300 ms to its deadline.
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
}

/// A silent server and a cancellation (Ctrl-C) in mid-run: the run ends at
/// once, not at the requests' deadlines, and the requests in flight are
/// counted as cancelled, not as failures.
#[test]
fn a_cancelled_run_ends_at_once_and_counts_what_was_in_flight() {
    let addr = silent_server();
    for rate in [None, Some(1000.0)] {
        let plan = Plan {
            connections: 3,
            rate,
            timeout: Duration::from_secs(15),
            threads: 2,
            ..plan(addr, http_to("silent"), 3)
        };
        let cancel = fastopen::Cancel::new().unwrap();
        let canceller = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            canceller.cancel();
        });
        let started = std::time::Instant::now();
        let outcome = load::run(plan, Arc::default(), cancel).unwrap();
        let all = outcome.total();
        assert!(outcome.interrupted);
        assert_eq!((all.sent, all.cancelled(), all.errors(), all.ok), (3, 3, 0, 0), "{rate:?}: {:?}", all.failures);
        assert!(started.elapsed() < Duration::from_secs(5), "{rate:?}: {:?}", started.elapsed());
    }
}

/// Servers that answer wrongly: an error status, bytes that are not HTTP,
/// a body cut short, an echo of something else. Each is counted by its
/// failure, none as a correct reply.
#[test]
fn wrong_replies_are_counted_as_such() {
    let cases: [(&[u8], bool, load::Failure); 4] = [
        (b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", true, load::Failure::HttpStatus),
        (b"\xff\x00 not http at all", true, load::Failure::WrongReply),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhi", true, load::Failure::WrongReply),
        (b"something else\n", false, load::Failure::WrongReply),
    ];
    for (reply, http, failure) in cases {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Reads the request (an echo's to its end), answers, closes.
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for mut stream in listener.incoming().take(4).flatten() {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(reply);
            }
        });
        let plan = plan(addr, if http { http_to("wrong") } else { load::Protocol::Raw }, 4);
        let outcome = load::run(plan, Arc::default(), fastopen::Cancel::new().unwrap()).unwrap();
        let all = outcome.total();
        assert_eq!(all.failures.get(&failure), Some(&4), "{:?}: {:?}", String::from_utf8_lossy(reply), all.failures);
        assert_eq!(all.ok, 0);
    }
}

/// A loopback server that accepts up to 8 connections and holds them,
/// reading nothing, answering nothing.
fn silent_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(8) {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    addr
}

/// A server whose reply never ends (a head promising 64 MiB, then bytes
/// without end): each request stops at the 16 MiB bound as a wrong reply,
/// not at its deadline and not with the memory of the whole reply.
#[test]
fn a_reply_without_end_is_cut_at_its_bound() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in listener.incoming().take(2).flatten() {
            std::thread::spawn(move || {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n");
                let chunk = vec![b'x'; 1 << 20];
                // Until the client gives up: a write fails once it closed.
                for _ in 0..64 {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let plan = Plan {
        duration: Duration::from_secs(60),
        timeout: Duration::from_secs(30),
        ..plan(addr, http_to("endless"), 2)
    };
    let outcome = load::run(plan, Arc::default(), fastopen::Cancel::new().unwrap()).unwrap();
    let all = outcome.total();
    assert_eq!(all.failures.get(&load::Failure::WrongReply), Some(&2), "{:?}", all.failures);
    assert!(outcome.elapsed < Duration::from_secs(20), "cut at the bound, not at the deadline: {:?}", outcome.elapsed);
}

/// A closed-loop plan of `requests` plain requests to `addr`: 2 clients on
/// one thread, each request within 5 s, the run within 20 s.
fn plan(addr: std::net::SocketAddr, protocol: load::Protocol, requests: u64) -> Plan {
    Plan {
        addr,
        protocol,
        connections: 2,
        requests,
        duration: Duration::from_secs(20),
        rate: None,
        kinds: vec![Kind::Plain],
        timeout: Duration::from_secs(5),
        threads: 1,
    }
}

/// `GET /` with this Host.
fn http_to(host: &str) -> load::Protocol {
    load::Protocol::Http { host: host.into(), path: "/".into() }
}
