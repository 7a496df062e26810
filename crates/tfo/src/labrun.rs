//! Running the echo server and TFO requests inside the lab's namespaces:
//! shared by `tfo bench`, `tfo demo` and `tfo lab`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use fastopen::{ClientOutcome, Connector, ListenerBuilder};
use fastopen_lab::netns::Netns;
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::echo::{self, ConnectionLog, Protocol};

/// The `tfo serve` echo server on its own thread inside a namespace.
pub(crate) struct NsServer {
    pub(crate) addr: SocketAddr,
    pub(crate) logs: mpsc::Receiver<ConnectionLog>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl NsServer {
    /// Starts serving on `addr` inside `ns`.
    pub(crate) fn start(ns: &Netns, addr: SocketAddr, protocol: Protocol) -> anyhow::Result<NsServer> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (log_tx, logs) = mpsc::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread = ns.spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let listener = match ListenerBuilder::new(addr).bind_tokio() {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Ok(());
                    }
                };
                let _ = ready_tx.send(listener.local_addr().map_err(|e| e.to_string()));
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                echo::serve(Arc::new(listener), protocol, None, shutdown, move |log| {
                    let _ = log_tx.send(log);
                })
                .await
            })
        })?;
        let addr = ready_rx
            .recv()
            .context("the server thread ended before listening")?
            .map_err(|e| anyhow::anyhow!("starting the server in {}: {e}", ns.name()))?;
        Ok(NsServer { addr, logs, stop: Some(stop), thread: Some(thread) })
    }

    /// The next connection's log, waiting up to `timeout`.
    pub(crate) fn next_log(&mut self, timeout: Duration) -> Option<ConnectionLog> {
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

/// What a complete reply looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Raw echo: this many bytes.
    Echo(usize),
    /// An HTTP/1.1 response with a Content-Length.
    Http,
}

/// Is `buf` a complete reply?
pub(crate) fn reply_complete(buf: &[u8], expect: Expect) -> bool {
    match expect {
        Expect::Echo(n) => buf.len() >= n,
        Expect::Http => {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(buf) {
                Ok(httparse::Status::Complete(head)) => {
                    let len = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    buf.len() >= head + len
                }
                _ => false,
            }
        }
    }
}

/// One request: connect (with the request in the SYN if the connector does
/// TFO), read until the reply is complete. Returns the outcome and the time to
/// the full reply. Must run on a thread inside the client namespace.
pub(crate) fn request_once(
    connector: &Connector,
    addr: SocketAddr,
    request: &[u8],
    expect: Expect,
    timeout: Duration,
) -> anyhow::Result<(ClientOutcome, Duration, Vec<u8>)> {
    let start = Instant::now();
    let (mut stream, outcome) = connector.connect(addr, request)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut reply = Vec::with_capacity(request.len() + 256);
    let mut chunk = [0u8; 16 * 1024];
    while !reply_complete(&reply, expect) {
        let n = stream.read(&mut chunk).with_context(|| format!("reading the reply from {addr}"))?;
        if n == 0 {
            anyhow::bail!("{addr} closed the connection after {} bytes of reply", reply.len());
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    let elapsed = start.elapsed();
    let _ = stream.flush();
    Ok((outcome, elapsed, reply))
}

/// An HTTP GET of exactly `size` bytes (at least the minimal request), padded with a header.
pub(crate) fn http_request(host: SocketAddr, size: usize) -> Vec<u8> {
    let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tfo-bench\r\n");
    let minimal = head.len() + 2;
    let mut req = head.into_bytes();
    if size > minimal + 10 {
        req.extend_from_slice(b"X-Pad: ");
        req.extend(std::iter::repeat_n(b'a', size - minimal - 9));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_asked_size_and_parse() {
        let host: SocketAddr = "198.18.0.2:8000".parse().unwrap();
        for size in [64, 100, 1000, 5000] {
            let r = http_request(host, size);
            assert_eq!(r.len(), size, "size {size}");
            assert_eq!(crate::echo::examine_request(&r), crate::echo::HttpRequest::Complete { len: size });
        }
        assert!(http_request(host, 10).len() > 10, "never smaller than a valid request");
    }

    #[test]
    fn reply_completion() {
        assert!(reply_complete(b"abc", Expect::Echo(3)) && !reply_complete(b"ab", Expect::Echo(3)));
        let resp = crate::echo::http_response(200, "OK", b"hello");
        assert!(reply_complete(&resp, Expect::Http));
        assert!(!reply_complete(&resp[..resp.len() - 1], Expect::Http));
    }
}
