//! The one cancellation of the CLI: the first Ctrl-C, SIGTERM (or SIGHUP,
//! for the commands that install it so) cancels one [`fastopen::Cancel`] that
//! every wait honours within 100 ms: the library's connects and writes (the
//! token is given to every `Connector`), the exchanges' polls, file and FIFO
//! reads ([`CancellableRead`]), child waits, and the async runs (`cancelled()`).
//! The command then says what it did on the way out (exit 130).

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::OnceLock;

use nix::poll::{PollFd, PollFlags, PollTimeout};

/// The process's cancellation (made on first use).
fn token_ref() -> &'static fastopen::Cancel {
    static TOKEN: OnceLock<fastopen::Cancel> = OnceLock::new();
    TOKEN.get_or_init(|| fastopen::Cancel::new().expect("a pipe for the cancellation"))
}

/// What the interrupted command did on the way out ("the lab was torn down").
static AFTER: OnceLock<&'static str> = OnceLock::new();

/// Installs the handler (once per process) for commands without a lab.
pub(crate) fn install() {
    install_saying("");
}

/// Installs the handler; `after` ends the "interrupted" message (what the
/// command cleaned up), e.g. "the lab was torn down".
pub(crate) fn install_saying(after: &'static str) {
    let _ = AFTER.set(after);
    let token = token_ref().clone();
    let _ = ctrlc::set_handler(move || token.cancel());
}

/// A clone of the process's cancellation, for a `Connector` or a select.
pub(crate) fn token() -> fastopen::Cancel {
    token_ref().clone()
}

/// Whether Ctrl-C or SIGTERM arrived.
pub(crate) fn requested() -> bool {
    token_ref().is_cancelled()
}

/// Ctrl-C or SIGTERM ended the command (exit 130, as shells report SIGINT).
#[derive(Debug, thiserror::Error)]
#[error("interrupted{}", match AFTER.get() { Some(a) if !a.is_empty() => format!("; {a}"), _ => String::new() })]
pub(crate) struct Interrupted;

/// An error if Ctrl-C arrived.
pub(crate) fn check() -> Result<(), Interrupted> {
    if requested() {
        return Err(Interrupted);
    }
    Ok(())
}

/// For [`fastopen_tools::exchange::Limits::cancel`]: stop when Ctrl-C arrived.
pub(crate) fn cancel() -> Option<String> {
    requested().then(|| Interrupted.to_string())
}

/// An exchange's limits for the CLI: `timeout` from now, stopped by Ctrl-C
/// (its connect's wait at once, the exchange within 100 ms).
pub(crate) fn limits(
    timeout: std::time::Duration,
    until: fastopen_tools::exchange::Until,
) -> fastopen_tools::exchange::Limits<'static> {
    fastopen_tools::exchange::Limits {
        cancel: &cancel,
        token: Some(token()),
        ..fastopen_tools::exchange::Limits::new(timeout, until)
    }
}

/// A reader (a file, a FIFO, a pipe, standard input) whose every read waits
/// for data *or* the cancellation, so that a writer that never shows up (a
/// FIFO) or stalls cannot hold the command past Ctrl-C.
pub(crate) struct CancellableRead<R> {
    inner: R,
}

impl<R: Read + AsFd> CancellableRead<R> {
    pub(crate) fn new(inner: R) -> Self {
        CancellableRead { inner }
    }
}

impl<R: Read + AsFd> Read for CancellableRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if requested() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, Interrupted));
            }
            let token = token_ref();
            let mut fds =
                [PollFd::new(self.inner.as_fd(), PollFlags::POLLIN), PollFd::new(token.fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Ok(_) if fds[1].any().unwrap_or(false) => continue,
                Ok(_) => return self.inner.read(buf),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Opens `path` for reading without blocking in open(2) (a FIFO without a
/// writer would hold it there, deaf to Ctrl-C); reads then wait as
/// [`CancellableRead`] does.
pub(crate) fn open_for_reading(path: &std::path::Path) -> io::Result<CancellableRead<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc_nonblock()).open(path)?;
    // Back to blocking reads: the poll before each one does the waiting.
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(CancellableRead::new(file))
}

fn libc_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}
