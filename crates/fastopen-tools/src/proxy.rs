//! `tfo proxy`'s engine: one relayed connection, TFO on both legs.
//!
//! The client leg is accepted by a TFO listener (its SYN's data is there at
//! accept). The upstream leg is a [`TfoStream`]: the client's first bytes go
//! in its SYN, and only bytes the client sent (as HAProxy's `tfo` server
//! option): the proxy waits `first_data_wait` for them, then connects without
//! data, so an upstream that speaks first (SMTP, SSH) still works. Then bytes
//! flow both ways until both sides are done; a side's EOF is passed on as a
//! half-close (shutdown of writing), and `idle` without a byte either way ends it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fastopen::{AcceptOutcome, ClientMethod, ClientOutcome, Connector, TfoStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a relay is set up.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub upstream: SocketAddr,
    pub first_data_wait: Duration,
    pub idle: Duration,
    pub connect_timeout: Duration,
}

/// How a relayed connection ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayEnd {
    /// Both sides finished (each half-closed or closed).
    Closed,
    /// No byte either way for the idle timeout.
    IdleTimeout,
    /// The client left before sending anything and before the upstream connected.
    ClientGone,
    /// The upstream could not be reached.
    UpstreamFailed(String),
    /// A read or write failed mid-way (reset, ...).
    Error(String),
}

/// What happened to one relayed connection.
#[derive(Debug)]
pub struct Relayed {
    pub client: SocketAddr,
    pub client_leg: AcceptOutcome,
    pub upstream_leg: Option<ClientOutcome>,
    /// Bytes of the client's that were ready for the upstream's SYN.
    pub first_data: usize,
    pub bytes_to_upstream: u64,
    pub bytes_to_client: u64,
    pub duration: Duration,
    pub end: RelayEnd,
}

/// The most of the client's first bytes offered to the upstream's SYN; also
/// the size of each direction's copy buffer.
const FIRST_DATA_MAX: usize = 16 * 1024;

/// Relays one accepted connection to the upstream.
pub async fn relay(
    mut client: TcpStream,
    client_addr: SocketAddr,
    client_leg: AcceptOutcome,
    config: &RelayConfig,
) -> Relayed {
    let started = Instant::now();
    let _ = client.set_nodelay(true);
    let done = |upstream_leg, first_data, up, down, end| Relayed {
        client: client_addr,
        client_leg,
        upstream_leg,
        first_data,
        bytes_to_upstream: up,
        bytes_to_client: down,
        duration: started.elapsed(),
        end,
    };
    let mut first = vec![0u8; FIRST_DATA_MAX];
    let first_len = match tokio::time::timeout(config.first_data_wait, client.read(&mut first)).await {
        Ok(Ok(0)) => return done(None, 0, 0, 0, RelayEnd::ClientGone),
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return done(None, 0, 0, 0, RelayEnd::Error(format!("reading the client: {e}"))),
        Err(_) => 0, // nothing yet: connect without data (the upstream may speak first)
    };
    let connector = Connector::new().method(ClientMethod::Connect).connect_timeout(Some(config.connect_timeout));
    let upstream = TfoStream::to_addrs(connector, vec![config.upstream]).map(|s| s.read_first_grace(Duration::ZERO));
    let mut upstream = match upstream {
        Ok(s) => s,
        Err(e) => return done(None, first_len, 0, 0, RelayEnd::UpstreamFailed(e.to_string())),
    };
    if first_len > 0 {
        if let Err(e) = upstream.write_all(&first[..first_len]).await {
            return done(None, first_len, 0, 0, RelayEnd::UpstreamFailed(e.to_string()));
        }
    }
    let upstream_leg = match upstream.handshake().await {
        Ok(outcome) => outcome.clone(),
        Err(e) => return done(None, first_len, 0, 0, RelayEnd::UpstreamFailed(e.to_string())),
    };
    if let Some(stream) = upstream.get_ref() {
        let _ = stream.set_nodelay(true);
    }
    // The first bytes' buffer carries the rest of the client's bytes.
    let (up, down, end) = pump(client, upstream, config.idle, first).await;
    done(Some(upstream_leg), first_len, first_len as u64 + up, down, end)
}

/// Copies both ways until both directions ended, one failed, or nothing moved for `idle`.
async fn pump(client: TcpStream, upstream: TfoStream, idle: Duration, up_buf: Vec<u8>) -> (u64, u64, RelayEnd) {
    let last = AtomicU64::new(0);
    let (up_bytes, down_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let origin = Instant::now();
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let up = copy_one_way(client_read, upstream_write, &last, origin, &up_bytes, up_buf);
    let down = copy_one_way(upstream_read, client_write, &last, origin, &down_bytes, vec![0u8; FIRST_DATA_MAX]);
    let both = async { tokio::join!(up, down) };
    tokio::pin!(both);
    loop {
        let since = Duration::from_millis(last.load(Ordering::Relaxed));
        let quiet_until = since + idle;
        let now = origin.elapsed();
        if now >= quiet_until {
            return (up_bytes.load(Ordering::Relaxed), down_bytes.load(Ordering::Relaxed), RelayEnd::IdleTimeout);
        }
        tokio::select! {
            (up, down) = &mut both => {
                let end = match (&up, &down) {
                    (Err(e), _) | (_, Err(e)) => RelayEnd::Error(e.to_string()),
                    _ => RelayEnd::Closed,
                };
                return (up_bytes.load(Ordering::Relaxed), down_bytes.load(Ordering::Relaxed), end);
            }
            _ = tokio::time::sleep(quiet_until - now) => {}
        }
    }
}

async fn copy_one_way(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    last: &AtomicU64,
    origin: Instant,
    total: &AtomicU64,
    mut buf: Vec<u8>,
) -> std::io::Result<()> {
    loop {
        let n = from.read(&mut buf).await?;
        last.store(origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        if n == 0 {
            let _ = to.shutdown().await; // pass the half-close on
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        total.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::plain_accept;
    use tokio::net::TcpListener;

    async fn accepted(listener: &TcpListener) -> (TcpStream, SocketAddr) {
        listener.accept().await.unwrap()
    }

    fn settings(upstream: SocketAddr, first_data_wait: Duration, idle: Duration) -> RelayConfig {
        RelayConfig { upstream, first_data_wait, idle, connect_timeout: Duration::from_secs(5) }
    }

    #[tokio::test]
    async fn relays_both_ways_with_half_close_and_a_server_that_speaks_first() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = settings(upstream.local_addr().unwrap(), Duration::from_millis(5), Duration::from_secs(5));
        let front_addr = front.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            s.write_all(b"220 hello\r\n").await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap(); // the client's half-close arrives
            s.write_all(&got).await.unwrap(); // still writable: half-closed only
            got
        });
        let proxy = tokio::spawn(async move {
            let (c, addr) = accepted(&front).await;
            relay(c, addr, plain_accept(), &config).await
        });
        let mut client = TcpStream::connect(front_addr).await.unwrap();
        let mut greeting = [0u8; 11];
        client.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"220 hello\r\n");
        client.write_all(b"QUIT").await.unwrap();
        client.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        client.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"QUIT");
        assert_eq!(server.await.unwrap(), b"QUIT");
        let r = proxy.await.unwrap();
        assert_eq!(r.end, RelayEnd::Closed);
        assert_eq!((r.first_data, r.bytes_to_upstream, r.bytes_to_client), (0, 4, 15));
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_its_timeout() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = settings(upstream.local_addr().unwrap(), Duration::from_millis(1), Duration::from_millis(200));
        let front_addr = front.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let (s, _) = upstream.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(s);
        });
        let proxy = tokio::spawn(async move {
            let (c, addr) = accepted(&front).await;
            relay(c, addr, plain_accept(), &config).await
        });
        let _client = TcpStream::connect(front_addr).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), proxy).await.expect("the idle timeout holds").unwrap();
        assert_eq!(r.end, RelayEnd::IdleTimeout);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_reported() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = closed.local_addr().unwrap();
        drop(closed);
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = settings(upstream, Duration::from_millis(50), Duration::from_secs(5));
        let front_addr = front.local_addr().unwrap();
        let proxy = tokio::spawn(async move {
            let (c, addr) = accepted(&front).await;
            relay(c, addr, plain_accept(), &config).await
        });
        let mut client = TcpStream::connect(front_addr).await.unwrap();
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let r = proxy.await.unwrap();
        assert!(matches!(r.end, RelayEnd::UpstreamFailed(_)), "{:?}", r.end);
        assert_eq!(r.first_data, 18);
    }
}
