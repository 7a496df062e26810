//! TLS for `tfo serve --tls-cert`: rustls on each accepted TFO connection
//! (TLS 1.3 and 1.2; with TFO the ClientHello comes in the SYN), TLS 1.3
//! early data (0-RTT) accepted, and the same early-data policy as for data in
//! the SYN, since both can be replays: a request that came as early data
//! while the handshake is not over yet is held (`wait`), refused with 425
//! (`reject`) or run at once (`allow`); GET, HEAD and OPTIONS always run at
//! once. What is ours: driving rustls on the tokio stream so early data can
//! be read, judged and answered before the handshake ends (the answer then
//! leaves with the server's first flight: one round trip), and the log.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fastopen_wire::http::{examine_request, HeadScan, HttpRequest};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, ServerConnection, ServerSessionMemoryCache};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

pub use crate::connection::TlsLog;
use crate::connection::{
    echo_response, http_response, is_safe_method, refusal, write_counted, ConnectionLog, EarlyData, Ending, Limits,
};

/// The largest certificate or key file read.
const PEM_FILE_LIMIT: u64 = 1 << 20;
/// Early data a client may send on a resumed session (nginx's default too).
pub const MAX_EARLY_DATA: u32 = 16 * 1024;
/// Sessions the server remembers for resumption (shared by the workers).
const SESSIONS_KEPT: usize = 4096;

/// Why a TLS configuration could not be made. The messages name the file
/// and say what it must hold; a key's bytes are never part of one.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the {what} file {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: io::Error },
    #[error("{} holds no certificate (it must be PEM: -----BEGIN CERTIFICATE-----)", .0.display())]
    NoCertificate(PathBuf),
    #[error("{} holds no private key (it must be PEM: -----BEGIN PRIVATE KEY-----, RSA or EC PRIVATE KEY)", .0.display())]
    NoKey(PathBuf),
    #[error("the key in {} does not go with the certificate in {}: {source}", key.display(), cert.display())]
    Mismatch { key: PathBuf, cert: PathBuf, source: rustls::Error },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("making a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// The server's TLS configuration from PEM files: the certificate chain
/// (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1). ALPN
/// `http/1.1` with `http`. Errors say which file and what is wrong.
pub fn server_config(cert: &Path, key: &Path, http: bool) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let read = |what, path: &Path| {
        fastopen::keyfile::read_bounded(path, PEM_FILE_LIMIT).map_err(|source| TlsSetupError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let pem = read("certificate", cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().unwrap_or_default();
    if chain.is_empty() {
        return Err(TlsSetupError::NoCertificate(cert.to_path_buf()));
    }
    // The key is a secret: its bytes are never part of a message.
    let pem = read("key", key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsSetupError::NoKey(key.to_path_buf()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|source| TlsSetupError::Mismatch { key: key.to_path_buf(), cert: cert.to_path_buf(), source })?;
    tune(&mut config, http);
    Ok(Arc::new(config))
}

/// A server configuration with a self-signed certificate made now, for the
/// lab's own servers (`tfo bench --tls`): nothing to trust, nothing kept.
pub fn throwaway_config() -> Result<Arc<ServerConfig>, TlsSetupError> {
    let cert = rcgen::generate_simple_self_signed(vec!["lab".to_string()])?;
    let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
    tune(&mut config, true);
    Ok(Arc::new(config))
}

/// Sessions kept, early data, half-RTT answers, ALPN.
fn tune(config: &mut ServerConfig, http: bool) {
    // Early data needs sessions kept on the server (rustls accepts it only
    // then): each ticket is used once, so a replayed ClientHello gets no 0-RTT.
    config.session_storage = ServerSessionMemoryCache::new(SESSIONS_KEPT);
    config.max_early_data_size = MAX_EARLY_DATA;
    // An answer written before the handshake ends leaves with our Finished.
    config.send_half_rtt_data = true;
    if http {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
}

/// rustls on a tokio stream, with the log's byte counts.
struct Tls<'a> {
    tcp: &'a mut TcpStream,
    conn: ServerConnection,
    idle: Duration,
}

impl Tls<'_> {
    /// Sends what rustls has to send.
    async fn flush(&mut self, log: &mut ConnectionLog) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut out = Vec::new();
            self.conn.write_tls(&mut out)?;
            write_counted(self.tcp, &out, &mut log.bytes_out, self.idle).await?;
        }
        Ok(())
    }

    /// Reads what comes within `wait` into rustls, answers what it asks
    /// (handshake messages, alerts). `Ok(false)`: the client closed.
    async fn read_more(&mut self, log: &mut ConnectionLog, wait: Duration) -> io::Result<bool> {
        let mut buf = [0u8; 16 * 1024];
        let n = tokio::time::timeout(wait, self.tcp.read(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "nothing came in time"))??;
        if n == 0 {
            return Ok(false);
        }
        log.bytes_in += n as u64;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            self.conn.read_tls(&mut rest)?;
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.flush(log).await; // the alert that says why
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
            }
        }
        self.flush(log).await?;
        Ok(true)
    }

    /// Moves the plaintext received so far (early data first) into `into`.
    /// Returns the early data bytes taken, and whether the client closed
    /// its side (close_notify).
    fn take_plaintext(&mut self, into: &mut Vec<u8>, limit: usize) -> io::Result<(u64, bool)> {
        let mut chunk = [0u8; 16 * 1024];
        let mut early = 0u64;
        if let Some(mut data) = self.conn.early_data() {
            loop {
                match data.read(&mut chunk) {
                    Ok(0) | Err(_) => break, // Err: none left (rustls says WouldBlock or BrokenPipe)
                    Ok(n) => {
                        early += n as u64;
                        into.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        }
        loop {
            if into.len() > limit {
                return Ok((early, false));
            }
            match self.conn.reader().read(&mut chunk) {
                Ok(0) => return Ok((early, true)),
                Ok(n) => into.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((early, false)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Drives the handshake to its end, within `wait`.
    async fn complete_handshake(&mut self, log: &mut ConnectionLog, wait: Duration) -> io::Result<()> {
        let deadline = tokio::time::Instant::now() + wait;
        while self.conn.is_handshaking() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.read_more(log, left).await? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake did not complete"));
            }
        }
        Ok(())
    }

    /// Writes plaintext and sends it.
    async fn send(&mut self, log: &mut ConnectionLog, data: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(data)?;
        self.flush(log).await
    }

    /// The end: the handshake finished if it can be (so the client's
    /// Finished is read and its session tickets leave), close_notify.
    async fn close(&mut self, log: &mut ConnectionLog) -> io::Result<()> {
        if self.conn.is_handshaking() {
            self.complete_handshake(log, self.idle).await?;
        }
        self.conn.send_close_notify();
        self.flush(log).await
    }

    fn record(&self, tls: &mut TlsLog) {
        tls.version = self.conn.protocol_version().map(version_name);
        tls.resumed = self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    }
}

/// `TLSv1.3`, `TLSv1.2` or `other`, as logs and reports name a TLS version.
pub fn version_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "other",
    }
}

/// Serves one connection over TLS: HTTP (one request) or raw echo.
pub async fn serve_tls(
    stream: &mut TcpStream,
    config: Arc<ServerConfig>,
    http: bool,
    log: &mut ConnectionLog,
    limits: Limits,
) -> io::Result<Ending> {
    // A flight is several records written at once; the answer to early data
    // follows the first flight at once: Nagle must not hold it for an ACK.
    stream.set_nodelay(true)?;
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = Tls { tcp: stream, conn, idle: limits.idle };
    let mut tls_log = TlsLog { early_data_policy: "none", ..TlsLog::default() };
    let result = if http {
        tls_http(&mut tls, log, &mut tls_log, limits).await
    } else {
        tls_echo(&mut tls, log, &mut tls_log, limits).await
    };
    tls.record(&mut tls_log);
    log.tls = Some(tls_log);
    result
}

/// How the early-data policy met a request (or raw data) that came as early
/// data before the handshake ended.
async fn apply_policy(
    tls: &mut Tls<'_>,
    log: &mut ConnectionLog,
    tls_log: &mut TlsLog,
    limits: Limits,
    safe: bool,
) -> io::Result<bool> {
    if safe || limits.early_data == EarlyData::Allow {
        tls_log.early_data_policy = "handled_early";
        return Ok(true);
    }
    match limits.early_data {
        EarlyData::Reject => {
            tls_log.early_data_policy = "too_early";
            log.error = Some("early data refused (--early-data reject): TLS 0-RTT, the handshake not over".into());
            Ok(false)
        }
        _ => match tls.complete_handshake(log, limits.confirm_timeout).await {
            Ok(()) => {
                tls_log.early_data_policy = "held_until_handshake";
                Ok(true)
            }
            Err(e) => {
                tls_log.early_data_policy = "not_handled";
                Err(e)
            }
        },
    }
}

async fn tls_http(
    tls: &mut Tls<'_>,
    log: &mut ConnectionLog,
    tls_log: &mut TlsLog,
    limits: Limits,
) -> io::Result<Ending> {
    let mut buf = Vec::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + limits.request;
    let mut continued = false;
    let mut scan = HeadScan::default();
    let limit = limits.max_body.saturating_add(64 * 1024);
    let response = loop {
        let (early, closed) = tls.take_plaintext(&mut buf, limit)?;
        tls_log.early_data_bytes += early;
        let state = if scan.ready(&buf) {
            examine_request(&buf, limits.max_body)
        } else {
            HttpRequest::Partial { expects_continue: false }
        };
        match state {
            HttpRequest::Complete { len, head } => {
                if tls_log.early_data_bytes > 0 && tls.conn.is_handshaking() {
                    let safe = is_safe_method(&buf);
                    if !apply_policy(tls, log, tls_log, limits, safe).await? {
                        break http_response(
                            425,
                            "Too Early",
                            b"sent as TLS early data before the handshake was over; retry\n",
                        );
                    }
                }
                log.handled = true;
                break echo_response(&buf[..len], head);
            }
            HttpRequest::Reject(status, reason) => break refusal(status, reason),
            HttpRequest::Partial { expects_continue } => {
                if expects_continue && !continued && !tls.conn.is_handshaking() {
                    tls.send(log, b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                    continued = true;
                }
            }
        }
        if closed {
            if buf.is_empty() {
                tls.close(log).await?;
                return Ok(Ending::Close);
            }
            break http_response(400, "Bad Request", b"incomplete request\n");
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break http_response(408, "Request Timeout", b"the request did not arrive in time\n");
        }
        let wait = limits.idle.min(deadline - now);
        match tls.read_more(log, wait).await {
            Ok(true) => {}
            Ok(false) if buf.is_empty() => return Ok(Ending::Close), // connected and left
            Ok(false) => break http_response(400, "Bad Request", b"incomplete request\n"),
            Err(e) if e.kind() == io::ErrorKind::TimedOut && tokio::time::Instant::now() >= deadline => {
                break http_response(408, "Request Timeout", b"the request did not arrive in time\n");
            }
            Err(e) => return Err(e),
        }
    };
    log.http_status = fastopen_wire::http::status_code(&response);
    tls.send(log, &response).await?;
    // The answer is out: a client that leaves now (without its Finished or
    // our close_notify: it has what it came for) is no error.
    let _ = tls.close(log).await;
    Ok(Ending::Close)
}

async fn tls_echo(
    tls: &mut Tls<'_>,
    log: &mut ConnectionLog,
    tls_log: &mut TlsLog,
    limits: Limits,
) -> io::Result<Ending> {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (early, closed) = tls.take_plaintext(&mut buf, 64 * 1024)?;
        tls_log.early_data_bytes += early;
        if early > 0 && tls.conn.is_handshaking() && !apply_policy(tls, log, tls_log, limits, false).await? {
            // Raw echo has no "425": the client is told by a reset.
            let _ = tls.tcp.set_zero_linger();
            return Ok(Ending::Reset);
        }
        if !buf.is_empty() {
            tls.send(log, &buf).await?;
            buf.clear();
            log.handled = true;
        }
        if closed || !tls.read_more(log, limits.idle).await? {
            tls.close(log).await?;
            return Ok(Ending::Close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (crt, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&crt, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        (crt, key)
    }

    #[test]
    fn certificate_and_key_files_are_checked_with_messages_that_say_which() {
        let dir = std::env::temp_dir().join(format!("tfo-tls-serve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (crt, key) = files(&dir);
        let config = server_config(&crt, &key, true).unwrap();
        assert_eq!(config.max_early_data_size, MAX_EARLY_DATA);
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not pem\n").unwrap();
        let err = format!("{:#}", server_config(&junk, &key, false).unwrap_err());
        assert!(err.contains("holds no certificate") && err.contains("junk.pem"), "{err}");
        let err = format!("{:#}", server_config(&crt, &junk, false).unwrap_err());
        assert!(err.contains("holds no private key"), "{err}");
        let err = format!("{:#}", server_config(&crt, &crt, false).unwrap_err());
        assert!(err.contains("no private key"), "a certificate given as the key: {err}");
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        let (_, other_key) = files(&other);
        let err = format!("{:#}", server_config(&crt, &other_key, false).unwrap_err());
        assert!(err.contains("does not go with the certificate"), "{err}");
        let err = format!("{:#}", server_config(&dir.join("absent.pem"), &key, false).unwrap_err());
        assert!(err.contains("cannot read the certificate file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
