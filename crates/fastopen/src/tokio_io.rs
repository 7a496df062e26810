//! Async TFO on tokio (feature `tokio`): [`TokioListener`] (the listener
//! `ListenerBuilder::bind_tokio` makes), [`TfoStream`] (a stream whose first
//! write rides in the SYN), and `connect_async`. Same outcomes as the
//! blocking API.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use ::tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use ::tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::client::Started;
use crate::key::FastOpenKey;
use crate::listener::{accept_outcome, listener_tfo, set_keys, ListenerTfo};
use crate::outcome::{AcceptOutcome, Attempt, ClientMethod, ClientOutcome};
use crate::{Connector, Error, ListenerBuilder, Result};

/// An async TFO listener: [`ListenerBuilder::bind_tokio`] or [`ListenerBuilder::adopt_tokio`].
#[derive(Debug)]
pub struct TokioListener {
    inner: TcpListener,
}

impl ListenerBuilder {
    /// An async listener; call inside a tokio runtime.
    pub fn bind_tokio(self) -> Result<TokioListener> {
        let socket = self.listen_socket()?;
        TokioListener::from_std(socket.into())
    }

    /// Turns an existing listening socket (systemd socket activation) into an
    /// async TFO listener; see [`ListenerBuilder::adopt`].
    pub fn adopt_tokio(self, listener: std::net::TcpListener) -> Result<TokioListener> {
        TokioListener::from_std(self.adopt(listener)?.into_std())
    }
}

impl TokioListener {
    /// Wraps a std listener as it is (its TFO settings, if any, stay); call
    /// inside a tokio runtime.
    pub fn from_std(listener: std::net::TcpListener) -> Result<TokioListener> {
        listener.set_nonblocking(true).map_err(Error::io("making the listener non-blocking"))?;
        let inner = TcpListener::from_std(listener).map_err(Error::io("registering the listener with tokio"))?;
        Ok(TokioListener { inner })
    }

    /// Accepts a connection and reports whether its data came in the SYN.
    pub async fn accept(&self) -> Result<(TcpStream, SocketAddr, AcceptOutcome)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for a connection (for hand-written accept loops and `Stream`s).
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<(TcpStream, SocketAddr, AcceptOutcome)>> {
        let (stream, peer) = ready!(self.inner.poll_accept(cx)).map_err(Error::io("accept()"))?;
        let outcome = accept_outcome(&stream)?;
        Poll::Ready(Ok((stream, peer, outcome)))
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner.local_addr().map_err(Error::io("reading the listener address"))
    }

    /// Replaces the keys on the live listener; see [`crate::BlockingListener::set_keys`].
    pub fn set_keys(&self, primary: &FastOpenKey, backup: Option<&FastOpenKey>) -> Result<()> {
        set_keys(&self.inner, primary, backup)
    }

    /// The TFO settings in effect on this listener, and whether it does TFO.
    pub fn tfo(&self) -> Result<ListenerTfo> {
        listener_tfo(&self.inner)
    }

    /// The tokio listener inside.
    pub fn into_inner(self) -> TcpListener {
        self.inner
    }
}

impl AsFd for TokioListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl Connector {
    /// The async form of [`Connector::connect`].
    pub async fn connect_async(&self, addr: SocketAddr, first_data: &[u8]) -> Result<(TcpStream, ClientOutcome)> {
        self.connect_async_with(addr, first_data, false).await
    }

    /// The async form of [`Connector::connect_read_first`].
    pub async fn connect_read_first_async(&self, addr: SocketAddr) -> Result<(TcpStream, ClientOutcome)> {
        self.connect_async_with(addr, &[], true).await
    }

    async fn connect_async_with(
        &self,
        addr: SocketAddr,
        first_data: &[u8],
        read_first: bool,
    ) -> Result<(TcpStream, ClientOutcome)> {
        let started = self.start(addr, first_data, read_first)?;
        let Started { socket, attempt, written, started_at } = started;
        let std_stream: std::net::TcpStream = socket.into();
        let mut stream = TcpStream::from_std(std_stream).map_err(Error::io("registering the socket with tokio"))?;
        // One deadline for the handshake and the rest of the first data, as
        // in the blocking connect; the connector's Cancel ends either at once.
        let deadline = self.timeout().map(|t| ::tokio::time::Instant::from_std(started_at + t));
        let millis = self.timeout().map_or(0, |t| t.as_millis());
        let handshake = async {
            stream.writable().await.map_err(Error::io("waiting for the handshake"))?;
            self.finish(&stream, attempt, started_at, addr, first_data.len())
        };
        let outcome = self.bounded(deadline, handshake, Error::ConnectTimeout { addr, millis }).await?;
        let rest = first_data.len() - written;
        let write_rest =
            async { stream.write_all(&first_data[written..]).await.map_err(|source| Error::Connect { addr, source }) };
        let timed_out = Error::FirstDataTimeout { addr, written, len: rest + written, millis };
        self.bounded(deadline, write_rest, timed_out).await?;
        Ok((stream, outcome))
    }

    /// Runs `work` until `deadline` (then `timed_out`) or the connector's
    /// [`Cancel`](crate::Cancel) (then [`Error::Cancelled`]).
    async fn bounded<T>(
        &self,
        deadline: Option<::tokio::time::Instant>,
        work: impl Future<Output = Result<T>>,
        timed_out: Error,
    ) -> Result<T> {
        let cancelled = async {
            match self.cancellation() {
                Some(cancel) => cancel.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let expired = async {
            match deadline {
                Some(at) => ::tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let (mut cancelled, mut expired, mut work) = (pin!(cancelled), pin!(expired), pin!(work));
        let mut timed_out = Some(timed_out);
        std::future::poll_fn(|cx| {
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Error::Cancelled));
            }
            if expired.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(timed_out.take().unwrap_or(Error::Cancelled)));
            }
            work.as_mut().poll(cx)
        })
        .await
    }
}

/// The most of a first write offered to the SYN (more than any SYN carries).
const MAX_FIRST_WRITE: usize = 16 * 1024;

/// How long a read before any write waits for that write, by default.
pub const READ_FIRST_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

/// A TFO client stream whose first write rides in the SYN.
///
/// [`TfoStream::connect`] returns at once, without sending anything: the
/// connection starts with the first write, whose data goes in the SYN when a
/// cookie for the server is cached (a cookie request goes out otherwise, and
/// the data follows the handshake). This is what lets clients that connect
/// first and write later (hyper, tonic) use TFO.
///
/// - **A read before any write** waits up to [`READ_FIRST_GRACE`] (see
///   [`TfoStream::read_first_grace`]) for a write to start the connection:
///   clients like hyper poll a read before they write the request, and the
///   request must still ride in the SYN. If no write comes, the read starts a
///   read-first connection ([`Connector::connect_read_first`]): the cached
///   cookie in a SYN without data ([`ClientOutcome::cookie_only_syn`]), or a
///   cookie request, and waits for data: it never hangs on a SYN that was
///   never sent (the `TCP_FASTOPEN_CONNECT` read-before-write trap), and a
///   server that speaks first greets a round trip sooner.
/// - **Several addresses** are tried in order only while no data of the first
///   write can have reached a failed one (see [`Connector::idempotent`]).
/// - **Connect errors stay connect errors**: whether they surface in the first
///   write, a later read or [`TfoStream::handshake`], their kind is the OS's
///   (`ConnectionRefused`, `TimedOut` for the connect timeout, ...).
/// - [`TfoStream::outcome`] says whether TFO was used once the handshake is over.
#[derive(Debug)]
pub struct TfoStream {
    connector: Connector,
    addrs: Vec<SocketAddr>,
    /// Index in `addrs` of the address tried now.
    current: usize,
    state: State,
    /// How long a first read waits for a first write.
    read_first_grace: std::time::Duration,
    /// The running grace period of a read that came first.
    grace: Option<Pin<Box<::tokio::time::Sleep>>>,
    /// The task of that read, woken when a write starts the connection.
    reader: Option<std::task::Waker>,
}

#[derive(Debug)]
enum State {
    /// Nothing sent yet.
    Idle,
    /// The SYN left; waiting for the handshake.
    Handshake(Box<Handshake>),
    /// Connected. `owed`: data the caller was told is written that the
    /// kernel does not have yet (after a retry on another address).
    Open { stream: TcpStream, outcome: ClientOutcome, owed: Vec<u8> },
    /// Failed for good; the error was returned.
    Failed,
}

#[derive(Debug)]
struct Handshake {
    stream: TcpStream,
    attempt: Attempt,
    started_at: Instant,
    /// The data reported written to the caller so far (the SYN's), to send
    /// again to the next address if this one fails.
    first: Vec<u8>,
    /// How much of `first` the kernel has for this address (the rest is owed).
    in_kernel: usize,
    deadline: Option<Pin<Box<::tokio::time::Sleep>>>,
}

impl TfoStream {
    /// A stream to `host` (an address, or a name resolved now, every address
    /// kept), with TFO by `TCP_FASTOPEN_CONNECT` where the kernel has it.
    /// Nothing is sent until the first write.
    pub async fn connect(host: impl ToSocketAddrs) -> io::Result<TfoStream> {
        let method = if crate::KernelFeatures::current().fastopen_connect {
            ClientMethod::Connect
        } else {
            ClientMethod::SendTo
        };
        TfoStream::connect_with(Connector::new().method(method), host).await
    }

    /// Like [`TfoStream::connect`], with these settings (strict mode, timeout, ...).
    pub async fn connect_with(connector: Connector, host: impl ToSocketAddrs) -> io::Result<TfoStream> {
        let addrs: Vec<SocketAddr> = ::tokio::net::lookup_host(host).await?.collect();
        TfoStream::to_addrs(connector, addrs)
    }

    /// A stream to these addresses, tried in order; no lookup.
    pub fn to_addrs(connector: Connector, addrs: Vec<SocketAddr>) -> io::Result<TfoStream> {
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to"));
        }
        Ok(TfoStream {
            connector,
            addrs,
            current: 0,
            state: State::Idle,
            read_first_grace: READ_FIRST_GRACE,
            grace: None,
            reader: None,
        })
    }

    /// How long a read before any write waits for that write before it
    /// connects without data (default [`READ_FIRST_GRACE`]; zero connects at once).
    pub fn read_first_grace(mut self, grace: std::time::Duration) -> TfoStream {
        self.read_first_grace = grace;
        self
    }

    /// The server address tried now (the one connected to, once open).
    pub fn peer_addr(&self) -> SocketAddr {
        self.addrs[self.current]
    }

    /// The outcome, once the handshake is over (`None` before).
    pub fn outcome(&self) -> Option<&ClientOutcome> {
        match &self.state {
            State::Open { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    /// Waits for the handshake (starting a plain one if nothing was written)
    /// and returns the outcome.
    pub async fn handshake(&mut self) -> io::Result<&ClientOutcome> {
        std::future::poll_fn(|cx| self.poll_open(cx, &[]).map_ok(drop)).await?;
        self.outcome().ok_or_else(|| io::Error::other("the handshake did not complete"))
    }

    /// The tokio stream, once open.
    pub fn get_ref(&self) -> Option<&TcpStream> {
        match &self.state {
            State::Open { stream, .. } => Some(stream),
            _ => None,
        }
    }

    /// Starts the connection to the current address with `first` in the SYN
    /// if the kernel takes it; returns the bytes of `first` now in the kernel.
    fn start(&mut self, first: &[u8]) -> io::Result<usize> {
        loop {
            let addr = self.addrs[self.current];
            // No data (a read came first): a read-first start, the cookie without data.
            match self.connector.start(addr, first, first.is_empty()) {
                Ok(Started { socket, attempt, written, started_at }) => {
                    let stream = TcpStream::from_std(socket.into())?;
                    let deadline = self.connector.timeout().map(|t| Box::pin(::tokio::time::sleep(t)));
                    let first = first[..written].to_vec();
                    let h = Handshake { stream, attempt, started_at, first, in_kernel: written, deadline };
                    self.state = State::Handshake(Box::new(h));
                    if let Some(reader) = self.reader.take() {
                        reader.wake();
                    }
                    return Ok(written);
                }
                Err(e) if self.current + 1 < self.addrs.len() && retryable(&e) => self.current += 1,
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e.into());
                }
            }
        }
    }

    /// Drives the connection until it is open. `first` is the data of a write
    /// (empty for a read): when this call starts the connection and the kernel
    /// puts some of it in the SYN, returns that count at once (it is written).
    fn poll_open(&mut self, cx: &mut Context<'_>, first: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            match &mut self.state {
                State::Open { stream, owed, .. } => {
                    while !owed.is_empty() {
                        let n = ready!(Pin::new(&mut *stream).poll_write(cx, owed))?;
                        owed.drain(..n);
                    }
                    return Poll::Ready(Ok(0));
                }
                State::Failed => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "the connection failed")))
                }
                State::Idle => {
                    let chunk = &first[..first.len().min(MAX_FIRST_WRITE)];
                    let in_kernel = self.start(chunk)?;
                    if in_kernel > 0 {
                        // The data is in the SYN: report it written at once.
                        return Poll::Ready(Ok(in_kernel));
                    }
                }
                State::Handshake(h) => {
                    let addr = self.addrs[self.current];
                    let timed_out = h.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready());
                    let result = if timed_out {
                        let millis = self.connector.timeout().map_or(0, |t| t.as_millis());
                        Err(Error::ConnectTimeout { addr, millis })
                    } else {
                        ready!(h.stream.poll_write_ready(cx))?;
                        let first_len = h.first.len();
                        self.connector.finish(&h.stream, h.attempt, h.started_at, addr, first_len)
                    };
                    // The handshake resolved: take it out (the state is Failed until replaced).
                    let State::Handshake(h) = std::mem::replace(&mut self.state, State::Failed) else {
                        return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
                    };
                    match result {
                        Ok(outcome) => {
                            let owed = h.first[h.in_kernel..].to_vec();
                            self.state = State::Open { stream: h.stream, outcome, owed };
                        }
                        // The next address only when the failed one cannot have the
                        // data (none in its SYN, or the SYN refused or unreachable), or
                        // the caller said it is idempotent.
                        Err(e)
                            if self.current + 1 < self.addrs.len()
                                && retryable(&e)
                                && (h.in_kernel == 0 || never_arrived(&e) || self.connector.is_idempotent()) =>
                        {
                            self.current += 1;
                            // The data the caller was told is written goes to the next address:
                            // in its SYN if the kernel takes it, after its handshake otherwise.
                            let sent = self.start(&h.first)?;
                            if let State::Handshake(next) = &mut self.state {
                                next.in_kernel = sent;
                                next.first = h.first;
                            }
                        }
                        Err(e) => return Poll::Ready(Err(e.into())),
                    }
                }
            }
        }
    }
}

/// Errors that say the SYN (and any data in it) was not taken: a reset
/// answered it, or it could not be routed.
fn never_arrived(e: &Error) -> bool {
    matches!(e, Error::Connect { source, .. } if matches!(
        source.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::AddrNotAvailable
    ))
}

/// Errors after which the next address of a host is worth trying.
fn retryable(e: &Error) -> bool {
    match e {
        Error::ConnectTimeout { .. } => true,
        Error::Connect { source, .. } => matches!(
            source.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::TimedOut
        ),
        _ => false,
    }
}

impl TfoStream {
    /// A read before any write: wait for a write during the grace period.
    fn poll_read_first_grace(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !matches!(self.state, State::Idle) || self.read_first_grace.is_zero() {
            return Poll::Ready(());
        }
        let grace = self.read_first_grace;
        let sleep = self.grace.get_or_insert_with(|| Box::pin(::tokio::time::sleep(grace)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        self.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncRead for TfoStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_read_first_grace(cx));
        ready!(self.poll_open(cx, &[]))?;
        match &mut self.state {
            State::Open { stream, .. } => Pin::new(stream).poll_read(cx, buf),
            _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for TfoStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let in_syn = ready!(self.poll_open(cx, buf))?;
        if in_syn > 0 {
            return Poll::Ready(Ok(in_syn));
        }
        match &mut self.state {
            State::Open { stream, .. } => Pin::new(stream).poll_write(cx, buf),
            _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    /// The first write is the SYN's data: all of the buffers go in it (up to
    /// one segment's worth), not only the first, so a TLS client's
    /// ClientHello and its early data, written as two buffers, share the SYN.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if matches!(self.state, State::Idle) {
            let mut first = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_FIRST_WRITE));
            for buf in bufs {
                let room = MAX_FIRST_WRITE - first.len();
                first.extend_from_slice(&buf[..buf.len().min(room)]);
            }
            return self.poll_write(cx, &first);
        }
        match &mut self.state {
            State::Open { stream, owed, .. } if owed.is_empty() => Pin::new(stream).poll_write_vectored(cx, bufs),
            _ => {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &**b);
                self.poll_write(cx, first)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.state {
            State::Open { stream, .. } => Pin::new(stream).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_open(cx, &[]))?;
        match &mut self.state {
            State::Open { stream, .. } => Pin::new(stream).poll_shutdown(cx),
            _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}
