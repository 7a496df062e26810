//! axum (feature `axum`): `axum::serve(listener, app)` on a [`TokioListener`],
//! and each connection's [`AcceptOutcome`] in `ConnectInfo<TfoConnectInfo>`.
//!
//! ```no_run
//! use axum::{extract::ConnectInfo, routing::get, Router};
//! use fastopen::{ListenerBuilder, TfoConnectInfo};
//!
//! async fn hello(ConnectInfo(info): ConnectInfo<TfoConnectInfo>) -> String {
//!     format!("hello {}: {}\n", info.peer, info.outcome) // "data in SYN: 78 bytes"
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = ListenerBuilder::new("127.0.0.1:8080".parse()?).bind_tokio()?;
//! let app = Router::new().route("/", get(hello));
//! axum::serve(listener, app.into_make_service_with_connect_info::<TfoConnectInfo>()).await?;
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ::tokio::net::TcpStream;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;

use crate::confirm::{handshake_state, wait_confirmed_async, Confirmation, HandshakeState};
use crate::outcome::AcceptOutcome;
use crate::TokioListener;

/// An accepted connection with its TFO outcome: what `axum::serve` gets from
/// a [`TokioListener`]. Reads and writes go to the TCP stream inside.
#[derive(Debug)]
pub struct AcceptedStream {
    stream: TcpStream,
    outcome: AcceptOutcome,
    handshake: Handshake,
}

/// A handle on a connection's handshake, for request handlers: is it
/// confirmed (the client's final ACK arrived), and waiting until it is.
/// Holds a duplicate of the socket's descriptor (one more per connection).
#[derive(Debug, Clone)]
pub struct Handshake(Arc<OwnedFd>);

impl Handshake {
    fn of(stream: &TcpStream) -> io::Result<Handshake> {
        Ok(Handshake(Arc::new(stream.as_fd().try_clone_to_owned()?)))
    }

    /// Where the handshake stands now.
    pub fn state(&self) -> crate::Result<HandshakeState> {
        handshake_state(&*self.0)
    }

    /// Waits until it is confirmed, fails, or `timeout` passes.
    pub async fn confirmed(&self, timeout: Duration) -> crate::Result<Confirmation> {
        wait_confirmed_async(&*self.0, timeout).await
    }
}

impl AcceptedStream {
    /// Whether this connection's data came in the SYN.
    pub fn outcome(&self) -> AcceptOutcome {
        self.outcome
    }

    /// The connection's handshake.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// The TCP stream.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// The TCP stream, unwrapped.
    pub fn into_inner(self) -> TcpStream {
        self.stream
    }
}

impl AsyncRead for AcceptedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AcceptedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// How long `axum::serve`'s accept loop waits after an accept error (out of
/// file descriptors, ...) before trying again, so that it never spins.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

impl axum::serve::Listener for TokioListener {
    type Io = AcceptedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (AcceptedStream, SocketAddr) {
        loop {
            match TokioListener::accept(self).await {
                Ok((stream, peer, outcome)) => match Handshake::of(&stream) {
                    Ok(handshake) => return (AcceptedStream { stream, outcome, handshake }, peer),
                    Err(_) => ::tokio::time::sleep(ACCEPT_RETRY).await, // out of descriptors
                },
                Err(_) => ::tokio::time::sleep(ACCEPT_RETRY).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TokioListener::local_addr(self).map_err(io::Error::from)
    }
}

/// `ConnectInfo` for handlers served on a [`TokioListener`]: the peer,
/// whether its data came in the SYN, and its handshake. Use
/// `app.into_make_service_with_connect_info::<TfoConnectInfo>()`.
#[derive(Debug, Clone)]
pub struct TfoConnectInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The connection's TFO outcome.
    pub outcome: AcceptOutcome,
    /// The connection's handshake (confirmed yet?).
    pub handshake: Handshake,
}

impl Connected<IncomingStream<'_, TokioListener>> for TfoConnectInfo {
    fn connect_info(stream: IncomingStream<'_, TokioListener>) -> TfoConnectInfo {
        let io = stream.io();
        TfoConnectInfo { peer: *stream.remote_addr(), outcome: io.outcome(), handshake: io.handshake().clone() }
    }
}

/// What a server does with a request that came in the SYN before its
/// handshake is confirmed (it may be a replay): RFC 8470's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyDataPolicy {
    /// Run it once the client's final ACK confirms the handshake (a replay
    /// never is: it gets no response). Costs the round trip TFO saved.
    Wait,
    /// Answer `425 Too Early`; the client retries.
    Reject,
    /// Run it at once, marked `Early-Data: 1` (unsafe: a replay runs too).
    Allow,
}

/// The early-data rule of a service: a policy for unsafe requests, while safe
/// methods (GET, HEAD, OPTIONS, and those marked idempotent) always run at
/// once. Use it with [`early_data`] as axum middleware.
#[derive(Debug, Clone)]
pub struct EarlyData {
    policy: EarlyDataPolicy,
    idempotent: Vec<axum::http::Method>,
    timeout: Duration,
}

impl EarlyData {
    /// Unsafe requests get `policy`; the wait for confirmation lasts at most 10 s.
    pub fn new(policy: EarlyDataPolicy) -> EarlyData {
        EarlyData { policy, idempotent: Vec::new(), timeout: Duration::from_secs(10) }
    }

    /// Marks a method safe to run from early data (e.g. PUT, when your PUTs are idempotent).
    pub fn idempotent(mut self, method: axum::http::Method) -> EarlyData {
        self.idempotent.push(method);
        self
    }

    fn is_safe(&self, method: &axum::http::Method) -> bool {
        use axum::http::Method;
        [Method::GET, Method::HEAD, Method::OPTIONS].contains(method) || self.idempotent.contains(method)
    }
}

/// axum middleware applying an [`EarlyData`] rule per request:
/// `router.layer(axum::middleware::from_fn_with_state(EarlyData::new(EarlyDataPolicy::Wait), fastopen::early_data))`
/// on a service made with `into_make_service_with_connect_info::<TfoConnectInfo>()`.
/// A request that ran before confirmation carries `Early-Data: 1` (RFC 8470).
pub async fn early_data(
    axum::extract::State(rule): axum::extract::State<EarlyData>,
    axum::extract::ConnectInfo(info): axum::extract::ConnectInfo<TfoConnectInfo>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let early = info.outcome.data_in_syn && info.handshake.state().is_ok_and(|s| s == HandshakeState::Pending);
    if !early || rule.is_safe(request.method()) {
        if early {
            request.headers_mut().insert("early-data", axum::http::HeaderValue::from_static("1"));
        }
        return next.run(request).await;
    }
    match rule.policy {
        EarlyDataPolicy::Allow => {
            request.headers_mut().insert("early-data", axum::http::HeaderValue::from_static("1"));
            next.run(request).await
        }
        EarlyDataPolicy::Reject => {
            (axum::http::StatusCode::TOO_EARLY, "sent in the SYN before the handshake was confirmed; retry\n")
                .into_response()
        }
        EarlyDataPolicy::Wait => match info.handshake.confirmed(rule.timeout).await {
            Ok(c) if c.is_confirmed() => next.run(request).await,
            // Never confirmed: a replay (or a vanished client). Nobody will read an answer.
            _ => axum::http::StatusCode::TOO_EARLY.into_response(),
        },
    }
}
