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

/// An error if Ctrl-C arrived.
pub(crate) fn check() -> anyhow::Result<()> {
    if requested() {
        anyhow::bail!("interrupted; the lab was torn down");
    }
    Ok(())
}
