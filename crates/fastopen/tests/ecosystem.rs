//! `fastopen` in the Rust services people run (issue 10): `TfoStream`, the
//! axum listener, the listener's socket options and strict mode, outcomes of
//! sockets made elsewhere. Root, private namespaces, checked against the
//! kernel's counters and a real peer (curl).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use fastopen::{
    socket_outcome, AcceptOutcome, ClientMethod, Connector, FailReason, FastOpenCounters, ListenerBuilder, ServerTfo,
    TfoConnectInfo, TfoStream,
};
use fastopen_lab::netns::run_in_private;
use fastopen_lab::testing::root_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn in_netns(test: &str, mode: u32, f: impl FnOnce() + Send) {
    if !root_or_skip(test) {
        return;
    }
    run_in_private(mode, f).expect("private network namespace");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn counters() -> FastOpenCounters {
    FastOpenCounters::read().unwrap()
}

/// An echo server on a tokio TFO listener; sends each connection's outcome.
async fn echo_server(addr: &str) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<AcceptOutcome>) {
    let listener = ListenerBuilder::new(addr.parse().unwrap()).bind_tokio().unwrap();
    let local = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _, outcome)) = listener.accept().await {
            let _ = tx.send(outcome);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (local, rx)
}

#[test]
fn tfo_stream_sends_its_first_write_in_the_syn() {
    in_netns("tfo_stream", 3, || {
        runtime().block_on(async {
            let (addr, mut accepted) = echo_server("127.0.0.1:0").await;
            for (i, method) in
                [ClientMethod::Connect, ClientMethod::Connect, ClientMethod::SendTo].into_iter().enumerate()
            {
                let before = counters();
                let mut s = TfoStream::connect_with(Connector::new().method(method), addr).await.unwrap();
                assert!(s.outcome().is_none(), "connect returns before anything is sent");
                s.write_all(b"ping").await.unwrap();
                let mut reply = [0u8; 4];
                s.read_exact(&mut reply).await.unwrap();
                assert_eq!(&reply, b"ping");
                let outcome = s.outcome().expect("the handshake is over once a reply came").clone();
                let server = accepted.recv().await.unwrap();
                let d = &counters() - &before;
                if i == 0 {
                    assert_eq!(outcome.fail_reason, Some(FailReason::CookieUnavailable), "{outcome}");
                    assert_eq!((d.active, server.data_in_syn), (0, false));
                } else {
                    assert!(outcome.tfo_used(), "{method}: {outcome}");
                    assert_eq!((d.active, d.passive, server.data_in_syn), (1, 1, true), "{method}: {d:?}");
                    assert_eq!(server.bytes_in_syn, Some(4));
                }
            }
        });
    });
}

#[test]
fn a_read_before_any_write_sends_the_cookie_without_data_and_does_not_hang() {
    in_netns("tfo_stream_read_first", 3, || {
        runtime().block_on(async {
            // A server that speaks first (like SMTP): the client reads before writing.
            let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind_tokio().unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut s, _, _)) = listener.accept().await {
                    let _ = s.write_all(b"220 hello\r\n").await;
                }
            });
            // A cookie is cached for the server: a deferred SYN would wait for a write forever.
            let mut warm = TfoStream::connect(addr).await.unwrap();
            let _ = warm.handshake().await.unwrap();
            let mut s = TfoStream::connect(addr).await.unwrap();
            let mut greeting = [0u8; 11];
            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut greeting)).await.expect("no hang").unwrap();
            assert_eq!(&greeting, b"220 hello\r\n");
            // The cached cookie rode in a SYN without data: the server could greet in SYN_RECV.
            let outcome = s.outcome().unwrap();
            assert!(outcome.cookie_only_syn && outcome.fail_reason.is_none(), "{outcome}");
        });
    });
}

#[test]
fn connect_errors_stay_connect_errors_and_every_address_is_tried() {
    in_netns("tfo_stream_errors", 3, || {
        runtime().block_on(async {
            let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            // Refused, surfacing in the first write or the read after it: ConnectionRefused either way.
            let mut s = TfoStream::connect(closed).await.unwrap();
            let err = match s.write_all(b"x").await {
                Err(e) => e,
                Ok(()) => s.read_u8().await.unwrap_err(),
            };
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
            // A host name: `localhost` resolves to ::1 and 127.0.0.1; the server is only on
            // 127.0.0.1, so a client that tries one address only may fail.
            let (addr, _accepted) = echo_server("127.0.0.1:0").await;
            let mut s = TfoStream::connect(("localhost", addr.port())).await.unwrap();
            s.write_all(b"by name").await.unwrap();
            let mut reply = [0u8; 7];
            s.read_exact(&mut reply).await.unwrap();
            assert_eq!(&reply, b"by name");
            assert_eq!(s.peer_addr(), addr);
            // Deterministically: a refusing address first, then the server. The data of the
            // first write (already reported written) reaches the second address.
            let mut s = TfoStream::to_addrs(Connector::new(), vec![closed, addr]).unwrap();
            s.write_all(b"second").await.unwrap();
            let mut reply = [0u8; 6];
            s.read_exact(&mut reply).await.unwrap();
            assert_eq!((&reply, s.peer_addr()), (b"second", addr));
            // IPv6.
            let (addr6, _a6) = echo_server("[::1]:0").await;
            let mut s = TfoStream::connect(addr6).await.unwrap();
            s.write_all(b"six").await.unwrap();
            let mut reply = [0u8; 3];
            s.read_exact(&mut reply).await.unwrap();
            assert!(s.peer_addr().is_ipv6());
            // A handshake that never completes: TimedOut after the connect timeout.
            let silent = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
            let silent_addr = silent.local_addr().unwrap();
            let status = Command::new("iptables")
                .args(["-I", "INPUT", "-p", "tcp", "--dport", &silent_addr.port().to_string(), "--syn", "-j", "DROP"])
                .status()
                .expect("iptables");
            assert!(status.success());
            let connector = Connector::new().connect_timeout(Some(Duration::from_millis(300)));
            let mut s = TfoStream::connect_with(connector, silent_addr).await.unwrap();
            let err = s.handshake().await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        });
    });
}

#[test]
fn client_and_server_tfo_off_each_say_so() {
    // tcp_fastopen=0: the client falls back, and says why.
    in_netns("tfo_off_client", 0, || {
        runtime().block_on(async {
            let (addr, _a) = echo_server("127.0.0.1:0").await;
            let mut s = TfoStream::connect(addr).await.unwrap();
            s.write_all(b"x").await.unwrap();
            let _ = s.read_u8().await.unwrap();
            assert_eq!(s.outcome().unwrap().fail_reason, Some(FailReason::ClientDisabled));
        });
    });
    // tcp_fastopen=1 (the usual host default): the listener binds but does no TFO;
    // its typed state says so, and strict mode refuses to start.
    in_netns("tfo_off_server", 1, || {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        assert_eq!(listener.tfo().unwrap().state, ServerTfo::OffInNamespace { mode: 1 });
        match ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).strict(true).bind() {
            Err(fastopen::Error::ServerTfoOff(ServerTfo::OffInNamespace { mode: 1 })) => {}
            other => panic!("strict mode must refuse: {other:?}"),
        }
        let zero = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).queue_len(0);
        fastopen_lab::netns::set_sysctl("net.ipv4.tcp_fastopen", "3").unwrap();
        assert!(matches!(zero.strict(true).bind(), Err(fastopen::Error::ServerTfoOff(ServerTfo::QueueZero))));
    });
}

#[test]
fn listener_socket_options_and_adopting_an_existing_socket() {
    in_netns("listener_options", 3, || {
        // IPV6_V6ONLY: [::]:P beside 0.0.0.0:P.
        let v4 = ListenerBuilder::new("0.0.0.0:0".parse().unwrap()).bind().unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6: SocketAddr = format!("[::]:{port}").parse().unwrap();
        assert!(ListenerBuilder::new(v6).bind().is_err(), "dual stack collides with the IPv4 listener");
        ListenerBuilder::new(v6).only_v6(true).bind().expect("IPv6 only sits beside it");
        // SO_REUSEPORT: two listeners on one port.
        let a = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).reuse_port(true).bind().unwrap();
        let again = a.local_addr().unwrap();
        ListenerBuilder::new(again).reuse_port(true).bind().expect("a second SO_REUSEPORT listener");
        // An inherited listening socket (systemd socket activation) becomes a TFO listener.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let adopted = ListenerBuilder::new(addr).queue_len(16).adopt(std_listener).unwrap();
        assert_eq!((adopted.tfo().unwrap().queue_len, adopted.tfo().unwrap().state), (16, ServerTfo::On));
        let server = std::thread::spawn(move || {
            (0..2)
                .map(|_| {
                    let (mut s, _, outcome) = adopted.accept().unwrap();
                    let mut b = [0u8; 3];
                    s.read_exact(&mut b).unwrap();
                    s.write_all(&b).unwrap();
                    outcome
                })
                .collect::<Vec<_>>()
        });
        // A socket connected by hand (not by this library) still has its outcome read.
        for round in 0..2 {
            let (mut s, _) = Connector::new().connect(addr, b"abc").unwrap();
            let mut b = [0u8; 3];
            s.read_exact(&mut b).unwrap();
            let o = socket_outcome(&s).unwrap();
            assert_eq!(o.tfo_used(), round == 1, "{o:?}");
            let first = if round == 0 { Some(FailReason::CookieUnavailable) } else { None };
            assert_eq!(o.fail_reason, first, "{o:?}");
        }
        let outcomes = server.join().unwrap();
        assert!(!outcomes[0].data_in_syn && outcomes[1].data_in_syn, "{outcomes:?}");
    });
}

#[test]
fn axum_serves_on_the_listener_and_handlers_see_the_outcome() {
    if !root_or_skip("axum") {
        return;
    }
    let curl =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join("curl").is_file())).unwrap_or(false);
    if !curl {
        assert!(std::env::var_os("CI").is_none(), "CI must have curl");
        eprintln!("SKIPPED axum test: no curl");
        return;
    }
    run_in_private(3, || {
        let rt = runtime();
        let listener =
            rt.block_on(async { ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind_tokio() }).unwrap();
        let addr = listener.local_addr().unwrap();
        async fn handler(axum::extract::ConnectInfo(info): axum::extract::ConnectInfo<TfoConnectInfo>) -> String {
            format!("{}|{}", info.outcome.data_in_syn, info.outcome)
        }
        let app = axum::Router::new().route("/", axum::routing::get(handler));
        rt.spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<TfoConnectInfo>()).await.unwrap();
        });
        let url = format!("http://{addr}/");
        let mut bodies = Vec::new();
        let before = counters();
        for _ in 0..2 {
            let o = Command::new("curl").args(["-sS", "--tcp-fastopen", "--max-time", "10", &url]).output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            bodies.push(String::from_utf8(o.stdout).unwrap());
        }
        let d = &counters() - &before;
        assert_eq!(bodies[0], "false|regular handshake");
        assert!(bodies[1].starts_with("true|data in SYN"), "{}", bodies[1]);
        assert_eq!((d.passive, d.cookie_reqd), (1, 1), "{d:?}");
    })
    .expect("private namespace");
}

/// Three GETs through hyper-util's client with our connector, each on a new
/// connection: the first asks for a cookie, the second and third carry the
/// request in the SYN. Returns the outcomes the caller read from the responses.
async fn three_gets(url: &str) -> Vec<fastopen::ClientOutcome> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    let client = Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0) // a new connection per request
        .build::<_, Empty<bytes::Bytes>>(fastopen::hyper::Connector::new());
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let response = client.get(url.parse().unwrap()).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let outcome = response.extensions().get::<fastopen::hyper::ConnectionOutcome>().expect("outcome").clone();
        let _body = response.into_body().collect().await.unwrap();
        outcomes.push(outcome.get().expect("known once the response came").clone());
    }
    outcomes
}

fn assert_cookie_then_syn_data(outcomes: &[fastopen::ClientOutcome], d: &FastOpenCounters) {
    assert_eq!(outcomes[0].fail_reason, Some(FailReason::CookieUnavailable), "{}", outcomes[0]);
    assert!(outcomes[1].tfo_used() && outcomes[2].tfo_used(), "{} / {}", outcomes[1], outcomes[2]);
    assert_eq!(d.active, 2, "{d:?}");
}

#[test]
fn hyper_client_rides_in_the_syn_against_axum_and_nginx() {
    if !root_or_skip("hyper_client") {
        return;
    }
    run_in_private(3, || {
        let rt = runtime();
        // Against the axum server on our listener.
        let listener =
            rt.block_on(async { ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind_tokio() }).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello from axum\n" }));
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        let before = counters();
        let outcomes = rt.block_on(three_gets(&format!("http://{addr}/")));
        let d = &counters() - &before;
        assert_cookie_then_syn_data(&outcomes, &d);
        assert_eq!(d.passive, 2, "{d:?}");

        // Against nginx with `listen ... fastopen=256`.
        let Some(nginx) = Nginx::start(8082) else { return };
        Command::new("ip").args(["tcp_metrics", "flush", "all"]).status().unwrap();
        let before = counters();
        let outcomes = rt.block_on(three_gets("http://127.0.0.1:8082/"));
        let d = &counters() - &before;
        assert_cookie_then_syn_data(&outcomes, &d);
        assert_eq!(d.passive, 2, "nginx accepted the SYN data: {d:?}");
        drop(nginx);
    })
    .expect("private namespace");
}

/// nginx serving "hello from nginx" on 127.0.0.1:PORT with TFO.
struct Nginx;

impl Nginx {
    fn start(port: u16) -> Option<fastopen_lab::testing::Nginx> {
        let listen = [format!("127.0.0.1:{port} fastopen=256")];
        fastopen_lab::testing::Nginx::start("nginx", &listen, "", "hello from nginx\n")
    }

    /// With TLS: a self-signed certificate for `localhost` (returned, to trust it).
    fn start_tls(port: u16) -> Option<(fastopen_lab::testing::Nginx, rcgen::CertifiedKey<rcgen::KeyPair>)> {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("fastopen-tls-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (crt, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&crt, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        let extra = format!(
            "ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_early_data on;",
            crt.display(),
            key.display()
        );
        let listen = [format!("127.0.0.1:{port} ssl fastopen=256")];
        let nginx = fastopen_lab::testing::Nginx::start("nginx_tls", &listen, &extra, "hello from nginx\n")?;
        Some((nginx, cert))
    }
}

/// tokio-tfo, the other tokio TFO crate, both ways: its client against our
/// listener (our outcome says its request rode in the SYN), and our TfoStream
/// against its listener (our outcome and the kernel's counters agree).
#[test]
fn interop_with_tokio_tfo_both_ways() {
    in_netns("tokio_tfo", 3, || {
        runtime().block_on(async {
            // Their client, our server.
            let (addr, mut accepted) = echo_server("127.0.0.1:0").await;
            for round in 0..2 {
                let mut s = tokio_tfo::TfoStream::connect(addr).await.unwrap();
                s.write_all(b"theirs").await.unwrap();
                let mut reply = [0u8; 6];
                s.read_exact(&mut reply).await.unwrap();
                let outcome = accepted.recv().await.unwrap();
                assert_eq!(outcome.data_in_syn, round == 1, "round {round}: {outcome}");
            }
            // Our client, their server (cold again: cookies are cached per server IP).
            assert!(Command::new("ip").args(["tcp_metrics", "flush", "all"]).status().unwrap().success());
            let theirs = tokio_tfo::TfoListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let their_addr = theirs.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = theirs.accept().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4];
                        if s.read_exact(&mut buf).await.is_ok() {
                            let _ = s.write_all(&buf).await;
                        }
                    });
                }
            });
            for round in 0..2 {
                let before = counters();
                let mut s = TfoStream::connect(their_addr).await.unwrap();
                s.write_all(b"ours").await.unwrap();
                let mut reply = [0u8; 4];
                s.read_exact(&mut reply).await.unwrap();
                let d = &counters() - &before;
                assert_eq!(s.outcome().unwrap().tfo_used(), round == 1, "round {round}: {}", s.outcome().unwrap());
                assert_eq!(d.passive, u64::from(round == 1), "{d:?}");
            }
        });
    });
}

/// A gRPC method with raw bytes for messages (no code generation needed).
mod grpc {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::{Request, Response, Status};

    #[derive(Debug, Clone, Copy, Default)]
    pub(crate) struct BytesCodec;

    impl Codec for BytesCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = BytesCodec;
        type Decoder = BytesCodec;
        fn encoder(&mut self) -> BytesCodec {
            BytesCodec
        }
        fn decoder(&mut self) -> BytesCodec {
            BytesCodec
        }
    }

    impl Encoder for BytesCodec {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for BytesCodec {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut out = vec![0u8; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }

    /// `/tfo.Echo/Say`: answers with the request.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct EchoServer;

    impl tonic::server::NamedService for EchoServer {
        const NAME: &'static str = "tfo.Echo";
    }

    struct Say;

    impl tonic::server::UnaryService<Vec<u8>> for Say {
        type Response = Vec<u8>;
        type Future = Pin<Box<dyn Future<Output = Result<Response<Vec<u8>>, Status>> + Send>>;
        fn call(&mut self, request: Request<Vec<u8>>) -> Self::Future {
            let body = request.into_inner();
            Box::pin(async move { Ok(Response::new(body)) })
        }
    }

    impl tower_service::Service<http::Request<tonic::body::Body>> for EchoServer {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            Box::pin(async move { Ok(tonic::server::Grpc::new(BytesCodec).unary(Say, req).await) })
        }
    }
}

/// Accepted connections of a TFO listener, as the `Stream` tonic serves.
struct Incoming {
    listener: fastopen::TokioListener,
    outcomes: tokio::sync::mpsc::UnboundedSender<AcceptOutcome>,
}

/// An accepted stream for tonic (which wants its own `Connected` trait).
struct Conn(tokio::net::TcpStream);

impl tokio_stream::Stream for Incoming {
    type Item = std::io::Result<Conn>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.listener.poll_accept(cx).map(|r| {
            Some(r.map_err(std::io::Error::from).map(|(s, _, outcome)| {
                let _ = self.outcomes.send(outcome);
                Conn(s)
            }))
        })
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[test]
fn a_tonic_unary_call_over_the_connector() {
    in_netns("tonic", 3, || {
        runtime().block_on(async {
            let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind_tokio().unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, mut server_outcomes) = tokio::sync::mpsc::unbounded_channel();
            let incoming = Incoming { listener, outcomes: tx };
            tokio::spawn(
                tonic::transport::Server::builder().add_service(grpc::EchoServer).serve_with_incoming(incoming),
            );
            for round in 0..2 {
                let before = counters();
                let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
                let channel = endpoint.connect_with_connector(fastopen::hyper::Connector::new()).await.unwrap();
                let mut grpc = tonic::client::Grpc::new(channel);
                grpc.ready().await.unwrap();
                let path = http::uri::PathAndQuery::from_static("/tfo.Echo/Say");
                let reply =
                    grpc.unary(tonic::Request::new(b"over TFO".to_vec()), path, grpc::BytesCodec).await.unwrap();
                assert_eq!(reply.into_inner(), b"over TFO");
                let server = server_outcomes.recv().await.unwrap();
                let d = &counters() - &before;
                // The first connection asks for a cookie; the second's HTTP/2 preface rides in the SYN.
                assert_eq!(server.data_in_syn, round == 1, "round {round}: {server}");
                assert_eq!((d.active, d.passive), (u64::from(round == 1), u64::from(round == 1)), "{d:?}");
            }
        });
    });
}

/// https through rustls layered on the TFO connector, against nginx
/// `listen ... ssl fastopen=256`: the ClientHello rides in the SYN.
#[test]
fn https_through_rustls_sends_the_client_hello_in_the_syn() {
    if !root_or_skip("https") {
        return;
    }
    run_in_private(3, || {
        let Some((nginx, cert)) = Nginx::start_tls(8443) else { return };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(fastopen::hyper::Connector::new().allow_any_scheme(true));
        let rt = runtime();
        rt.block_on(async {
            use http_body_util::{BodyExt, Empty};
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build::<_, Empty<bytes::Bytes>>(https);
            // `localhost` may resolve to ::1 first, where nothing listens: the next address is tried.
            let url: hyper::Uri = "https://localhost:8443/".parse().unwrap();
            for round in 0..2 {
                let before = counters();
                let response = client.get(url.clone()).await.unwrap();
                let outcome = response.extensions().get::<fastopen::hyper::ConnectionOutcome>().cloned().unwrap();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"hello from nginx\n");
                let d = &counters() - &before;
                let o = outcome.get().unwrap();
                assert_eq!(o.tfo_used(), round == 1, "round {round}: {o}");
                assert_eq!((d.active, d.passive), (u64::from(round == 1), u64::from(round == 1)), "{d:?}");
                if round == 1 {
                    // A TLS ClientHello (a handshake record, 0x16) is hundreds of bytes: it rode in the SYN.
                    assert!(o.bytes_in_syn > 200, "{o}");
                }
            }
        });
        drop(nginx);
    })
    .expect("private namespace");
}

#[test]
fn blocking_clients_take_host_names_a_local_address_and_a_mark() {
    in_netns("connector_options", 3, || {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let port = listener.local_addr().unwrap().port();
        // The server keeps its streams: closing one with unread data would reset it under the client.
        let server = std::thread::spawn(move || {
            (0..2)
                .map(|_| {
                    let (stream, peer, _) = listener.accept().unwrap();
                    (stream, peer)
                })
                .collect::<Vec<_>>()
        });
        // `localhost` may give ::1 first, where nothing listens: the next address is tried.
        let (s, outcome) = Connector::new().connect_host(("localhost", port), b"x").unwrap();
        assert_eq!(s.peer_addr().unwrap().port(), port);
        assert_eq!(outcome.fail_reason, Some(FailReason::CookieUnavailable));
        let local: SocketAddr = "127.0.0.2:0".parse().unwrap();
        let connector = Connector::new().local_addr(Some(local)).mark(Some(42));
        let (s, _) = connector.connect_host(format!("127.0.0.1:{port}"), b"y").unwrap();
        assert_eq!(socket2::SockRef::from(&s).mark().unwrap(), 42);
        let accepted = server.join().unwrap();
        assert_eq!(accepted[1].1.ip().to_string(), "127.0.0.2", "the server saw the chosen source address");
        let none = Connector::new().connect_host("nonexistent.invalid:80", b"z");
        assert!(none.is_err());
    });
}

/// A hand-written hyper server loop on the TFO listener works as directly as
/// on a tokio one: `accept` gives a tokio `TcpStream` and the outcome.
#[test]
fn a_plain_hyper_server_loop_on_the_listener() {
    use http_body_util::{BodyExt, Empty, Full};
    in_netns("hyper_server", 3, || {
        runtime().block_on(async {
            let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind_tokio().unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (stream, _, outcome) = listener.accept().await.unwrap();
                    let service = hyper::service::service_fn(move |_req| async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(bytes::Bytes::from(
                            outcome.to_string(),
                        ))))
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                    );
                }
            });
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build::<_, Empty<bytes::Bytes>>(fastopen::hyper::Connector::new());
            let mut bodies = Vec::new();
            for _ in 0..2 {
                let r = client.get(format!("http://{addr}/").parse().unwrap()).await.unwrap();
                bodies.push(String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap());
            }
            assert_eq!(bodies[0], "regular handshake");
            assert!(bodies[1].starts_with("data in SYN"), "{}", bodies[1]);
        });
    });
}

/// A rustls client configuration trusting `cert`, for HTTP/1.1.
fn tls_client(cert: &rcgen::CertifiedKey<rcgen::KeyPair>, early_data: bool) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.enable_early_data = early_data;
    std::sync::Arc::new(config)
}

/// `fastopen::tls::TlsConnector` with early data against nginx
/// (`ssl_early_data on`): the first connection brings the tickets, the next
/// one resumes and its GET goes as early data with the ClientHello, in the
/// SYN; each response says so (TFO and TLS outcomes), nginx logs the
/// resumption, and the kernel counts the SYN.
#[test]
fn the_tls_connector_sends_the_request_as_early_data_in_the_syn() {
    if !root_or_skip("tls_connector_early_data") {
        return;
    }
    run_in_private(3, || {
        let Some((nginx, cert)) = Nginx::start_tls(8444) else { return };
        let connector = fastopen::tls::TlsConnector::new(tls_client(&cert, true)).early_data(true);
        runtime().block_on(async {
            use http_body_util::{BodyExt, Empty};
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build::<_, Empty<bytes::Bytes>>(connector);
            let url: hyper::Uri = "https://localhost:8444/".parse().unwrap();
            for round in 0..2 {
                let before = counters();
                let response = client.get(url.clone()).await.unwrap();
                let tcp = response.extensions().get::<fastopen::hyper::ConnectionOutcome>().cloned().unwrap();
                let tls = response.extensions().get::<fastopen::tls::TlsOutcome>().cloned().unwrap();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"hello from nginx\n");
                let (tcp, tls) = (tcp.get().unwrap(), *tls.get().unwrap());
                let d = &counters() - &before;
                assert_eq!(tcp.tfo_used(), round == 1, "round {round}: {tcp}");
                assert_eq!(d.active, u64::from(round == 1), "{d:?}");
                assert_eq!(
                    (tls.resumed, tls.early_data_sent, tls.early_data_accepted),
                    (round == 1, round == 1, round == 1)
                );
                if round == 1 {
                    // The hello (hundreds of bytes) and the GET after it, both in the SYN.
                    assert!(tcp.bytes_in_syn > 400, "{tcp}");
                }
            }
        });
        // nginx's word: the second connection resumed. Whether nginx logs it
        // as early data is a race on loopback (the client's Finished may
        // arrive before the request is read); the lab test below checks that.
        let log = nginx.access_log_of(2);
        assert_eq!(log.lines().count(), 2, "{log}");
        assert!(log.lines().next().unwrap().contains(" reused=. "), "{log}");
        assert!(log.lines().nth(1).unwrap().contains(" reused=r "), "{log}");
    })
    .expect("private namespace");
}

/// The ladder through the library across the lab at 50 ms, with hyper:
/// plain TCP then TLS 3 round trips, the ClientHello in the SYN 2, and the
/// GET as early data with it 1 (the fewest of a few requests each), and
/// nginx logs those GETs as early data.
#[test]
fn the_tls_connector_takes_three_two_and_one_round_trips_across_the_lab() {
    if !root_or_skip("tls_connector_ladder") {
        return;
    }
    let lab = fastopen_lab::Lab::start(fastopen_lab::LabConfig {
        path: fastopen_lab::PathConfig::with_rtt(Duration::from_millis(50)),
        ..Default::default()
    })
    .unwrap();
    let server = lab.server_ip(false);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), server.to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("fastopen-ladder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (crt, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    let extra = format!(
        "ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.3;\n    ssl_early_data on;",
        crt.display(),
        key.display()
    );
    let listen = [format!("{server}:8443 ssl fastopen=256")];
    let nginx =
        lab.server().run(|| fastopen_lab::testing::Nginx::start("tls_ladder", &listen, &extra, "hi\n")).unwrap();
    let Some(nginx) = nginx else { return };
    let url: hyper::Uri = format!("https://{server}:8443/").parse().unwrap();
    let fewest_round_trips = |connector: fastopen::tls::TlsConnector| -> f64 {
        let url = url.clone();
        lab.client()
            .run(move || {
                runtime().block_on(async move {
                    use http_body_util::{BodyExt, Empty};
                    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                        .pool_max_idle_per_host(0)
                        .build::<_, Empty<bytes::Bytes>>(connector);
                    // Not timed: the cookie and the session tickets.
                    client.get(url.clone()).await.unwrap().into_body().collect().await.unwrap();
                    let mut times = Vec::new();
                    for _ in 0..5 {
                        let start = std::time::Instant::now();
                        let response = client.get(url.clone()).await.unwrap();
                        times.push(start.elapsed().as_secs_f64() * 1000.0 / 50.0);
                        response.into_body().collect().await.unwrap();
                    }
                    // The fewest: a busy machine only adds delay, a round trip more adds a whole one.
                    times.into_iter().fold(f64::INFINITY, f64::min)
                })
            })
            .unwrap()
    };
    let plain = fastopen::hyper::Connector::new().tfo(false);
    let plain = fewest_round_trips(fastopen::tls::TlsConnector::new(tls_client(&cert, false)).tcp(plain));
    let tfo = fewest_round_trips(fastopen::tls::TlsConnector::new(tls_client(&cert, false)));
    let early = fewest_round_trips(fastopen::tls::TlsConnector::new(tls_client(&cert, true)).early_data(true));
    eprintln!(
        "round trips to the response head, fewest of 5: plain {plain:.2}, TFO {tfo:.2}, TFO + early data {early:.2}"
    );
    assert!((plain - 3.0).abs() < 0.5, "plain TCP then TLS: {plain}");
    assert!((tfo - 2.0).abs() < 0.5, "the ClientHello in the SYN: {tfo}");
    assert!((early - 1.0).abs() < 0.5, "the GET as early data in the SYN: {early}");
    // nginx's word: across 50 ms it reads each resumed GET a round trip
    // before the client's Finished can arrive, so every resumed request of
    // the last six is logged as early data, and none before them. Not all
    // six resume: a client that closes on its response leaves before the
    // fresh ticket (sent after its Finished) arrives, so the two tickets of
    // a full handshake last two connections (full, r, r, full, r, r).
    let log = nginx.access_log_of(18);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 18, "{log}");
    assert!(lines[..12].iter().all(|line| line.ends_with("ssl_early_data=-")), "{log}");
    let resumed: Vec<&&str> = lines[12..].iter().filter(|line| line.contains(" reused=r ")).collect();
    assert!(resumed.len() >= 3, "{log}");
    assert!(resumed.iter().all(|line| line.ends_with("ssl_early_data=1")), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
