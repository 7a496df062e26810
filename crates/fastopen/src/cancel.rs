//! [`Cancel`]: one cancellation that every wait of the library honours at once
//! (the blocking connect, the rest of its first data, the handshake's
//! confirmation), so that Ctrl-C stops a program within milliseconds instead
//! of at the end of a connect timeout.
//!
//! It is a flag and a pipe: cancelling sets the flag and writes one byte that
//! is never read, so the pipe's read end stays readable for ever after, and a
//! `poll` on a socket *and* that end wakes on whichever comes first.

use std::io::{PipeReader, PipeWriter, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A cancellation shared by clones: [`cancel`](Cancel::cancel) once, and every
/// wait given a clone ([`crate::Connector::cancel_on`]) ends with
/// [`crate::Error::Cancelled`].
///
/// Call [`cancel`](Cancel::cancel) from a thread (a Ctrl-C handler such as the
/// `ctrlc` crate's, another task), not from inside a raw signal handler.
///
/// ```
/// let cancel = fastopen::Cancel::new()?;
/// let connector = fastopen::Connector::new().cancel_on(Some(cancel.clone()));
/// cancel.cancel();
/// assert!(cancel.is_cancelled());
/// let err = connector.connect("127.0.0.1:9".parse()?, b"hi").unwrap_err();
/// assert!(matches!(err, fastopen::Error::Cancelled), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Cancel(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    cancelled: AtomicBool,
    wake_read: PipeReader,
    wake_write: PipeWriter,
    #[cfg(feature = "tokio")]
    notify: ::tokio::sync::Notify,
}

impl Cancel {
    /// A new cancellation, not cancelled (one pipe, two descriptors).
    pub fn new() -> std::io::Result<Cancel> {
        let (wake_read, wake_write) = std::io::pipe()?;
        Ok(Cancel(Arc::new(Inner {
            cancelled: AtomicBool::new(false),
            wake_read,
            wake_write,
            #[cfg(feature = "tokio")]
            notify: ::tokio::sync::Notify::new(),
        })))
    }

    /// Cancels: every wait that honours this one ends now, and every later
    /// one at once. Calling it again does nothing.
    pub fn cancel(&self) {
        if !self.0.cancelled.swap(true, Ordering::SeqCst) {
            // One byte into an empty pipe never blocks; it is never read, so
            // the read end stays readable. A failure cannot happen while
            // `wake_read` lives, and the flag alone still cancels.
            let _ = (&self.0.wake_write).write(&[1]);
            #[cfg(feature = "tokio")]
            self.0.notify.notify_waiters();
        }
    }

    /// Whether [`cancel`](Cancel::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// A descriptor that becomes readable when cancelled (for your own `poll`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.wake_read.as_fd()
    }

    /// Completes when cancelled (at once if it already is).
    #[cfg(feature = "tokio")]
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the flag is read: a cancel in between still wakes us.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_turns_readable_and_stays_so() {
        let cancel = Cancel::new().unwrap();
        let clone = cancel.clone();
        let poll_now = |c: &Cancel| {
            let mut fds = [nix::poll::PollFd::new(c.fd(), nix::poll::PollFlags::POLLIN)];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap()
        };
        assert_eq!(poll_now(&cancel), 0);
        assert!(!clone.is_cancelled());
        clone.cancel();
        clone.cancel();
        assert!(cancel.is_cancelled());
        assert_eq!(poll_now(&cancel), 1);
        assert_eq!(poll_now(&cancel), 1, "never drained");
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn the_future_completes_after_and_before() {
        let rt = ::tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let cancel = Cancel::new().unwrap();
        let waiter = cancel.clone();
        rt.block_on(async move {
            let task = ::tokio::spawn(async move { waiter.cancelled().await });
            ::tokio::task::yield_now().await;
            cancel.cancel();
            task.await.unwrap();
            cancel.cancelled().await;
        });
    }
}
