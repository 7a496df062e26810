//! Child processes that must not outlive the command (servers in a lab, tcpdump).

use std::process::Child;
use std::time::{Duration, Instant};

/// A child process stopped and reaped when dropped, also on errors and
/// panics: SIGTERM first, so it can finish and say what it did (`tfo serve`
/// prints its summary, tcpdump flushes), then SIGKILL after [`GRACE`].
#[derive(Debug)]
pub(crate) struct KillOnDrop(pub(crate) Child);

/// How long a child has to exit after SIGTERM (`tfo serve` drains for 5 s at most).
pub(crate) const GRACE: Duration = Duration::from_secs(6);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + GRACE;
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
