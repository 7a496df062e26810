//! This network namespace's TFO settings: `net.ipv4.tcp_fastopen*` sysctls.
//!
//! Sysctls under `/proc/sys/net` belong to the network namespace of the thread
//! that opens them, so these functions read (and write) the caller's namespace.

use std::fs;
use std::io;

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
    fs::write(MODE_PATH, mode.0.to_string()).map_err(Error::io("writing net.ipv4.tcp_fastopen"))
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
