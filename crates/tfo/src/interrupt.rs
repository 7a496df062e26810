//! Ctrl-C (and SIGTERM) for commands that build a lab: the first signal sets a
//! flag that their loops check, so they stop and tear the lab down on the way out.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once per process).
pub(crate) fn install() {
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
}

/// Whether Ctrl-C or SIGTERM arrived.
pub(crate) fn requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Ctrl-C or SIGTERM ended the command (exit 130, as shells report SIGINT).
#[derive(Debug, thiserror::Error)]
#[error("interrupted; the lab was torn down")]
pub(crate) struct Interrupted;

/// An error if Ctrl-C arrived.
pub(crate) fn check() -> Result<(), Interrupted> {
    if requested() {
        return Err(Interrupted);
    }
    Ok(())
}

/// For [`crate::exchange::Limits::cancel`]: stop when Ctrl-C arrived.
pub(crate) fn cancel() -> Option<String> {
    requested().then(|| Interrupted.to_string())
}
