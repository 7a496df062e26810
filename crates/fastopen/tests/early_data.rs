//! The early-data rule on real HTTP servers, over a lab path of 20 ms (so a
//! request in the SYN is read before the client's final ACK arrives): axum
//! with the `early_data` middleware, and a plain hyper server with the tower
//! layer. Per policy, a POST in the SYN waits, gets 425 unrun, or runs marked
//! `Early-Data: 1`; a GET, and a PUT marked idempotent, always run at once.
//! Root only (the lab's namespaces).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use fastopen::{EarlyData, EarlyDataPolicy, Handshake, ListenerBuilder, TfoConnectInfo};
use fastopen_lab::{Lab, LabConfig, PathConfig};

#[derive(Debug, Clone, Copy)]
enum Server {
    Axum,
    Hyper,
}

fn rule(policy: EarlyDataPolicy) -> EarlyData {
    EarlyData::new(policy).idempotent(http::Method::PUT)
}

fn early_marker(headers: &http::HeaderMap) -> String {
    format!("early={}", headers.get("early-data").map_or("none", |v| v.to_str().unwrap_or("?")))
}

/// Starts `server` with `policy` on `addr` in the lab's server namespace;
/// `runs` counts the requests that reached the handler.
fn start(lab: &Lab, server: Server, policy: EarlyDataPolicy, addr: SocketAddr, runs: Arc<AtomicUsize>) {
    let (ready_tx, ready_rx) = mpsc::channel();
    lab.server()
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = ListenerBuilder::new(addr).bind_tokio().unwrap();
                ready_tx.send(()).unwrap();
                match server {
                    Server::Axum => {
                        let handler = move |headers: http::HeaderMap| async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            early_marker(&headers)
                        };
                        let app = axum::Router::new()
                            .route("/", axum::routing::get(handler.clone()).post(handler.clone()).put(handler))
                            .layer(axum::middleware::from_fn_with_state(rule(policy), fastopen::early_data));
                        let app = app.into_make_service_with_connect_info::<TfoConnectInfo>();
                        axum::serve(listener, app).await.unwrap();
                    }
                    Server::Hyper => loop {
                        use tower::ServiceBuilder;
                        let (stream, _, _) = listener.accept().await.unwrap();
                        let runs = runs.clone();
                        let service = ServiceBuilder::new()
                            .layer(rule(policy).layer(Handshake::of(&stream).unwrap()))
                            .service_fn(move |request: http::Request<hyper::body::Incoming>| {
                                runs.fetch_add(1, Ordering::SeqCst);
                                let body = early_marker(request.headers());
                                async move {
                                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                                        bytes::Bytes::from(body),
                                    )))
                                }
                            });
                        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                            hyper_util::rt::TokioIo::new(stream),
                            hyper_util::service::TowerToHyperService::new(service),
                        ));
                    },
                }
            });
        })
        .unwrap();
    ready_rx.recv().unwrap();
}

/// One request over a fresh TFO connection: the status line, the last body
/// line, and whether the request rode in the SYN.
fn request(lab: &Lab, addr: SocketAddr, method: &str) -> (String, String, bool) {
    let text = format!("{method} / HTTP/1.1\r\nHost: lab\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    lab.client()
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = fastopen::TfoStream::connect(addr).await.unwrap();
                s.write_all(text.as_bytes()).await.unwrap();
                let mut reply = Vec::new();
                tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await.unwrap().unwrap();
                let in_syn = s.outcome().map(|o| o.tfo_used()).unwrap_or(false);
                let reply = String::from_utf8_lossy(&reply).into_owned();
                let status = reply.lines().next().unwrap_or_default().to_string();
                let last = reply.lines().last().unwrap_or_default().to_string();
                (status, last, in_syn)
            })
        })
        .unwrap()
}

#[test]
fn early_data_policies_per_request_on_axum_and_plain_hyper() {
    if !fastopen_lab::testing::root_or_skip("early_data_policies") {
        return;
    }
    let path = PathConfig::with_rtt(Duration::from_millis(20));
    let lab = Lab::start(LabConfig { path, ..LabConfig::default() }).expect("lab starts");
    let policies = [EarlyDataPolicy::Wait, EarlyDataPolicy::Reject, EarlyDataPolicy::Allow];
    let mut port = 8200;
    for server in [Server::Axum, Server::Hyper] {
        for policy in policies {
            port += 1;
            let addr = SocketAddr::new(lab.server_ip(false), port);
            let runs = Arc::new(AtomicUsize::new(0));
            start(&lab, server, policy, addr, runs.clone());
            let what = format!("{server:?} {policy}");
            let (status, _, _) = request(&lab, addr, "GET"); // the cookie, for the next requests
            assert_eq!(status, "HTTP/1.1 200 OK", "{what}");
            let (status, body, in_syn) = request(&lab, addr, "POST");
            assert!(in_syn, "{what}: the POST rode in the SYN");
            match policy {
                // Held until the ACK, then run as confirmed: no marker.
                EarlyDataPolicy::Wait => assert_eq!((&*status, &*body), ("HTTP/1.1 200 OK", "early=none"), "{what}"),
                EarlyDataPolicy::Reject => assert!(status.starts_with("HTTP/1.1 425"), "{what}: {status}"),
                EarlyDataPolicy::Allow => assert_eq!((&*status, &*body), ("HTTP/1.1 200 OK", "early=1"), "{what}"),
            }
            for safe in ["GET", "PUT"] {
                let (status, body, in_syn) = request(&lab, addr, safe);
                assert!(in_syn, "{what}: {safe} in the SYN");
                assert_eq!((&*status, &*body), ("HTTP/1.1 200 OK", "early=1"), "{what}: {safe} runs at once");
            }
            let rejected = usize::from(policy == EarlyDataPolicy::Reject);
            assert_eq!(
                runs.load(Ordering::SeqCst),
                4 - rejected,
                "{what}: the handler ran for every request it answered"
            );
        }
    }
}
