//! Child processes that must not outlive the command (servers in a lab, tcpdump).

use std::process::Child;

/// A child process killed and reaped when dropped, also on errors and panics.
#[derive(Debug)]
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
