//! What the benches share: settings from the environment, the root check
//! with its namespace, and CPU time from getrusage.

use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};

/// A numeric setting from the environment, or its default.
pub(crate) fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Exits unless run as root (a private namespace is needed); `--list` (cargo's
/// bench discovery) exits at once.
pub(crate) fn root_or_exit(bench: &str) {
    if std::env::args().any(|a| a == "--list") {
        std::process::exit(0);
    }
    if !fastopen_lab::netns::is_root() {
        eprintln!("{bench} bench: needs root (a private namespace); run it with sudo");
        std::process::exit(2);
    }
}

/// CPU time (user + system) of `who` so far.
#[allow(dead_code)] // not every bench measures CPU
pub(crate) fn cpu(who: UsageWho) -> Duration {
    let u = getrusage(who).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(u.user_time()) + t(u.system_time())
}
