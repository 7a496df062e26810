//! HTTPS over TFO for hyper and tonic (feature `rustls`): a connector whose
//! ClientHello rides in the SYN (two round trips to the answer instead of
//! three) and, with [`TlsConnector::early_data`] on a resumed session, whose
//! request rides there too as TLS 1.3 early data (one round trip). Each
//! response says what happened: the TFO outcome ([`crate::hyper::ConnectionOutcome`])
//! and the TLS one ([`TlsOutcome`]: resumed, early data sent, accepted).
//!
//! Early data can be replayed by an attacker who copies it: turn it on only
//! for requests that are safe to run twice (GET and the like), and let the
//! server refuse the rest (HTTP 425, RFC 8470). It is off by default.
//!
//! ```no_run
//! use std::sync::Arc;
//! use http_body_util::Empty;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//!
//! # async fn run(mut config: rustls::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! // `config`: your roots and provider; resumption is on by default in rustls.
//! config.enable_early_data = true;
//! config.alpn_protocols = vec![b"http/1.1".to_vec()];
//! let connector = fastopen::tls::TlsConnector::new(Arc::new(config)).early_data(true);
//! let client = Client::builder(TokioExecutor::new()).build::<_, Empty<bytes::Bytes>>(connector);
//! for _ in 0..2 {
//!     let response = client.get("https://localhost:8443/".parse()?).await?;
//!     if let Some(tls) = response.extensions().get::<fastopen::tls::TlsOutcome>().and_then(|t| t.get()) {
//!         // The second connection resumes: the GET went as early data, in the SYN.
//!         println!("resumed {}, early data sent {}, accepted {}", tls.resumed, tls.early_data_sent, tls.early_data_accepted);
//!     }
//! }
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::hyper::ConnectionOutcome;
use crate::TfoStream;

/// A `tower_service::Service<http::Uri>` for `https` URIs: TFO underneath
/// ([`crate::hyper::Connector`]), rustls on top, the ClientHello as the first
/// write (in the SYN once a cookie is cached).
#[derive(Debug, Clone)]
pub struct TlsConnector {
    tcp: crate::hyper::Connector,
    config: Arc<ClientConfig>,
    early_data: bool,
}

impl TlsConnector {
    /// HTTPS with `config` (your roots, provider and ALPN), TFO on, early data off.
    pub fn new(config: Arc<ClientConfig>) -> TlsConnector {
        TlsConnector { tcp: crate::hyper::Connector::new().allow_any_scheme(true), config, early_data: false }
    }

    /// The TCP connector underneath (TFO off, strict, timeouts, ...).
    pub fn tcp(mut self, tcp: crate::hyper::Connector) -> TlsConnector {
        self.tcp = tcp.allow_any_scheme(true);
        self
    }

    /// On a resumed session whose ticket allows it, write the request as TLS
    /// 1.3 early data, with the ClientHello (in the SYN when TFO carries it);
    /// sent again after the handshake if the server refuses it. Needs
    /// `config.enable_early_data` and resumption (rustls's default). Off by
    /// default: early data can be replayed.
    pub fn early_data(mut self, on: bool) -> TlsConnector {
        self.early_data = on;
        self
    }
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TlsConnection;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsConnection>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if uri.scheme_str() != Some("https") {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not an https URI: {uri}")));
            }
            let (host, port) = crate::hyper::host_and_port(&uri, true)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
            let stream = TfoStream::connect_with(this.tcp.tfo_connector(), (host.as_str(), port)).await?;
            let connector = tokio_rustls::TlsConnector::from(this.config).early_data(this.early_data);
            let mut tls = connector.connect(name, stream).await?;
            // With a ticket that allows early data, the connect returned before
            // the handshake: hyper's request becomes the early data.
            let early_data_ready = this.early_data && tls.get_mut().1.early_data().is_some_and(|e| e.bytes_left() > 0);
            Ok(TlsConnection {
                io: TokioIo::new(tls),
                tcp: ConnectionOutcome::default(),
                tls: TlsOutcome::default(),
                early_data_ready,
                written: false,
                early_data_sent: false,
            })
        })
    }
}

/// What TLS did on a connection, in each response's extensions
/// (`response.extensions().get::<TlsOutcome>()`), known once the handshake is over.
#[derive(Debug, Clone, Default)]
pub struct TlsOutcome(Arc<OnceLock<TlsInfo>>);

impl TlsOutcome {
    /// `None` until the handshake is over.
    pub fn get(&self) -> Option<&TlsInfo> {
        self.0.get()
    }
}

/// Resumption and early data on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The handshake resumed a session (a ticket from an earlier connection).
    pub resumed: bool,
    /// The request (its start) went as early data with the ClientHello.
    pub early_data_sent: bool,
    /// The server took the early data (if not, it was sent again after the handshake).
    pub early_data_accepted: bool,
}

/// A connection made by [`TlsConnector`].
#[derive(Debug)]
pub struct TlsConnection {
    io: TokioIo<tokio_rustls::client::TlsStream<TfoStream>>,
    tcp: ConnectionOutcome,
    tls: TlsOutcome,
    /// The session can take early data: the first write becomes early data.
    early_data_ready: bool,
    /// Something was written (until then a flush must not start the handshake).
    written: bool,
    early_data_sent: bool,
}

impl TlsConnection {
    /// After a write: the first one, before the handshake, was early data.
    fn wrote(&mut self, result: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(1..)) = result {
            if !self.written && self.early_data_ready {
                self.early_data_sent = true;
            }
            self.written = true;
        }
        self.note_outcomes();
    }

    fn note_outcomes(&self) {
        let (stream, session) = self.io.inner().get_ref();
        if let Some(o) = stream.outcome() {
            self.tcp.note(o);
        }
        if self.tls.0.get().is_none() && !session.is_handshaking() {
            let _ = self.tls.0.set(TlsInfo {
                resumed: session.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
                early_data_sent: self.early_data_sent,
                early_data_accepted: self.early_data_sent && session.is_early_data_accepted(),
            });
        }
    }
}

impl Connection for TlsConnection {
    fn connected(&self) -> Connected {
        let (_, session) = self.io.inner().get_ref();
        let connected = Connected::new().extra(self.tcp.clone()).extra(self.tls.clone());
        if session.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl ::hyper::rt::Read for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ::hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        self.note_outcomes();
        r
    }
}

impl ::hyper::rt::Write for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&r);
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.written {
            // hyper flushes before it writes the request: passed down, that
            // flush would start the handshake with the ClientHello alone, and
            // the request would miss the SYN (and the early data).
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.note_outcomes();
        r
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
