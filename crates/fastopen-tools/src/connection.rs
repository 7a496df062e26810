//! What the server engines share: one connection's log ([`ConnectionLog`],
//! with its TLS part [`TlsLog`]), the limits and early-data policy a
//! connection is served under, how it ends, and the writes and HTTP answers
//! both the plain and the TLS paths use. No I/O of its own beyond writing to
//! the stream it is given.

use std::net::SocketAddr;
use std::time::Duration;

use fastopen::AcceptOutcome;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// One served connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionLog {
    pub event: &'static str,
    pub peer: SocketAddr,
    #[serde(flatten)]
    pub outcome: AcceptOutcome,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The data came in the SYN (the same as `data_in_syn`).
    pub in_syn: bool,
    /// The client's final ACK arrived (`false`: reset first, a replayed SYN;
    /// `null`: still unknown when the connection ended).
    pub confirmed: Option<bool>,
    /// The data reached the application: echoed, or the HTTP request run.
    pub handled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// `--banner`: the greeting left while the handshake was still in
    /// SYN_RECV (before the client's ACK: a cookie SYN made the connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub greeting_in_syn_recv: Option<bool>,
    /// `--tls-cert`: what TLS did (version, resumed, early data and the policy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsLog>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The longest a connection lives by default, however busy.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// Connections served at once by default, per worker.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// What to do with data that came in the SYN before the handshake is
/// confirmed (it may be a replay: RFC 8470's early data, for TFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EarlyData {
    /// Hold unsafe requests until the client's final ACK confirms the
    /// handshake; a replay never is, and is dropped unhandled.
    Wait,
    /// Refuse unsafe requests that are not confirmed yet (HTTP: 425 Too Early;
    /// raw echo: the connection is closed unhandled).
    Reject,
    /// Handle everything at once (unsafe: a replayed SYN is handled twice).
    Allow,
}

/// What one connection may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Close a connection when nothing moves either way for this long.
    pub idle: Duration,
    /// HTTP: the whole request (head and body) must arrive within this.
    pub request: Duration,
    /// HTTP: the largest body echoed; bigger gets 413.
    pub max_body: usize,
    /// Unsafe data before confirmation: wait, reject or allow.
    pub early_data: EarlyData,
    /// `wait`: the longest wait for the client's final ACK.
    pub confirm_timeout: Duration,
    /// The longest any connection lives, however busy (raw echo sessions).
    pub lifetime: Duration,
    /// Connections served at once (per worker); more wait in the listen queue.
    pub max_connections: usize,
    /// Raw mode: a greeting written at accept, before anything is read (a
    /// server that speaks first, as SMTP, FTP and SSH do).
    pub banner: Option<&'static [u8]>,
}

impl Default for Limits {
    /// The lab's servers (bench, demo) measure TFO's gain: early data allowed.
    fn default() -> Self {
        Limits {
            idle: Duration::from_secs(60),
            request: Duration::from_secs(30),
            max_body: 1 << 20,
            early_data: EarlyData::Allow,
            confirm_timeout: Duration::from_secs(10),
            lifetime: DEFAULT_LIFETIME,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            banner: None,
        }
    }
}

impl From<EarlyData> for fastopen::EarlyDataPolicy {
    fn from(policy: EarlyData) -> Self {
        match policy {
            EarlyData::Wait => fastopen::EarlyDataPolicy::Wait,
            EarlyData::Reject => fastopen::EarlyDataPolicy::Reject,
            EarlyData::Allow => fastopen::EarlyDataPolicy::Allow,
        }
    }
}

/// What TLS did on one connection, for its log line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TlsLog {
    pub version: Option<&'static str>,
    /// The client resumed a session (a ticket from an earlier connection).
    pub resumed: bool,
    /// Application data that came as TLS 1.3 early data (0-RTT).
    pub early_data_bytes: u64,
    /// What the early-data policy did with it: `none` (no early data, or it
    /// came when the handshake was already over), `handled_early` (run
    /// before the handshake ended: `allow`, or a safe method),
    /// `held_until_handshake` (`wait`), `too_early` (`reject`: 425, or a
    /// reset in raw mode), `not_handled` (the handshake never ended).
    pub early_data_policy: &'static str,
}

pub(crate) fn timed_out(what: &str, after: Duration) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} for {} s; closed", after.as_secs_f64()))
}

/// Writes all of `data`, counting what the kernel took in `written` (so a
/// reset mid-reply still shows how far it got), each write within `idle`.
pub async fn write_counted(
    stream: &mut (impl AsyncWrite + Unpin),
    data: &[u8],
    written: &mut u64,
    idle: Duration,
) -> std::io::Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        let n = tokio::time::timeout(idle, stream.write(rest))
            .await
            .map_err(|_| timed_out("the client read nothing", idle))??;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        *written += n as u64;
        rest = &rest[n..];
    }
    Ok(())
}

/// How a connection ends once its work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// FIN, after waiting for the handshake's last ACK (for the log).
    Close,
    /// A reset, at once: the client is told its data was refused.
    Reset,
}

/// Methods that are safe to run from early data (RFC 9110 §9.2.1).
pub fn is_safe_method(request: &[u8]) -> bool {
    ["GET ", "HEAD ", "OPTIONS "].iter().any(|m| request.starts_with(m.as_bytes()))
}

/// The echo server's answer to a whole request: 200 with the request as its
/// body, or for a HEAD request the head a GET would get, without the body.
pub fn echo_response(request: &[u8], head: bool) -> Vec<u8> {
    let mut response = http_response(200, "OK", request);
    if head {
        response.truncate(response.len() - request.len());
    }
    response
}

/// The answer to a request refused before it is run: `status`, its reason
/// as the body.
pub fn refusal(status: u16, reason: &str) -> Vec<u8> {
    http_response(status, reason, format!("{reason}\n").as_bytes())
}

/// The response: 200 with `body`, or an error status with its reason.
pub fn http_response(status: u16, reason: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nServer: tfo\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
