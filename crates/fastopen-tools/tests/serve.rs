//! The server engine on its own, without the CLI: HTTP over TFO in a private
//! network namespace, each connection's log against the client's outcome.

use std::io::Read;
use std::sync::{Arc, Mutex};

use fastopen::{Connector, ListenerBuilder};
use fastopen_tools::echo::{serve, Budget, ConnectionLog, Limits, Protocol, Service};

#[test]
fn the_engine_serves_http_over_tfo_and_logs_each_connection() {
    if !fastopen_lab::testing::root_or_skip("engine_serves") {
        return;
    }
    fastopen_lab::netns::run_in_private(3, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let listener =
            rt.block_on(async { ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind_tokio() }).unwrap();
        let addr = listener.local_addr().unwrap();
        let logs: Arc<Mutex<Vec<ConnectionLog>>> = Arc::default();
        let notices: Arc<Mutex<Vec<String>>> = Arc::default();
        let (logs_in, notices_in) = (logs.clone(), notices.clone());
        let server = std::thread::spawn(move || {
            let service =
                Service { protocol: Protocol::Http, tls: None, limits: Limits::default(), log_confirmation: true };
            rt.block_on(serve(
                Arc::new(listener),
                &service,
                &Budget::new(Some(2)),
                std::future::pending(),
                move |log| logs_in.lock().unwrap().push(log),
                Arc::new(move |line| notices_in.lock().unwrap().push(line)),
            ));
        });
        let request = b"GET /engine HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let (mut stream, outcome) = Connector::new().connect(addr, request).unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).unwrap();
            assert!(reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("GET /engine HTTP/1.1\r\nHost: x\r\n\r\n"));
            outcomes.push(outcome);
        }
        server.join().unwrap(); // the budget of two connections is spent
        let logs = logs.lock().unwrap();
        assert_eq!(logs.len(), 2);
        assert!(!logs[0].in_syn && logs[1].in_syn, "cookie, then the request in the SYN: {logs:?}");
        assert!(outcomes[1].tfo_used());
        assert!(logs.iter().all(|l| l.handled && l.http_status == Some(200) && l.error.is_none()), "{logs:?}");
        assert!(notices.lock().unwrap().is_empty());
    })
    .unwrap();
}
