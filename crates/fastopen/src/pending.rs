//! TFO connects for an event loop of your own (mio, raw epoll, io_uring):
//! [`Connector::start_connect`] sends the SYN, with the first data in it when
//! the kernel takes it, and returns at once; the loop waits for the socket to
//! be writable however it likes; [`Connector::finish_connect`] then says how
//! the handshake went, the same [`ClientOutcome`] as the blocking and tokio
//! APIs. Nothing here waits, allocates per connection or starts a thread.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use crate::client::Started;
use crate::outcome::ClientOutcome;
use crate::{Connector, Error, Result};

/// A client connection whose SYN has left, its handshake not yet answered.
///
/// Register its descriptor ([`AsRawFd`]) for writability with the event loop;
/// when it is writable (or the loop reports an error or hang-up on it), hand
/// it to [`Connector::finish_connect`]. Dropping it closes the socket.
#[derive(Debug)]
pub struct PendingConnect {
    started: Started,
    addr: SocketAddr,
    first_len: usize,
}

impl PendingConnect {
    /// Bytes of the first data the kernel already has (they rode in the SYN,
    /// or will with `TCP_FASTOPEN_CONNECT`). Write the rest once connected.
    pub fn written(&self) -> usize {
        self.started.written
    }

    /// The server address.
    pub fn peer(&self) -> SocketAddr {
        self.addr
    }
}

impl AsFd for PendingConnect {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.started.socket.as_fd()
    }
}

impl AsRawFd for PendingConnect {
    fn as_raw_fd(&self) -> RawFd {
        self.started.socket.as_raw_fd()
    }
}

impl Connector {
    /// Starts a connection to `addr` without waiting: a non-blocking socket,
    /// its SYN sent with as much of `first_data` as the kernel puts in it
    /// ([`PendingConnect::written`]; none without a cookie, which the SYN then
    /// asks for). With no data, a plain connect ([`crate::FailReason::NoData`]).
    /// The connector's timeout and [`Cancel`](crate::Cancel) are the loop's to
    /// apply: this returns before either could matter.
    pub fn start_connect(&self, addr: SocketAddr, first_data: &[u8]) -> Result<PendingConnect> {
        if self.cancellation().is_some_and(crate::Cancel::is_cancelled) {
            return Err(Error::Cancelled);
        }
        let started = self.start(addr, first_data, false)?;
        Ok(PendingConnect { started, addr, first_len: first_data.len() })
    }

    /// The handshake's result, once the pending socket is writable: the
    /// connect's error (refused, unreachable, ...), or the stream (still
    /// non-blocking, the same descriptor: its registration stays valid) and
    /// whether the data rode in the SYN. Called before the socket is writable,
    /// the outcome is not yet known: wait for writability first.
    pub fn finish_connect(&self, pending: PendingConnect) -> Result<(TcpStream, ClientOutcome)> {
        let PendingConnect { started, addr, first_len } = pending;
        let outcome = self.finish(&started.socket, started.attempt, started.started_at, addr, first_len)?;
        Ok((started.socket.into(), outcome))
    }
}
