//! This network namespace's TFO settings: `net.ipv4.tcp_fastopen*` sysctls.
//!
//! Sysctls under `/proc/sys/net` belong to the network namespace of the thread
//! that opens them, so these functions read (and write) the caller's namespace.

use std::fs;
use std::io;

use std::fmt;

use crate::counters::FastOpenCounters;
use crate::key::FastOpenKey;
use crate::mode::FastOpenMode;
use crate::{Error, Result};

/// Path of the mode bitmap.
pub const MODE_PATH: &str = "/proc/sys/net/ipv4/tcp_fastopen";
/// Path of the namespace's key(s).
pub const KEY_PATH: &str = "/proc/sys/net/ipv4/tcp_fastopen_key";
/// Path of the blackhole detection timeout.
pub const BLACKHOLE_PATH: &str = "/proc/sys/net/ipv4/tcp_fastopen_blackhole_timeout_sec";

/// Reads `net.ipv4.tcp_fastopen`.
pub fn read_mode() -> Result<FastOpenMode> {
    let text = fs::read_to_string(MODE_PATH).map_err(Error::io("reading net.ipv4.tcp_fastopen"))?;
    FastOpenMode::parse(&text).map_err(|_| Error::Proc { path: MODE_PATH, problem: "not a number" })
}

/// Writes `net.ipv4.tcp_fastopen` (needs CAP_NET_ADMIN in the namespace).
pub fn write_mode(mode: FastOpenMode) -> Result<()> {
    fs::write(MODE_PATH, mode.sysctl_value().to_string()).map_err(Error::io("writing net.ipv4.tcp_fastopen"))
}

/// Reads `net.ipv4.tcp_fastopen_blackhole_timeout_sec` (0 = detection off).
/// `None` on kernels without the sysctl.
pub fn read_blackhole_timeout() -> Result<Option<u64>> {
    match fs::read_to_string(BLACKHOLE_PATH) {
        Ok(t) => t.trim().parse().map(Some).map_err(|_| Error::Proc { path: BLACKHOLE_PATH, problem: "not a number" }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading net.ipv4.tcp_fastopen_blackhole_timeout_sec")(e)),
    }
}

/// The namespace key state, as far as it can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NamespaceKey {
    /// The key file is only readable by root; we are not.
    NotReadable,
    /// All zeros: no key yet (the first TFO listener creates a random one).
    NotSet,
    /// A key is set, with a backup key or not.
    Set {
        /// Whether a backup key is also set.
        has_backup: bool,
    },
}

/// Reads whether `net.ipv4.tcp_fastopen_key` is set (never returns the key itself).
pub fn read_key_state() -> Result<NamespaceKey> {
    match fs::read_to_string(KEY_PATH) {
        Ok(t) => match FastOpenKey::parse_pair(&t) {
            Ok((p, _)) if p.is_zero() => Ok(NamespaceKey::NotSet),
            Ok((_, backup)) => Ok(NamespaceKey::Set { has_backup: backup.is_some_and(|b| !b.is_zero()) }),
            Err(_) => Err(Error::Proc { path: KEY_PATH, problem: "not a key" }),
        },
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(NamespaceKey::NotReadable),
        Err(e) => Err(Error::io("reading net.ipv4.tcp_fastopen_key")(e)),
    }
}

/// The inode number of the initial network namespace (`PROC_NET_INIT_INO`,
/// include/linux/proc_ns.h), fixed since Linux 6.18; before, it was allocated.
const PROC_NET_INIT_INO: u64 = 0xEFFF_FFF9;

/// Whether the calling thread is in the host's network namespace; `None`
/// when it cannot be told. Told by the fixed inode of the initial namespace
/// (Linux 6.18 and later), else by comparing with pid 1's (needs to be able
/// to read `/proc/1/ns/net`, which sandboxes may forbid even to root).
pub fn in_initial_namespace() -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let ours = fs::metadata("/proc/thread-self/ns/net").ok()?;
    // Since 6.18 the initial namespace has a fixed inode: that alone answers.
    // (Comparing with /proc/1 would be wrong in a container with its own pid
    // namespace: its pid 1 shares the container's network namespace.)
    if ours.ino() == PROC_NET_INIT_INO || crate::kernel::KernelFeatures::current().release_at_least(6, 18) {
        return Some(ours.ino() == PROC_NET_INIT_INO);
    }
    // Older kernels: pid 1's namespace, right unless a pid namespace hides the host's init.
    let init = fs::metadata("/proc/1/ns/net").ok()?;
    Some(ours.dev() == init.dev() && ours.ino() == init.ino())
}

/// How to keep a mode after a reboot, which depends on where we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permanence {
    /// The host's namespace: a sysctl.d file.
    SysctlD,
    /// Another namespace (container, `ip netns`): whatever creates it must set the sysctl.
    ThisNamespace,
    /// Unknown (the host's namespace could not be compared): both are said.
    Unknown,
}

impl Permanence {
    /// From [`in_initial_namespace`].
    pub fn of(initial: Option<bool>) -> Permanence {
        match initial {
            Some(true) => Permanence::SysctlD,
            Some(false) => Permanence::ThisNamespace,
            None => Permanence::Unknown,
        }
    }

    /// The sentence that tells how to keep `mode`.
    pub fn how_to_keep(self, mode: FastOpenMode) -> String {
        let sysctl_d = format!(
            "echo 'net.ipv4.tcp_fastopen = {}' | sudo tee /etc/sysctl.d/60-tcp-fastopen.conf",
            mode.sysctl_value()
        );
        let here = format!(
            "this is not the host's network namespace: have whatever creates it set net.ipv4.tcp_fastopen={} (a container runtime's sysctls, or `ip netns exec NAME sysctl -w ...` in its setup); /etc/sysctl.d would change the host",
            mode.sysctl_value()
        );
        match self {
            Permanence::SysctlD => sysctl_d,
            Permanence::ThisNamespace => here,
            Permanence::Unknown => {
                format!("{sysctl_d} (on the host; in a container or `ip netns`, set it where the namespace is made)")
            }
        }
    }
}

/// One piece of advice from [`advise`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Advice {
    /// Client or server TFO is off: turn both on, and keep it.
    TurnOn {
        /// The mode to set.
        wanted: FastOpenMode,
        /// How to keep it after a reboot.
        permanence: Permanence,
    },
    /// 0x400 without 0x2 does nothing.
    AllListenersWithoutServer,
    /// A no-cookie bit is set.
    NoCookieBit,
    /// Blackhole detection disabled client TFO this many times.
    Blackhole(u64),
    /// More failed than successful active TFO attempts.
    MoreFailuresThanSuccesses,
    /// The TFO queue of a listener overflowed.
    ListenOverflow,
}

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Advice::TurnOn { wanted, permanence } => write!(
                f,
                "turn TFO on for this boot: `sysctl -w net.ipv4.tcp_fastopen={}`; to keep it: {}",
                wanted.0,
                permanence.how_to_keep(*wanted)
            ),
            Advice::AllListenersWithoutServer => f.write_str("bit 0x400 (all listeners) does nothing without bit 0x2 (server)"),
            Advice::NoCookieBit => f.write_str(
                "a no-cookie bit is set: SYN data is sent or accepted without the cookie check (only safe inside a trusted network)",
            ),
            Advice::Blackhole(n) => write!(
                f,
                "blackhole detection has disabled client TFO {n} time(s) here: something on a path dropped TFO SYNs; writing net.ipv4.tcp_fastopen re-enables it"
            ),
            Advice::MoreFailuresThanSuccesses => f.write_str(
                "more failed than successful TFO attempts (TCPFastOpenActiveFail): servers or paths here often reject SYN data",
            ),
            Advice::ListenOverflow => f.write_str(
                "TFO queue overflows seen (TCPFastOpenListenOverflow): raise the listener's TFO queue length (TCP_FASTOPEN)",
            ),
        }
    }
}

/// What to do about this namespace's TFO state: pure, from the mode and the counters.
pub fn advise(mode: FastOpenMode, counters: &FastOpenCounters, permanence: Permanence) -> Vec<Advice> {
    let mut advice = Vec::new();
    if !mode.client() || !mode.server() {
        advice.push(Advice::TurnOn { wanted: mode.with_client_and_server(), permanence });
    }
    if mode.server_all_listeners() && !mode.server() {
        advice.push(Advice::AllListenersWithoutServer);
    }
    if mode.client_no_cookie() || mode.server_no_cookie() {
        advice.push(Advice::NoCookieBit);
    }
    if counters.blackhole > 0 {
        advice.push(Advice::Blackhole(counters.blackhole));
    }
    if counters.active_fail > counters.active && counters.active_fail > 0 {
        advice.push(Advice::MoreFailuresThanSuccesses);
    }
    if counters.listen_overflow > 0 {
        advice.push(Advice::ListenOverflow);
    }
    advice
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(netstat_values: &[(&str, u64)]) -> FastOpenCounters {
        let names: Vec<&str> = netstat_values.iter().map(|(n, _)| *n).collect();
        let values: Vec<String> = netstat_values.iter().map(|(_, v)| v.to_string()).collect();
        let text = format!("TcpExt: {}\nTcpExt: {}\n", names.join(" "), values.join(" "));
        FastOpenCounters::parse(&text).unwrap()
    }

    #[test]
    fn advice_from_fixed_state() {
        let quiet = counters(&[("TCPFastOpenActive", 0)]);
        assert_eq!(advise(FastOpenMode(3), &quiet, Permanence::SysctlD), vec![]);
        let off = advise(FastOpenMode(1), &quiet, Permanence::SysctlD);
        assert_eq!(off, vec![Advice::TurnOn { wanted: FastOpenMode(3), permanence: Permanence::SysctlD }]);
        assert!(off[0].to_string().contains("/etc/sysctl.d"));
        let in_netns = advise(FastOpenMode(1), &quiet, Permanence::ThisNamespace);
        assert!(!in_netns[0].to_string().contains("tee /etc/sysctl.d"), "{}", in_netns[0]);
        assert!(in_netns[0].to_string().contains("not the host's network namespace"));
        assert_eq!(advise(FastOpenMode(0x401), &quiet, Permanence::SysctlD)[1], Advice::AllListenersWithoutServer);
        assert_eq!(advise(FastOpenMode(0x203), &quiet, Permanence::SysctlD), vec![Advice::NoCookieBit]);
        let troubled = counters(&[
            ("TCPFastOpenActive", 1),
            ("TCPFastOpenActiveFail", 5),
            ("TCPFastOpenBlackhole", 2),
            ("TCPFastOpenListenOverflow", 7),
        ]);
        assert_eq!(
            advise(FastOpenMode(3), &troubled, Permanence::SysctlD),
            vec![Advice::Blackhole(2), Advice::MoreFailuresThanSuccesses, Advice::ListenOverflow]
        );
    }
}
