//! hyper (feature `hyper`): a connector for hyper-util's client (and tonic's
//! `Endpoint::connect_with_connector`) whose connections carry the request in
//! the SYN when a cookie is cached, and tell each response whether they did.
//!
//! ```no_run
//! use http_body_util::Empty;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder(TokioExecutor::new())
//!     .build::<_, Empty<bytes::Bytes>>(fastopen::hyper::Connector::new());
//! let response = client.get("http://127.0.0.1:8080/".parse()?).await?;
//! if let Some(outcome) = response.extensions().get::<fastopen::hyper::ConnectionOutcome>() {
//!     println!("{}", outcome.get().map_or("unknown".into(), |o| o.to_string()));
//! }
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;

use crate::outcome::{ClientMethod, ClientOutcome};
use crate::TfoStream;

/// A `tower_service::Service<http::Uri>` that opens [`TfoStream`]s, for
/// `hyper_util::client::legacy::Client::builder(...).build(Connector::new())`.
///
/// It resolves the URI's host (every address, tried in order) and returns at
/// once: hyper's first write (the request) then rides in the SYN. `http` URIs
/// only, unless [`Connector::allow_any_scheme`] lets a TLS connector wrap it
/// (the ClientHello is then the first write).
#[derive(Debug, Clone)]
pub struct Connector {
    tfo: crate::Connector,
    any_scheme: bool,
}

impl Default for Connector {
    fn default() -> Self {
        Connector::new()
    }
}

impl Connector {
    /// TFO on, by `TCP_FASTOPEN_CONNECT` where the kernel has it.
    pub fn new() -> Connector {
        let method = if crate::KernelFeatures::current().fastopen_connect {
            ClientMethod::Connect
        } else {
            ClientMethod::SendTo
        };
        // TCP_NODELAY on: over TLS the Finished and the request are two writes,
        // and Nagle would hold the request for the Finished's ACK (a round trip).
        Connector { tfo: crate::Connector::new().method(method).nodelay(true), any_scheme: false }
    }

    /// `TCP_NODELAY` (on by default: see [`crate::Connector::nodelay`]).
    pub fn nodelay(mut self, nodelay: bool) -> Connector {
        self.tfo = self.tfo.nodelay(nodelay);
        self
    }

    /// `false` makes plain connections (to compare).
    pub fn tfo(mut self, enabled: bool) -> Connector {
        self.tfo = self.tfo.tfo(enabled);
        self
    }

    /// Which kernel path to use.
    pub fn method(mut self, method: ClientMethod) -> Connector {
        self.tfo = self.tfo.method(method);
        self
    }

    /// Strict mode: a fallback to plain TCP fails the connection (see [`crate::Connector::strict`]).
    pub fn strict(mut self, strict: bool) -> Connector {
        self.tfo = self.tfo.strict(strict);
        self
    }

    /// Give up when the handshake takes longer.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Connector {
        self.tfo = self.tfo.connect_timeout(timeout);
        self
    }

    /// The library's connector inside (for [`crate::tls::TlsConnector`]).
    #[cfg(feature = "rustls")]
    pub(crate) fn tfo_connector(&self) -> crate::Connector {
        self.tfo.clone()
    }

    /// Accept `https` (and other) URIs, for a TLS connector layered on top.
    pub fn allow_any_scheme(mut self, allow: bool) -> Connector {
        self.any_scheme = allow;
        self
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TfoConnection;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TfoConnection>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (tfo, any_scheme) = (self.tfo.clone(), self.any_scheme);
        Box::pin(async move {
            let (host, port) = host_and_port(&uri, any_scheme)?;
            let stream = TfoStream::connect_with(tfo, (host.as_str(), port)).await?;
            Ok(TfoConnection { io: TokioIo::new(stream), outcome: ConnectionOutcome::default() })
        })
    }
}

/// The host (brackets of an IPv6 literal removed) and port of a URI.
pub(crate) fn host_and_port(uri: &http::Uri, any_scheme: bool) -> io::Result<(String, u16)> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {uri}"));
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") if any_scheme => 443,
        Some(_) if any_scheme => uri.port_u16().ok_or_else(|| invalid("no port in the URI"))?,
        _ => return Err(invalid("not an http URI (allow_any_scheme for TLS)")),
    };
    let host = uri.host().ok_or_else(|| invalid("no host in the URI"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok((host, uri.port_u16().unwrap_or(default_port)))
}

/// Whether a connection's request rode in the SYN, in each response's
/// extensions (`response.extensions().get::<ConnectionOutcome>()`). It is
/// known once the handshake is over, that is, by the time a response arrives.
#[derive(Debug, Clone, Default)]
pub struct ConnectionOutcome(Arc<OnceLock<ClientOutcome>>);

impl ConnectionOutcome {
    /// The outcome (`None` until the handshake is over).
    pub fn get(&self) -> Option<&ClientOutcome> {
        self.0.get()
    }

    /// Keeps the first outcome known.
    pub(crate) fn note(&self, outcome: &ClientOutcome) {
        if self.0.get().is_none() {
            let _ = self.0.set(outcome.clone());
        }
    }
}

/// A connection made by [`Connector`]: hyper's IO over a [`TfoStream`].
#[derive(Debug)]
pub struct TfoConnection {
    io: TokioIo<TfoStream>,
    outcome: ConnectionOutcome,
}

impl TfoConnection {
    /// The stream inside.
    pub fn stream(&self) -> &TfoStream {
        self.io.inner()
    }

    fn note_outcome(&self) {
        if let Some(o) = self.io.inner().outcome() {
            self.outcome.note(o);
        }
    }
}

impl Connection for TfoConnection {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.outcome.clone())
    }
}

impl ::hyper::rt::Read for TfoConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ::hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        self.note_outcome();
        r
    }
}

impl ::hyper::rt::Write for TfoConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note_outcome();
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_to_host_and_port() {
        let hp = |u: &str, any| host_and_port(&u.parse().unwrap(), any).map_err(|e| e.to_string());
        assert_eq!(hp("http://example.invalid/x", false).unwrap(), ("example.invalid".into(), 80));
        assert_eq!(hp("http://[::1]:8080/", false).unwrap(), ("::1".into(), 8080));
        assert_eq!(hp("https://localhost/", true).unwrap(), ("localhost".into(), 443));
        assert!(hp("https://localhost/", false).unwrap_err().contains("allow_any_scheme"));
        assert!(hp("/relative", false).is_err());
    }
}
