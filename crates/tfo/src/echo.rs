//! The echo server behind `tfo serve` (and the demo): raw echo, or HTTP/1.1
//! that answers each request with the request itself. One [`ConnectionLog`]
//! per connection says whether its data came in the SYN.

use std::future::Future;
use std::net::SocketAddr;

use fastopen::AcceptOutcome;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

/// What the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Echo every byte until the client closes its side.
    Raw,
    /// One HTTP/1.1 request per connection; 200 with the request as body, then close.
    Http,
}

/// One served connection.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConnectionLog {
    pub(crate) event: &'static str,
    pub(crate) peer: SocketAddr,
    #[serde(flatten)]
    pub(crate) outcome: AcceptOutcome,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// How long a stopping server waits for connections in progress.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Largest HTTP request head we read before answering 431.
const MAX_HEAD: usize = 64 * 1024;
/// Largest HTTP body we echo before answering 413.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Accepts connections until `shutdown` completes or `count` connections were
/// served, handling each on its own task; calls `on_connection` with one log
/// per connection. Connections in progress get 5 s to finish before returning.
pub(crate) async fn serve(
    listener: std::sync::Arc<fastopen::tokio::Listener>,
    protocol: Protocol,
    count: Option<u64>,
    shutdown: impl Future<Output = ()>,
    on_connection: impl Fn(ConnectionLog) + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let on_connection = std::sync::Arc::new(on_connection);
    let mut tasks = JoinSet::new();
    let mut accepted = 0u64;
    tokio::pin!(shutdown);
    while count.is_none_or(|n| accepted < n) {
        tokio::select! {
            _ = &mut shutdown => break,
            res = listener.accept() => {
                let (stream, peer, outcome) = match res {
                    Ok(conn) => conn,
                    Err(e) => {
                        // A connection that died before accept() finished: log and go on.
                        eprintln!("tfo serve: accept failed: {e}");
                        continue;
                    }
                };
                accepted += 1;
                let on_connection = on_connection.clone();
                tasks.spawn(async move {
                    on_connection(handle(stream, peer, outcome, protocol).await);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Let connections in progress finish, for a while.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        eprintln!(
            "tfo serve: {} connection(s) still open after {} s; closing them",
            tasks.len(),
            DRAIN_TIMEOUT.as_secs()
        );
        tasks.abort_all();
    }
    Ok(())
}

async fn handle(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    outcome: AcceptOutcome,
    protocol: Protocol,
) -> ConnectionLog {
    let mut log =
        ConnectionLog { event: "connection", peer, outcome, bytes_in: 0, bytes_out: 0, http_status: None, error: None };
    let result = match protocol {
        Protocol::Raw => echo_raw(&mut stream, &mut log).await,
        Protocol::Http => echo_http(&mut stream, &mut log).await,
    };
    if let Err(e) = result {
        log.error = Some(e.to_string());
    }
    log
}

async fn echo_raw(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), log: &mut ConnectionLog) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        log.bytes_in += n as u64;
        stream.write_all(&buf[..n]).await?;
        log.bytes_out += n as u64;
    }
}

/// How far a buffered HTTP request has come.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HttpRequest {
    /// Need more bytes.
    Partial,
    /// Head and body complete: the whole request is `len` bytes long.
    Complete { len: usize },
    /// Not HTTP, or not acceptable: answer with this status and reason.
    Reject(u16, &'static str),
}

/// Looks at the bytes received so far (pure, for tests).
pub(crate) fn examine_request(buf: &[u8]) -> HttpRequest {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            HttpRequest::Reject(431, "Request Header Fields Too Large")
        }
        Ok(httparse::Status::Partial) => HttpRequest::Partial,
        Err(httparse::Error::TooManyHeaders) => HttpRequest::Reject(431, "Request Header Fields Too Large"),
        Err(_) => HttpRequest::Reject(400, "Bad Request"),
        Ok(httparse::Status::Complete(head_len)) => {
            let mut body_len = 0usize;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return HttpRequest::Reject(411, "Length Required");
                }
                if h.name.eq_ignore_ascii_case("content-length") {
                    match std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok()) {
                        Some(n) if n <= MAX_BODY => body_len = n,
                        Some(_) => return HttpRequest::Reject(413, "Content Too Large"),
                        None => return HttpRequest::Reject(400, "Bad Request"),
                    }
                }
            }
            let len = head_len + body_len;
            if buf.len() >= len {
                HttpRequest::Complete { len }
            } else {
                HttpRequest::Partial
            }
        }
    }
}

/// The response: 200 with `body`, or an error status with its reason.
pub(crate) fn http_response(status: u16, reason: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nServer: tfo\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

async fn echo_http(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), log: &mut ConnectionLog) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    let response = loop {
        match examine_request(&buf) {
            HttpRequest::Complete { len } => break http_response(200, "OK", &buf[..len]),
            HttpRequest::Reject(status, reason) => {
                break http_response(status, reason, format!("{reason}\n").as_bytes())
            }
            HttpRequest::Partial => {}
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(()); // connected and left without a word
            }
            break http_response(400, "Bad Request", b"incomplete request\n");
        }
        log.bytes_in += n as u64;
        buf.extend_from_slice(&chunk[..n]);
    };
    log.http_status = std::str::from_utf8(&response[9..12]).ok().and_then(|s| s.parse().ok());
    stream.write_all(&response).await?;
    log.bytes_out = response.len() as u64;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(examine_request(get), HttpRequest::Complete { len: get.len() });
        assert_eq!(examine_request(&get[..10]), HttpRequest::Partial);
        let post = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel";
        assert_eq!(examine_request(post), HttpRequest::Partial);
        let post = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(examine_request(post), HttpRequest::Complete { len: post.len() });
        assert!(matches!(examine_request(b"\x16\x03\x01garbage\r\n\r\n"), HttpRequest::Reject(400, _)));
        assert!(matches!(
            examine_request(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            HttpRequest::Reject(400, _)
        ));
        assert!(matches!(
            examine_request(b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"),
            HttpRequest::Reject(413, _)
        ));
        assert!(matches!(
            examine_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpRequest::Reject(411, _)
        ));
        let huge = [b'a'; MAX_HEAD];
        assert!(matches!(examine_request(&huge), HttpRequest::Reject(400 | 431, _)));
    }

    #[test]
    fn response_is_valid_http() {
        let r = http_response(200, "OK", b"abc");
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(&r).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial"),
        };
        assert_eq!(resp.code, Some(200));
        assert_eq!(&r[head..], b"abc");
    }
}
