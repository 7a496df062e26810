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

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ::tokio::net::TcpStream;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;

use crate::early_data::{EarlyData, Handshake};
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

/// axum middleware applying an [`EarlyData`] rule per request:
/// `router.layer(axum::middleware::from_fn_with_state(EarlyData::new(EarlyDataPolicy::Wait), fastopen::early_data))`
/// on a service made with `into_make_service_with_connect_info::<TfoConnectInfo>()`.
/// A request that runs before confirmation carries `Early-Data: 1` (RFC 8470);
/// one refused, or never confirmed (a replay), gets `425 Too Early` unrun.
pub async fn early_data(
    axum::extract::State(rule): axum::extract::State<EarlyData>,
    axum::extract::ConnectInfo(info): axum::extract::ConnectInfo<TfoConnectInfo>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match rule.check(request, &info.handshake).await {
        Ok(request) => next.run(request).await,
        Err(too_early) => too_early,
    }
}
