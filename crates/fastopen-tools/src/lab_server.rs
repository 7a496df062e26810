//! Running the echo server inside one of the lab's namespaces, and the HTTP
//! requests of a given size it answers: shared by `tfo bench` and `tfo
//! demo` (the client side is [`crate::exchange`]).

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use fastopen::ListenerBuilder;
use fastopen_lab::netns::{NamedNetnsError, Netns};
use fastopen_wire::http::request_head;
use tokio::sync::oneshot;

use crate::echo::{self, ConnectionLog, Notices, Protocol};

/// Why the server could not start in its namespace.
#[derive(Debug, thiserror::Error)]
pub enum LabServerError {
    #[error(transparent)]
    Netns(#[from] NamedNetnsError),
    #[error("starting the server in {ns}: {why}")]
    Start { ns: String, why: String },
    #[error("reading the TFO counters of {ns}")]
    Counters {
        ns: String,
        #[source]
        source: fastopen::Error,
    },
}

/// The `tfo serve` echo server on its own thread inside a namespace; it
/// stops when dropped.
#[derive(Debug)]
pub struct NsServer {
    pub addr: SocketAddr,
    /// Each connection's log, as it ends.
    pub logs: mpsc::Receiver<ConnectionLog>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NsServer {
    /// Starts serving on `addr` inside `ns`; the server's notices (a
    /// failing accept, ...) go to `notices`.
    pub fn start(
        ns: &Netns,
        addr: SocketAddr,
        protocol: Protocol,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: echo::Limits,
        notices: Notices,
    ) -> Result<NsServer, LabServerError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (log_tx, logs) = mpsc::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread = ns.spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("a runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match ListenerBuilder::new(addr).bind_tokio() {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(listener.local_addr().map_err(|e| e.to_string()));
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                let service = echo::Service { protocol, tls, limits, log_confirmation: true };
                echo::serve(
                    Arc::new(listener),
                    &service,
                    &echo::Budget::new(None),
                    shutdown,
                    move |log| {
                        let _ = log_tx.send(log);
                    },
                    notices,
                )
                .await;
            })
        })?;
        let start_failed = |why| LabServerError::Start { ns: ns.name().to_string(), why };
        let addr = ready_rx
            .recv()
            .map_err(|_| start_failed("the server thread ended before listening".into()))?
            .map_err(start_failed)?;
        Ok(NsServer { addr, logs, stop: Some(stop), thread: Some(thread) })
    }

    /// The next connection's log, waiting up to `timeout`.
    pub fn next_log(&mut self, timeout: Duration) -> Option<ConnectionLog> {
        self.logs.recv_timeout(timeout).ok()
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The TCPFastOpen* counters of a namespace.
pub fn ns_counters(ns: &Netns) -> Result<fastopen::FastOpenCounters, LabServerError> {
    ns.run(fastopen::FastOpenCounters::read)?
        .map_err(|source| LabServerError::Counters { ns: ns.name().to_string(), source })
}

/// An HTTP request of exactly `size` bytes (at least the minimal one): a GET
/// padded with a header, or a POST whose body fills the size.
pub fn http_request_with(method: HttpMethod, host: SocketAddr, size: usize) -> Vec<u8> {
    match method {
        HttpMethod::Get => http_request(host, size),
        HttpMethod::Post => {
            let host = host.to_string();
            let head =
                |len: usize| request_head("POST", "/", &host, "tfo-bench", &[("Content-Length", &len.to_string())]);
            // The head's length depends on the digits of the body's length.
            let mut body_len = size.saturating_sub(head(0).len());
            while head(body_len).len() + body_len > size && body_len > 0 {
                body_len -= 1;
            }
            let mut req = head(body_len).into_bytes();
            req.extend(std::iter::repeat_n(b'p', body_len));
            req
        }
    }
}

/// The method of the lab's sized HTTP requests (`tfo bench --http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// Safe: runs from early data at once.
    Get,
    /// Unsafe: subject to --early-data.
    Post,
}

/// An HTTP GET of exactly `size` bytes (at least the minimal request), padded with a header.
pub fn http_request(host: SocketAddr, size: usize) -> Vec<u8> {
    let host = host.to_string();
    let minimal = request_head("GET", "/", &host, "tfo-bench", &[]).len();
    // "X-Pad: " and its CRLF are 9 bytes.
    let pad = if size > minimal + 10 { "a".repeat(size - minimal - 9) } else { String::new() };
    let headers: &[(&str, &str)] = if pad.is_empty() { &[] } else { &[("X-Pad", &pad)] };
    request_head("GET", "/", &host, "tfo-bench", headers).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_have_the_asked_size_and_parse() {
        let host: SocketAddr = "198.18.0.2:8000".parse().unwrap();
        for size in [100, 999, 1000, 5000] {
            let r = http_request_with(HttpMethod::Post, host, size);
            assert_eq!(r.len(), size, "size {size}");
            assert_eq!(
                fastopen_wire::http::examine_request(&r, 1 << 20),
                fastopen_wire::http::HttpRequest::Complete { len: size, head: false }
            );
        }
    }

    #[test]
    fn requests_have_the_asked_size_and_parse() {
        let host: SocketAddr = "198.18.0.2:8000".parse().unwrap();
        for size in [64, 100, 1000, 5000] {
            let r = http_request(host, size);
            assert_eq!(r.len(), size, "size {size}");
            assert_eq!(
                fastopen_wire::http::examine_request(&r, 1 << 20),
                fastopen_wire::http::HttpRequest::Complete { len: size, head: false }
            );
        }
        assert!(http_request(host, 10).len() > 10, "never smaller than a valid request");
    }
}
