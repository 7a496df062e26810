//! TFO through the real kernel, on loopback inside a private network namespace
//! per test (needs root; see `fastopen_lab::netns`). Every claim is checked two
//! ways: what our outcome says, and what the TcpExt counters say.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use fastopen::{
    host, AcceptOutcome, BlockingListener, ClientMethod, ClientOutcome, Connector, Error, FailReason, FastOpenCounters,
    FastOpenKey, FastOpenMode, ListenerBuilder,
};
use fastopen_lab::netns::run_in_private;
use fastopen_lab::testing::root_or_skip;

/// Runs `f` in a fresh namespace with `net.ipv4.tcp_fastopen = mode`.
fn in_netns(test: &str, mode: u32, f: impl FnOnce() + Send) {
    if !root_or_skip(test) {
        return;
    }
    run_in_private(mode, f).expect("private network namespace");
}

/// Serves `n` connections: reads each request to EOF, echoes it, closes.
/// Sends each connection's outcome back.
fn echo_server(listener: BlockingListener, n: usize) -> (mpsc::Receiver<AcceptOutcome>, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        for _ in 0..n {
            let (mut stream, _, outcome) = listener.accept().expect("accept");
            tx.send(outcome).expect("send outcome");
            let mut request = Vec::new();
            stream.read_to_end(&mut request).expect("read request");
            stream.write_all(&request).expect("echo");
        }
    });
    (rx, handle)
}

/// One request/response with the given connector; returns the outcome and checks the echo.
fn exchange(connector: &Connector, addr: SocketAddr, data: &[u8]) -> ClientOutcome {
    let (mut stream, outcome) = connector.connect(addr, data).expect("connect");
    stream.shutdown(Shutdown::Write).expect("shutdown");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read reply");
    assert_eq!(reply, data, "echo must return the request unchanged");
    outcome
}

fn counters() -> FastOpenCounters {
    FastOpenCounters::read().expect("counters")
}

fn cold_then_warm(method: ClientMethod, bind: &str) {
    let listener = ListenerBuilder::new(bind.parse().unwrap()).bind().expect("bind");
    let addr = listener.local_addr().unwrap();
    assert_eq!(listener.tfo().unwrap().queue_len, fastopen::DEFAULT_QUEUE_LEN);
    let (server, handle) = echo_server(listener, 2);
    let connector = Connector::new().method(method);
    let request = b"hello, fast open";

    let before = counters();
    let first = exchange(&connector, addr, request);
    let first_server = server.recv().unwrap();
    let d1 = &counters() - &before;
    assert_eq!(first.fail_reason, Some(FailReason::CookieUnavailable), "{method}: first connection asks for a cookie");
    assert!(!first.tfo_used());
    assert!(!first_server.data_in_syn);
    assert_eq!(first_server.tfo_child, Some(false));
    assert_eq!((d1.cookie_reqd, d1.active, d1.passive), (1, 0, 0), "{method}: counters after cookie request: {d1:?}");

    let before = counters();
    let second = exchange(&connector, addr, request);
    let second_server = server.recv().unwrap();
    let d2 = &counters() - &before;
    assert!(second.tfo_used(), "{method}: second connection: {second}");
    assert_eq!(second.method, Some(method));
    assert_eq!(second.bytes_in_syn, request.len());
    assert!(second_server.data_in_syn);
    assert_eq!(second_server.tfo_child, Some(true));
    assert_eq!(second_server.bytes_in_syn, Some(request.len() as u64));
    assert_eq!((d2.active, d2.passive, d2.cookie_reqd, d2.active_fail), (1, 1, 0, 0), "{method}: {d2:?}");
    handle.join().unwrap();
}

#[test]
fn sendto_ipv4_cookie_then_data_in_syn() {
    in_netns("sendto_ipv4", 3, || cold_then_warm(ClientMethod::SendTo, "127.0.0.1:0"));
}

#[test]
fn sendto_ipv6_cookie_then_data_in_syn() {
    in_netns("sendto_ipv6", 3, || cold_then_warm(ClientMethod::SendTo, "[::1]:0"));
}

#[test]
fn connect_ipv4_cookie_then_data_in_syn() {
    in_netns("connect_ipv4", 3, || cold_then_warm(ClientMethod::Connect, "127.0.0.1:0"));
}

#[test]
fn connect_ipv6_cookie_then_data_in_syn() {
    in_netns("connect_ipv6", 3, || cold_then_warm(ClientMethod::Connect, "[::1]:0"));
}

#[test]
fn tokio_listener_and_client() {
    in_netns("tokio", 3, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind_tokio().unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..2 {
                    let (mut s, _, outcome) = listener.accept().await.unwrap();
                    outcomes.push(outcome);
                    let mut buf = Vec::new();
                    s.read_to_end(&mut buf).await.unwrap();
                    s.write_all(&buf).await.unwrap();
                }
                outcomes
            });
            let mut client_outcomes = Vec::new();
            for method in [ClientMethod::SendTo, ClientMethod::Connect] {
                let (mut s, outcome) = Connector::new().method(method).connect_async(addr, b"async").await.unwrap();
                s.shutdown().await.unwrap();
                let mut reply = Vec::new();
                s.read_to_end(&mut reply).await.unwrap();
                assert_eq!(reply, b"async");
                client_outcomes.push(outcome);
            }
            let server_outcomes = server.await.unwrap();
            assert_eq!(client_outcomes[0].fail_reason, Some(FailReason::CookieUnavailable));
            assert!(client_outcomes[1].tfo_used(), "{}", client_outcomes[1]);
            assert!(!server_outcomes[0].data_in_syn);
            assert_eq!(server_outcomes[1].bytes_in_syn, Some(5));
        });
        assert_eq!(counters().passive, 1);
    });
}

/// A first write of several buffers (a TLS ClientHello and its early data)
/// puts all of them in the SYN, not only the first.
#[test]
fn a_vectored_first_write_puts_every_buffer_in_the_syn() {
    in_netns("vectored_first_write", 3, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
            let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind_tokio().unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..2 {
                    let (mut s, _, outcome) = listener.accept().await.unwrap();
                    outcomes.push(outcome);
                    let mut buf = Vec::new();
                    s.read_to_end(&mut buf).await.unwrap();
                    s.write_all(&buf).await.unwrap();
                }
                outcomes
            });
            for _ in 0..2 {
                let mut s = fastopen::TfoStream::to_addrs(Connector::new(), vec![addr]).unwrap();
                assert!(s.is_write_vectored());
                let bufs = [std::io::IoSlice::new(b"hello, "), std::io::IoSlice::new(b"early data")];
                let n = s.write_vectored(&bufs).await.unwrap();
                s.write_all(&b"hello, early data"[n..]).await.unwrap();
                s.shutdown().await.unwrap();
                let mut reply = Vec::new();
                s.read_to_end(&mut reply).await.unwrap();
                assert_eq!(reply, b"hello, early data");
            }
            let outcomes = server.await.unwrap();
            assert!(!outcomes[0].data_in_syn, "the first connection asks for the cookie");
            assert_eq!(outcomes[1].bytes_in_syn, Some(17), "both buffers in the SYN: {}", outcomes[1]);
        });
        assert_eq!(counters().passive, 1);
    });
}

/// Cookies are cached per destination address, so 127.0.0.1 and 127.0.0.2 are
/// two independent clients of the same listener.
#[test]
fn key_rotation_on_a_live_listener() {
    in_netns("key_rotation", 3, || {
        let k1 = FastOpenKey([1; 16]);
        let k2 = FastOpenKey([2; 16]);
        let listener = ListenerBuilder::new("0.0.0.0:0".parse().unwrap()).keys(k1, None).bind().unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listener.tfo().unwrap().own_keys, 1);
        let a: SocketAddr = ([127, 0, 0, 1], port).into();
        let b: SocketAddr = ([127, 0, 0, 2], port).into();
        let listener = std::sync::Arc::new(listener);
        let server_listener = listener.clone();
        let (tx, rx) = mpsc::channel::<()>();
        let server = thread::spawn(move || {
            for _ in 0..6 {
                let (mut s, _, _) = server_listener.accept().unwrap();
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).unwrap();
                s.write_all(&buf).unwrap();
                let _ = tx.send(());
            }
        });
        let c = Connector::new();
        // Both clients learn a K1 cookie and use it.
        for dst in [a, b] {
            assert_eq!(exchange(&c, dst, b"x").fail_reason, Some(FailReason::CookieUnavailable));
        }
        // The cookie is SipHash-2-4(K1, client || server): compare with the
        // kernel's cookie cache (the client's source is 127.0.0.1 for both).
        let shown = Command::new("ip").args(["tcp_metrics", "show"]).output().unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout);
        for dst in [a, b] {
            let cookie = k1.cookie(a.ip(), dst.ip()).unwrap();
            let hex: String = cookie.iter().map(|b| format!("{b:02x}")).collect();
            assert!(
                shown.contains(&format!("fo_cookie {hex}")),
                "kernel cache {shown:?} lacks our cookie {hex} for {dst}"
            );
        }

        // Rotate: K2 primary, K1 backup. A's K1 cookie is still accepted, via the backup key.
        listener.set_keys(&k2, Some(&k1)).unwrap();
        assert_eq!(listener.tfo().unwrap().own_keys, 2);
        let before = counters();
        let o = exchange(&c, a, b"rotated");
        let d = &counters() - &before;
        assert!(o.tfo_used(), "{o}");
        assert_eq!((d.passive, d.passive_alt_key), (1, 1), "{d:?}");

        // Drop K1: B's K1 cookie is now rejected; the data is sent again after the handshake.
        listener.set_keys(&k2, None).unwrap();
        let before = counters();
        let o = exchange(&c, b, b"stale");
        let d = &counters() - &before;
        assert_eq!(o.fail_reason, Some(FailReason::DataNotAcked), "{o}");
        assert_eq!((d.passive_fail, d.active_fail, d.passive), (1, 1, 0), "{d:?}");
        // ...and B got a K2 cookie with that SYN-ACK, so the next one works again.
        assert!(exchange(&c, b, b"fresh").tfo_used());
        for _ in 0..5 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        TcpStream::connect(a).unwrap().shutdown(Shutdown::Write).unwrap();
        server.join().unwrap();
    });
}

#[test]
fn client_bit_off_falls_back_and_strict_refuses() {
    in_netns("client_off", 2, || {
        assert!(!host::read_mode().unwrap().client());
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let addr = listener.local_addr().unwrap();
        let (_server, handle) = echo_server(listener, 2);
        for method in [ClientMethod::SendTo, ClientMethod::Connect] {
            let o = exchange(&Connector::new().method(method), addr, b"plain please");
            assert_eq!(o.fail_reason, Some(FailReason::ClientDisabled), "{method}");
            assert_eq!(o.method, None);
        }
        match Connector::new().strict(true).connect(addr, b"x") {
            Err(Error::NotUsed(FailReason::ClientDisabled)) => {}
            other => panic!("strict mode must refuse, got {other:?}"),
        }
        handle.join().unwrap();
        assert_eq!(counters().cookie_reqd, 0, "a fallback must not ask for a cookie");
    });
}

#[test]
fn server_bit_off_serves_plain_tcp() {
    in_netns("server_off", 1, || {
        assert_eq!(host::read_mode().unwrap(), FastOpenMode(1));
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let addr = listener.local_addr().unwrap();
        let (server, handle) = echo_server(listener, 2);
        let before = counters();
        for _ in 0..2 {
            let o = exchange(&Connector::new(), addr, b"no cookie for you");
            assert_eq!(o.fail_reason, Some(FailReason::CookieUnavailable));
            assert!(!server.recv().unwrap().data_in_syn);
        }
        let d = &counters() - &before;
        assert_eq!((d.passive, d.active), (0, 0), "{d:?}");
        handle.join().unwrap();
    });
}

#[test]
fn empty_data_is_a_plain_connect() {
    in_netns("empty", 3, || {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let addr = listener.local_addr().unwrap();
        let (_server, handle) = echo_server(listener, 1);
        let o = exchange(&Connector::new(), addr, b"");
        assert_eq!(o.fail_reason, Some(FailReason::NoData));
        handle.join().unwrap();
        assert_eq!(counters().cookie_reqd, 0);
    });
}

#[test]
fn request_larger_than_one_segment() {
    in_netns("large", 3, || {
        // A 1500-byte MTU makes "one segment" what it is on a real path.
        assert!(Command::new("ip").args(["link", "set", "lo", "mtu", "1500"]).status().unwrap().success());
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let addr = listener.local_addr().unwrap();
        let (server, handle) = echo_server(listener, 4);
        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for method in [ClientMethod::SendTo, ClientMethod::Connect] {
            exchange(&Connector::new().method(method), addr, b"get a cookie");
            server.recv().unwrap();
            let o = exchange(&Connector::new().method(method), addr, &big);
            let s = server.recv().unwrap();
            assert!(o.tfo_used(), "{method}: {o}");
            assert!(o.bytes_in_syn > 1000 && o.bytes_in_syn < 1500, "{method}: SYN carried {} bytes", o.bytes_in_syn);
            assert_eq!(o.first_data_len, big.len());
            assert!(s.data_in_syn);
            // More segments may have arrived before accept(); then the server cannot tell.
            if let Some(n) = s.bytes_in_syn {
                assert_eq!(n, o.bytes_in_syn as u64, "{method}");
            }
        }
        handle.join().unwrap();
    });
}

#[test]
fn refused_reset_and_address_in_use_are_errors_not_panics() {
    in_netns("errors", 3, || {
        // Nothing listens: refused, for both methods, with and without a cookie request.
        let closed: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for method in [ClientMethod::SendTo, ClientMethod::Connect] {
            match Connector::new().method(method).connect(closed, b"x") {
                Err(Error::Connect { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused),
                other => panic!("{method}: expected refused, got {other:?}"),
            }
        }
        // Port in use.
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let addr = listener.local_addr().unwrap();
        match ListenerBuilder::new(addr).bind() {
            Err(e @ Error::AddressInUse { .. }) => assert!(e.to_string().contains(&addr.to_string())),
            other => panic!("expected AddressInUse, got {other:?}"),
        }
        // The server resets the connection: the client sees an error on read.
        let server = thread::spawn(move || {
            let (s, _, _) = listener.accept().unwrap();
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
            drop(s);
        });
        let (mut stream, _) = Connector::new().connect(addr, b"hello?").unwrap();
        server.join().unwrap();
        let mut buf = [0u8; 16];
        let err = stream.read(&mut buf).expect_err("a reset must be an error");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    });
}

/// Keys of a wrong size cannot be built (the type is 16 bytes), so the kernel's
/// own refusal of a bad length is tested in `listener.rs`; here: the keys a
/// listener holds are read back from the kernel.
#[test]
fn invalid_keys_are_refused_by_type_and_keys_are_read_back() {
    assert!(FastOpenKey::parse("not a key").is_err());
    in_netns("keys", 3, || {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).no_cookie(true).bind().unwrap();
        assert_eq!(listener.tfo().unwrap().own_keys, 0);
        listener.set_keys(&FastOpenKey([9; 16]), None).unwrap();
        assert_eq!(listener.tfo().unwrap().own_keys, 1);
    });
}

/// Drops every SYN to `port` in the calling thread's (private) namespace.
fn drop_syns_to(port: u16) {
    let status = Command::new("iptables")
        .args(["-I", "INPUT", "-p", "tcp", "--dport", &port.to_string(), "--syn", "-j", "DROP"])
        .status()
        .expect("iptables (.ci/run installs it)");
    assert!(status.success(), "iptables failed");
}

#[test]
fn a_handshake_that_never_completes_is_a_connect_timeout_blocking_and_async() {
    in_netns("connect_timeout", 3, || {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let addr = listener.local_addr().unwrap();
        drop_syns_to(addr.port());
        let connector = Connector::new().connect_timeout(Some(Duration::from_millis(300)));
        for method in [ClientMethod::SendTo, ClientMethod::Connect] {
            match connector.clone().method(method).connect(addr, b"anyone?") {
                Err(Error::ConnectTimeout { addr: a, millis }) => assert_eq!((a, millis), (addr, 300)),
                other => panic!("{method}: expected a connect timeout, got {other:?}"),
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        match rt.block_on(connector.connect_async(addr, b"anyone?")) {
            Err(Error::ConnectTimeout { millis, .. }) => assert_eq!(millis, 300),
            other => panic!("async: expected a connect timeout, got {other:?}"),
        }
        drop(listener);
    });
}

#[test]
fn a_cancel_ends_a_pending_connect_at_once_blocking_and_async() {
    in_netns("cancel_connect", 3, || {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let addr = listener.local_addr().unwrap();
        drop_syns_to(addr.port());
        let cancel = fastopen::Cancel::new().unwrap();
        let connector = Connector::new().connect_timeout(Some(Duration::from_secs(30))).cancel_on(Some(cancel.clone()));
        let canceller = cancel.clone();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            canceller.cancel();
        });
        let started = std::time::Instant::now();
        let result = connector.connect(addr, b"anyone?");
        assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "ended by the cancel, not the 30 s timeout");
        t.join().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = rt.block_on(connector.connect_async(addr, b"anyone?"));
        assert!(matches!(result, Err(Error::Cancelled)), "already cancelled: {result:?}");
        drop(listener);
    });
}

#[test]
fn the_connect_timeout_bounds_the_rest_of_the_first_data_too() {
    in_netns("first_data_deadline", 3, || {
        // A server that accepts and never reads: 64 MiB cannot all be written.
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let addr = listener.local_addr().unwrap();
        let _held = thread::spawn(move || {
            let accepted = listener.accept();
            thread::sleep(Duration::from_secs(20));
            drop(accepted);
        });
        let data = vec![7u8; 64 << 20];
        let connector = Connector::new().connect_timeout(Some(Duration::from_millis(500)));
        let started = std::time::Instant::now();
        match connector.connect(addr, &data) {
            Err(Error::FirstDataTimeout { written, len, millis, .. }) => {
                assert!(written < len && len == data.len() && millis == 500, "{written} of {len}");
            }
            other => panic!("expected the first data's deadline, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "a deadline, not a blocking write");
    });
}

#[test]
fn the_next_address_is_tried_only_when_the_request_cannot_have_left() {
    in_netns("connect_host_retry", 3, || {
        // The first address drops SYNs (a SYN with data may have reached it), the
        // second one answers.
        let dropped = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let good = ListenerBuilder::new("127.0.0.2:0".parse().unwrap()).bind().unwrap();
        let (a, b) = (dropped.local_addr().unwrap(), good.local_addr().unwrap());
        drop_syns_to(a.port());
        let (_rx, _server) = echo_server(good, 8);
        let connector = Connector::new().connect_timeout(Some(Duration::from_millis(300)));
        // No data in the SYN (no cookie yet): nothing left, the next address is tried.
        assert!(connector.connect_host(&[a, b][..], b"req").is_ok());
        // With no-cookie mode the SYN to the first address carries the request.
        let no_cookie = Connector::new().no_cookie(true).connect_timeout(Some(Duration::from_millis(300)));
        match no_cookie.connect_host(&[a, b][..], b"POST /pay") {
            Err(Error::ConnectTimeout { addr, .. }) => assert_eq!(addr, a, "stopped at the address that may have it"),
            other => panic!("a request that may have been delivered was sent again elsewhere: {other:?}"),
        }
        assert!(no_cookie.idempotent(true).connect_host(&[a, b][..], b"GET /").is_ok(), "idempotent: next address");
    });
}

#[test]
fn an_ipv4_client_of_a_dual_stack_listener_gets_the_cookie_of_its_ipv4_addresses() {
    in_netns("cookie_mapped", 3, || {
        let key = FastOpenKey(std::array::from_fn(|i| i as u8 * 7 + 1));
        let listener = ListenerBuilder::new("[::]:0".parse().unwrap()).keys(key, None).bind().unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_rx, _server) = echo_server(listener, 1);
        let v4: SocketAddr = ([127, 0, 0, 1], port).into();
        let c = Connector::new();
        assert_eq!(exchange(&c, v4, b"x").fail_reason, Some(FailReason::CookieUnavailable));
        let shown = Command::new("ip").args(["tcp_metrics", "show"]).output().unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout);
        // The listener sees the peer as ::ffff:127.0.0.1; the cookie is that of 127.0.0.1.
        let mapped: std::net::IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let cookie = key.cookie(mapped, mapped).unwrap();
        let hex: String = cookie.iter().map(|b| format!("{b:02x}")).collect();
        assert!(shown.contains(&format!("fo_cookie {hex}")), "kernel cache {shown:?} lacks {hex}");
    });
}

#[test]
fn a_confirmed_handshake_handle_holds_no_descriptor() {
    in_netns("handshake_fd", 3, || {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let addr = listener.local_addr().unwrap();
        let client = thread::spawn(move || TcpStream::connect(addr).unwrap());
        let (stream, _, _) = listener.accept().unwrap();
        let _client = client.join().unwrap();
        let handshake = fastopen::Handshake::of(&stream).unwrap();
        assert!(!handshake.holds_descriptor(), "a settled handshake needs no duplicate of the socket");
        assert_eq!(handshake.state().unwrap(), fastopen::HandshakeState::Confirmed);
    });
}

#[test]
fn read_first_sends_the_cookie_without_data_and_the_greeting_comes_in_syn_recv() {
    in_netns("read_first", 3, || {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let server = thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _, outcome) = listener.accept().unwrap();
                s.write_all(b"220 ready\r\n").unwrap(); // speaks first
                tx.send(outcome).unwrap();
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            }
        });
        let c = Connector::new().connect_timeout(Some(Duration::from_secs(5)));
        let mut seen = Vec::new();
        for _ in 0..2 {
            let before = counters();
            let (mut stream, outcome) = c.connect_read_first(addr).unwrap();
            assert_eq!(stream.peer_addr().unwrap(), addr, "connected like any other stream");
            let mut greeting = [0u8; 11];
            stream.read_exact(&mut greeting).unwrap();
            assert_eq!(&greeting, b"220 ready\r\n");
            stream.shutdown(Shutdown::Write).unwrap();
            let accepted = rx.recv().unwrap();
            seen.push((outcome, accepted, &counters() - &before));
        }
        let (first, first_accept, _) = &seen[0];
        assert_eq!((first.cookie_only_syn, first.fail_reason), (false, Some(FailReason::CookieUnavailable)), "{first}");
        assert!(!first_accept.cookie_only_syn());
        let (second, second_accept, d) = &seen[1];
        assert!(second.cookie_only_syn && !second.tfo_used() && second.bytes_in_syn == 0, "{second}");
        assert!(second_accept.cookie_only_syn(), "the server made the connection on the cookie SYN: {second_accept:?}");
        assert_eq!(d.passive, 1, "the kernel counts it as a passive TFO connection: {d:?}");
        assert_eq!(d.active, 0, "no data was in the SYN, so nothing was acknowledged: {d:?}");
        server.join().unwrap();
    });
}

#[test]
fn the_cookie_cache_is_read_and_cleared_through_netlink() {
    in_netns("tcp_metrics_forget", 3, || {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let addr = listener.local_addr().unwrap();
        let (_rx, _server) = echo_server(listener, 1);
        let mut cache = fastopen::tcp_metrics::TcpMetrics::open().unwrap();
        assert_eq!(cache.cookie_for(addr.ip()).unwrap(), None);
        exchange(&Connector::new(), addr, b"ask");
        let cookie = cache.cookie_for(addr.ip()).unwrap().expect("the SYN-ACK's cookie is cached");
        assert_eq!(cookie.len(), 8);
        cache.forget(addr.ip()).unwrap();
        assert_eq!(cache.cookie_for(addr.ip()).unwrap(), None, "forgotten");
        cache.forget(addr.ip()).unwrap(); // nothing cached: not an error
    });
}

#[test]
fn no_cookie_mode_end_to_end_carries_data_in_the_first_syn() {
    in_netns("no_cookie", 3, || {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).no_cookie(true).bind().unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut s, _, outcome) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            (outcome, got)
        });
        let before = FastOpenCounters::read().unwrap();
        let (stream, outcome) = Connector::new().no_cookie(true).connect(addr, b"no cookie needed").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let (accepted, got) = server.join().unwrap();
        // The very first connection: no cookie request, the data rode in the SYN.
        assert!(outcome.tfo_used(), "{outcome}");
        assert_eq!(outcome.bytes_in_syn, 16);
        assert!(accepted.data_in_syn, "{accepted}");
        assert_eq!(got, b"no cookie needed");
        let d = &FastOpenCounters::read().unwrap() - &before;
        assert_eq!((d.active, d.passive, d.cookie_reqd), (1, 1, 0), "{d:?}");
    });
}

#[test]
fn a_listener_group_shares_one_port_and_refuses_a_taken_one() {
    in_netns("group", 3, || {
        let group = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).queue_len(8).bind_group(2).unwrap();
        let addr = group[0].local_addr().unwrap();
        assert_eq!(group[1].local_addr().unwrap(), addr, "port 0: the others take the first one's port");
        assert!(group.iter().all(|l| l.tfo().unwrap().queue_len == 8), "each has the builder's TFO settings");
        // Another group, or a lone listener, on the taken port: refused, not joined.
        let again = ListenerBuilder::new(addr).bind_group(2).unwrap_err();
        assert!(matches!(again, Error::AddressInUse { .. }), "{again}");
        assert!(matches!(ListenerBuilder::new(addr).bind().unwrap_err(), Error::AddressInUse { .. }));
        // More groups on port 0 never land on a port a group holds (with SO_REUSEPORT, bind(0) may).
        let others: Vec<_> =
            (0..20).map(|_| ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind_group(2).unwrap()).collect();
        let mut ports: Vec<u16> = others.iter().map(|g| g[0].local_addr().unwrap().port()).collect();
        ports.push(addr.port());
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 21, "each group has a port of its own");
        drop(others);
        // The kernel spreads connections over both; each reports its outcome, TFO included.
        let servers: Vec<_> = group.into_iter().map(|l| l.into_std()).collect();
        for s in &servers {
            s.set_nonblocking(true).unwrap();
        }
        let before = counters();
        let mut accepted = [0usize; 2];
        for i in 0..64 {
            let (_client, _) = Connector::new().connect(addr, b"hi").unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            'found: loop {
                for (n, s) in servers.iter().enumerate() {
                    if let Ok((stream, _)) = s.accept() {
                        let outcome = fastopen::accept_outcome(&stream).unwrap();
                        assert_eq!(outcome.data_in_syn, i > 0, "connection {i}");
                        accepted[n] += 1;
                        break 'found;
                    }
                }
                assert!(std::time::Instant::now() < deadline, "connection {i} reached no listener");
                thread::sleep(Duration::from_millis(1));
            }
        }
        assert!(accepted.iter().all(|&n| n > 0), "both listeners got connections: {accepted:?}");
        assert_eq!((&counters() - &before).passive, 63, "one cookie, honoured by both listeners");
        // Once the group is gone the address is free again (after a moment: a
        // fork in another test's thread may hold a copy of the fds until its exec).
        drop(servers);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while let Err(e) = ListenerBuilder::new(addr).bind() {
            assert!(std::time::Instant::now() < deadline, "{e}");
            thread::sleep(Duration::from_millis(10));
        }
    });
}

/// The eBPF probe of `tfo watch` names the process that connected a socket,
/// by the socket's cookie (as sock_diag reports it), once.
#[test]
fn the_bpf_probe_names_the_process_that_connected() {
    in_netns("bpf_owners", 3, || {
        let owners = fastopen::owners::ConnectOwners::attach().expect("BPF: root, BTF and tp_btf on this kernel");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let local = client.local_addr().unwrap();
        let sockets = fastopen::sock_diag::SockDiag::open().unwrap().dump().unwrap();
        let mine = sockets.iter().find(|s| s.local == local).expect("the client socket in the dump");
        let owner = owners.take(mine.cookie).unwrap().expect("the probe saw the connect");
        assert_eq!(owner.pid, std::process::id());
        // The process's name (its main thread's), not the test thread's.
        let process = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(owner.comm, process.trim());
        let thread = std::fs::read_to_string(format!("/proc/self/task/{}/comm", nix::unistd::gettid())).unwrap();
        assert_ne!(owner.comm, thread.trim(), "a test runs on a thread named after it");
        assert!(owner.cgroup_id > 0);
        assert_eq!(owners.take(mine.cookie).unwrap(), None, "taken once");
        let server_side = sockets.iter().find(|s| s.peer == local).expect("the server's socket");
        assert_eq!(owners.take(server_side.cookie).unwrap(), None, "a server socket never entered SYN_SENT");
    });
}

/// The API for event loops of one's own: `start_connect` returns with the SYN
/// sent (the data in it once a cookie is cached), the loop waits for
/// writability as it likes (poll(2) here), and `finish_connect` gives
/// the same outcome as the blocking API; a refusal is a connect error.
#[test]
fn start_and_finish_connect_for_an_event_loop_of_ones_own() {
    in_netns("pending_connect", 3, || {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().expect("bind");
        let addr = listener.local_addr().unwrap();
        let (server, handle) = echo_server(listener, 2);
        let connector = Connector::new();
        let request = b"from my own loop";
        // The loop: poll(2) for writability, up to 5 s.
        let connected = |pending: fastopen::PendingConnect| {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            let mut fds = [PollFd::new(pending.as_fd(), PollFlags::POLLOUT)];
            assert_eq!(poll(&mut fds, PollTimeout::from(5000u16)).unwrap(), 1, "writable within 5 s");
            connector.finish_connect(pending)
        };
        let mut written = Vec::new();
        let mut outcomes = Vec::new();
        let before = counters();
        for _ in 0..2 {
            let pending = connector.start_connect(addr, request).expect("start");
            assert_eq!(pending.peer(), addr);
            let in_kernel = pending.written();
            written.push(in_kernel);
            let (mut stream, outcome) = connected(pending).expect("finish");
            outcomes.push(outcome);
            stream.set_nonblocking(false).unwrap();
            stream.write_all(&request[in_kernel..]).unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).unwrap();
            assert_eq!(reply, request);
        }
        let d = &counters() - &before;
        assert_eq!(written, [0, request.len()], "no cookie yet, then the whole request in the SYN");
        assert_eq!(outcomes[0].fail_reason, Some(FailReason::CookieUnavailable));
        assert!(outcomes[1].tfo_used(), "{}", outcomes[1]);
        assert_eq!(outcomes[1].bytes_in_syn, request.len());
        assert_eq!((d.cookie_reqd, d.active), (1, 1), "{d:?}");
        assert!(!server.recv().unwrap().data_in_syn);
        assert_eq!(server.recv().unwrap().bytes_in_syn, Some(request.len() as u64));
        handle.join().unwrap();

        // Nobody listens on port 9 in this namespace.
        let pending = connector.start_connect("127.0.0.1:9".parse().unwrap(), request).expect("start");
        match connected(pending) {
            Err(Error::Connect { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused),
            other => panic!("expected a refusal, got {other:?}"),
        }
    });
}
