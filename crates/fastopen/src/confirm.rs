//! Is an accepted connection's handshake confirmed? Data in the SYN can
//! arrive twice (a duplicated or replayed SYN creates a new connection and
//! delivers its data at once); a replay's sender cannot complete the
//! handshake, so waiting for the client's final ACK before acting on a
//! request filters every such replay, at the cost of the round trip TFO
//! saved. This is TLS 0-RTT's answer (RFC 8446 §8, RFC 8470) brought to TFO.
//!
//! The kernel: a TFO child is created at SYN time in SYN_RECV, readable and
//! writable at once; `tcpi_state` becomes ESTABLISHED when the ACK arrives
//! (`tcp_rcv_state_process`, which also calls `sk_state_change` and so wakes
//! the socket's wait queue), or CLOSE when the real client answers the
//! SYN-ACK with a reset.
//!
//! Waiting costs no CPU: a private epoll instance watches the socket
//! edge-triggered, so the wake-up of the state change ends the wait even
//! though the socket is already readable and writable (other wake-ups, such
//! as more data, only cause a re-check).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::socket_info::read_tcp_info;
use crate::tcp_info::HandshakeState;
use crate::{sys, Error, Result};

/// How a wait for confirmation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Confirmation {
    /// Confirmed, after this long of waiting (zero if it already was).
    Confirmed {
        /// The time spent waiting.
        waited: Duration,
    },
    /// Reset or closed before confirmation.
    Failed,
    /// Not confirmed within the timeout.
    TimedOut,
}

impl Confirmation {
    /// Whether the handshake was confirmed.
    pub fn is_confirmed(self) -> bool {
        matches!(self, Confirmation::Confirmed { .. })
    }
}

/// The handshake state of an accepted connection, now.
pub fn handshake_state(socket: &impl AsFd) -> Result<HandshakeState> {
    Ok(HandshakeState::from_tcp_info(&read_tcp_info(socket)?))
}

/// The end of a wait that started at `start`, if the handshake has settled.
fn settled(socket: &impl AsFd, start: Instant) -> Result<Option<Confirmation>> {
    Ok(match handshake_state(socket)? {
        HandshakeState::Confirmed => Some(Confirmation::Confirmed { waited: start.elapsed() }),
        HandshakeState::Failed => Some(Confirmation::Failed),
        HandshakeState::Pending => None,
    })
}

/// Waits (blocking) until the handshake is confirmed, fails, or `timeout` passes.
pub fn wait_confirmed(socket: &impl AsFd, timeout: Duration) -> Result<Confirmation> {
    let start = Instant::now();
    // Most handshakes are over by now: no watch for those.
    if let Some(end) = settled(socket, start)? {
        return Ok(end);
    }
    // Watch first, then look again: a state change after the look still wakes the wait.
    let watch = sys::StateWatch::new(socket.as_fd()).map_err(Error::io("watching the socket"))?;
    loop {
        if let Some(end) = settled(socket, start)? {
            return Ok(end);
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Ok(Confirmation::TimedOut);
        }
        watch.wait(left).map_err(Error::io("waiting for the handshake's ACK"))?;
    }
}

/// Waits (async, tokio) until the handshake is confirmed, fails, or `timeout` passes.
#[cfg(feature = "tokio")]
pub async fn wait_confirmed_async(socket: &impl AsFd, timeout: Duration) -> Result<Confirmation> {
    let start = Instant::now();
    // Most handshakes are over by now: no watch (an epoll and two registrations) for those.
    if let Some(end) = settled(socket, start)? {
        return Ok(end);
    }
    // Watch first, then look again: a state change after the look still wakes the wait.
    let watch = sys::StateWatch::new(socket.as_fd()).map_err(Error::io("watching the socket"))?;
    let watch = sys::AsyncStateWatch::new(watch).map_err(Error::io("registering the watch with tokio"))?;
    loop {
        if let Some(end) = settled(socket, start)? {
            return Ok(end);
        }
        let left = timeout.saturating_sub(start.elapsed());
        match ::tokio::time::timeout(left, watch.next()).await {
            Err(_) => return Ok(Confirmation::TimedOut),
            Ok(woken) => woken.map_err(Error::io("waiting for the handshake's ACK"))?,
        }
    }
}

/// Waits (tokio) for the confirmation of a connection that is done with:
/// answered, and shut down if the FIN should not wait. For a log line or a
/// metric about a connection whose data came in the SYN. Cheaper than
/// [`wait_confirmed_async`]: no epoll of its own, the stream's registration
/// with tokio's reactor wakes the wait, and only when the client sends
/// something or closes (its FIN comes after its ACK), not at each state
/// change (our own FIN's, the ACK's): one wake-up per connection, where
/// waiting for the ACK itself took two or three. A client that acknowledges
/// and then holds its side open is looked at once more at `timeout`, so the
/// answer is right either way, only later. Reading the stream's readiness
/// would stall later reads, so the stream is taken, and closed when this
/// returns.
#[cfg(feature = "tokio")]
pub async fn confirmation_at_close(stream: ::tokio::net::TcpStream, timeout: Duration) -> Result<Confirmation> {
    let start = Instant::now();
    let deadline = ::tokio::time::Instant::now() + timeout;
    loop {
        // Look; if not settled, clear the readiness this look saw (a wake-up
        // after it is kept), so the next wake-up of the socket ends the wait.
        let looked = stream.try_io(::tokio::io::Interest::READABLE, || match settled(&stream, start) {
            Ok(Some(end)) => Ok(Ok(end)),
            Ok(None) => Err(std::io::ErrorKind::WouldBlock.into()),
            Err(e) => Ok(Err(e)),
        });
        match looked {
            Ok(result) => return result,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Error::io("waiting for the handshake's ACK")(e)),
        }
        match ::tokio::time::timeout_at(deadline, stream.readable()).await {
            // The last look: an ACK without a FIN after it.
            Err(_) => return Ok(settled(&stream, start)?.unwrap_or(Confirmation::TimedOut)),
            Ok(woken) => woken.map_err(Error::io("waiting for the handshake's ACK"))?,
        }
    }
}
