//! Early data: a request that came in the SYN may be a replay (a duplicated
//! or re-sent SYN creates a new connection and delivers the data again). This
//! module owns the answer TLS 1.3 gives to 0-RTT (RFC 8470): per request,
//! run it at once, refuse it (`425 Too Early`), or wait until the client's
//! final ACK confirms the handshake, which a replay's sender never sends.
//!
//! - [`EarlyDataPolicy`] and [`Admission`]: the decision, for any protocol
//!   ([`admit`] on a socket; the CLI's raw echo uses it).
//! - [`Handshake`]: a per-connection handle request handlers can keep.
//! - Feature `tower`: [`EarlyData`] (the policy plus which HTTP methods are
//!   safe) and [`EarlyDataLayer`], a tower layer for hyper, axum or tonic
//!   services; see the [`tower_layer`] example below.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::confirm::{handshake_state, wait_confirmed_async, Confirmation};
use crate::tcp_info::HandshakeState;

#[cfg(feature = "tower")]
mod tower_layer;
#[cfg(feature = "tower")]
pub use tower_layer::{EarlyData, EarlyDataLayer, EarlyDataService};

/// What a server does with data that came in the SYN before its handshake is
/// confirmed (it may be a replay): RFC 8470's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "snake_case"))]
pub enum EarlyDataPolicy {
    /// Handle it once the client's final ACK confirms the handshake (a replay
    /// never is: it is dropped unhandled). Costs the round trip TFO saved.
    Wait,
    /// Refuse it (HTTP: `425 Too Early`, and the client retries).
    Reject,
    /// Handle it at once (unsafe: a replayed SYN is handled too).
    Allow,
}

/// The answer for one use of a connection's early data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The handshake is confirmed (at once, or after waiting): handle it.
    Confirmed,
    /// Not confirmed yet, handled anyway: the policy allows it, or the request
    /// is safe to repeat. Mark it (`Early-Data: 1`).
    Early,
    /// Not confirmed yet, and the policy is [`EarlyDataPolicy::Reject`].
    TooEarly,
    /// Never confirmed: the client reset it (what a replay's sender does) or
    /// the wait timed out. Nobody will read an answer; drop it unhandled.
    NeverConfirmed(Confirmation),
}

impl Admission {
    /// Whether the data may be handled.
    pub fn runs(self) -> bool {
        matches!(self, Admission::Confirmed | Admission::Early)
    }
}

/// Applies `policy` to the data of `socket` (an accepted connection). With
/// [`EarlyDataPolicy::Wait`] this waits for the client's final ACK, at most
/// `timeout`; a connection whose data did not come in the SYN is confirmed
/// already and never waits.
pub async fn admit(socket: &impl AsFd, policy: EarlyDataPolicy, timeout: Duration) -> crate::Result<Admission> {
    Ok(match (handshake_state(socket)?, policy) {
        (HandshakeState::Confirmed, _) => Admission::Confirmed,
        (_, EarlyDataPolicy::Allow) => Admission::Early,
        (HandshakeState::Failed, _) => Admission::NeverConfirmed(Confirmation::Failed),
        (HandshakeState::Pending, EarlyDataPolicy::Reject) => Admission::TooEarly,
        (HandshakeState::Pending, EarlyDataPolicy::Wait) => match wait_confirmed_async(socket, timeout).await? {
            Confirmation::Confirmed { .. } => Admission::Confirmed,
            never => Admission::NeverConfirmed(never),
        },
    })
}

/// A handle on a connection's handshake, for request handlers: is it
/// confirmed (the client's final ACK arrived), and waiting until it is.
///
/// Only a handshake still pending holds a descriptor (a duplicate of the
/// socket's), and only until it settles: a connection confirmed at accept,
/// as most are, costs no descriptor, and a duplicate never keeps a closed
/// connection's socket open for long.
#[derive(Debug, Clone)]
pub struct Handshake(Arc<std::sync::Mutex<Tracked>>);

#[derive(Debug)]
enum Tracked {
    Settled(HandshakeState),
    Pending(Arc<OwnedFd>),
}

impl Handshake {
    /// The handshake of an accepted connection.
    pub fn of(socket: &impl AsFd) -> io::Result<Handshake> {
        let tracked = match handshake_state(socket).map_err(io::Error::from)? {
            HandshakeState::Pending => Tracked::Pending(Arc::new(socket.as_fd().try_clone_to_owned()?)),
            settled => Tracked::Settled(settled),
        };
        Ok(Handshake(Arc::new(std::sync::Mutex::new(tracked))))
    }

    /// The descriptor of a handshake still pending, or its settled state.
    fn pending(&self) -> Result<Arc<OwnedFd>, HandshakeState> {
        let tracked = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &*tracked {
            Tracked::Settled(state) => Err(*state),
            Tracked::Pending(fd) => Ok(fd.clone()),
        }
    }

    /// Records a state: once settled, the descriptor is let go.
    fn settle(&self, state: HandshakeState) {
        if state != HandshakeState::Pending {
            *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Tracked::Settled(state);
        }
    }

    /// Whether this handle still holds a descriptor (its handshake pending).
    pub fn holds_descriptor(&self) -> bool {
        self.pending().is_ok()
    }

    /// Where the handshake stands now.
    pub fn state(&self) -> crate::Result<HandshakeState> {
        match self.pending() {
            Err(settled) => Ok(settled),
            Ok(fd) => {
                let state = handshake_state(&*fd)?;
                self.settle(state);
                Ok(state)
            }
        }
    }

    /// Waits until it is confirmed, fails, or `timeout` passes.
    pub async fn confirmed(&self, timeout: Duration) -> crate::Result<Confirmation> {
        match self.pending() {
            Err(HandshakeState::Failed) => Ok(Confirmation::Failed),
            Err(_) => Ok(Confirmation::Confirmed { waited: Duration::ZERO }),
            Ok(fd) => {
                let end = wait_confirmed_async(&*fd, timeout).await?;
                match end {
                    Confirmation::Confirmed { .. } => self.settle(HandshakeState::Confirmed),
                    Confirmation::Failed => self.settle(HandshakeState::Failed),
                    Confirmation::TimedOut => {}
                }
                Ok(end)
            }
        }
    }

    /// [`admit`] on this connection.
    pub async fn admit(&self, policy: EarlyDataPolicy, timeout: Duration) -> crate::Result<Admission> {
        match self.pending() {
            Err(HandshakeState::Failed) => Ok(Admission::NeverConfirmed(Confirmation::Failed)),
            Err(_) => Ok(Admission::Confirmed),
            Ok(fd) => {
                let admission = admit(&*fd, policy, timeout).await?;
                if let Ok(state) = handshake_state(&*fd) {
                    self.settle(state);
                }
                Ok(admission)
            }
        }
    }
}

impl std::fmt::Display for EarlyDataPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EarlyDataPolicy::Wait => "wait",
            EarlyDataPolicy::Reject => "reject",
            EarlyDataPolicy::Allow => "allow",
        })
    }
}
