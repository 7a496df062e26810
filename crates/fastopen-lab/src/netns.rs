//! Private network namespaces for one thread.
//!
//! On Linux a network namespace belongs to a thread, not a process:
//! `unshare(CLONE_NEWNET)` moves only the calling thread, and threads and
//! processes it starts afterwards inherit it. So a test (or `tfo demo`) can run
//! in its own namespace, with its own `net.ipv4.tcp_fastopen`, its own cookie
//! cache and counters, while the rest of the process and the host are untouched.
//! The namespace disappears by itself when its last thread and process end,
//! so nothing is left behind, even on panic.

use std::fs;
use std::process::Command;

/// Why a namespace could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// Creating namespaces needs CAP_SYS_ADMIN (run as root).
    #[error("creating a network namespace needs root (CAP_SYS_ADMIN); run with sudo")]
    NotRoot,
    /// `unshare(CLONE_NEWNET)` failed.
    #[error("unshare(CLONE_NEWNET) failed: {0}")]
    Unshare(#[source] nix::Error),
    /// `ip link set lo up` failed or `ip` is missing.
    #[error("bringing loopback up in the new namespace failed ({0}); is iproute2 installed?")]
    LoopbackUp(String),
    /// Writing a sysctl inside the namespace failed.
    #[error("setting {name} in the new namespace failed: {source}")]
    Sysctl {
        /// The sysctl.
        name: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Moves the calling thread into a new network namespace, brings loopback up
/// and sets `net.ipv4.tcp_fastopen` there to `tcp_fastopen` (3 = client and server).
pub fn enter_private(tcp_fastopen: u32) -> Result<(), NetnsError> {
    if !is_root() {
        return Err(NetnsError::NotRoot);
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| NetnsError::LoopbackUp(e.to_string()))?;
    if !status.success() {
        return Err(NetnsError::LoopbackUp(format!("ip exited with {status}")));
    }
    set_sysctl("net.ipv4.tcp_fastopen", &tcp_fastopen.to_string())
}

/// Writes a sysctl in the calling thread's network namespace.
pub fn set_sysctl(name: &'static str, value: &str) -> Result<(), NetnsError> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    fs::write(path, value).map_err(|source| NetnsError::Sysctl { name, source })
}

/// Runs `f` on a new thread inside a fresh private namespace (see [`enter_private`])
/// and returns its result. A panic in `f` is passed on to the caller.
pub fn run_in_private<T: Send>(tcp_fastopen: u32, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            enter_private(tcp_fastopen)?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// For tests that need root: `true` if they can run. Without root, outside CI
/// they are skipped with a message; under `CI=true` this panics, because CI
/// runs as root and a skipped test there would hide a failure.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| v == "true" || v == "1") {
        panic!("{test} needs root, and CI=true: CI runs as root, so this must not be skipped");
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces); run the tests with sudo");
    false
}
