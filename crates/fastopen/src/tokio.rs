//! Async TFO on tokio (feature `tokio`): the same listener and client as the
//! blocking API, and the same outcomes.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

use ::tokio::io::AsyncWriteExt;
use ::tokio::net::{TcpListener, TcpStream};

use crate::client::Started;
use crate::key::FastOpenKey;
use crate::listener::{accept_outcome, listener_tfo, set_keys, ListenerTfo};
use crate::outcome::{AcceptOutcome, ClientOutcome};
use crate::{Connector, Error, ListenerBuilder, Result};

/// An async TFO listener. Build it with [`ListenerBuilder::bind_tokio`].
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
}

impl ListenerBuilder {
    /// An async listener; call inside a tokio runtime.
    pub fn bind_tokio(self) -> Result<Listener> {
        let socket = self.listen_socket()?;
        socket.set_nonblocking(true).map_err(Error::io("making the listener non-blocking"))?;
        let inner = TcpListener::from_std(socket.into()).map_err(Error::io("registering the listener with tokio"))?;
        Ok(Listener { inner })
    }
}

impl Listener {
    /// Accepts a connection and reports whether its data came in the SYN.
    pub async fn accept(&self) -> Result<(TcpStream, SocketAddr, AcceptOutcome)> {
        let (stream, peer) = self.inner.accept().await.map_err(Error::io("accept()"))?;
        let outcome = accept_outcome(&stream)?;
        Ok((stream, peer, outcome))
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner.local_addr().map_err(Error::io("reading the listener address"))
    }

    /// Replaces the keys on the live listener; see [`crate::Listener::set_keys`].
    pub fn set_keys(&self, primary: &FastOpenKey, backup: Option<&FastOpenKey>) -> Result<()> {
        set_keys(&self.inner, primary, backup)
    }

    /// The TFO settings in effect on this listener.
    pub fn tfo(&self) -> Result<ListenerTfo> {
        listener_tfo(&self.inner)
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl Connector {
    /// The async form of [`Connector::connect`].
    pub async fn connect_async(&self, addr: SocketAddr, first_data: &[u8]) -> Result<(TcpStream, ClientOutcome)> {
        let started = self.start(addr, first_data)?;
        let Started { socket, attempt, written, started_at } = started;
        let std_stream: std::net::TcpStream = socket.into();
        let mut stream = TcpStream::from_std(std_stream).map_err(Error::io("registering the socket with tokio"))?;
        let writable = stream.writable();
        match self.timeout() {
            Some(t) => ::tokio::time::timeout(t, writable)
                .await
                .map_err(|_| Error::ConnectTimeout { addr, millis: t.as_millis() })?,
            None => writable.await,
        }
        .map_err(Error::io("waiting for the handshake"))?;
        let outcome = self.finish(&stream, attempt, started_at, addr, first_data.len())?;
        stream.write_all(&first_data[written..]).await.map_err(|source| Error::Connect { addr, source })?;
        Ok((stream, outcome))
    }
}
