//! What the running kernel supports, probed once.

use std::sync::OnceLock;

/// A kernel version `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct KernelVersion {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl KernelVersion {
    /// Parses a `uname -r` release such as `6.18.44-foo`.
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(KernelVersion { major, minor })
    }

    const fn at_least(self, major: u32, minor: u32) -> bool {
        self.major > major || (self.major == major && self.minor >= minor)
    }
}

/// TFO features of the running kernel, by version (probed once per process).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct KernelFeatures {
    /// `uname -r`.
    pub release: String,
    /// Parsed version, if the release string has one.
    pub version: Option<KernelVersion>,
    /// `TCP_FASTOPEN_CONNECT` (4.11).
    pub fastopen_connect: bool,
    /// `TCP_FASTOPEN_KEY` and `TCP_FASTOPEN_NO_COOKIE` (4.15).
    pub per_socket_key: bool,
    /// A backup key beside the primary one (5.3).
    pub backup_key: bool,
    /// `tcpi_fastopen_client_fail` in `tcp_info` (5.5).
    pub client_fail_reason: bool,
    /// `TCPI_OPT_TFO_CHILD` in `tcp_info` (6.16).
    pub tfo_child_flag: bool,
}

impl KernelFeatures {
    /// Features implied by a release string.
    pub fn from_release(release: &str) -> KernelFeatures {
        let version = KernelVersion::parse(release);
        let has = |maj, min| version.is_some_and(|v| v.at_least(maj, min));
        KernelFeatures {
            release: release.to_string(),
            version,
            fastopen_connect: has(4, 11),
            per_socket_key: has(4, 15),
            backup_key: has(5, 3),
            client_fail_reason: has(5, 5),
            tfo_child_flag: has(6, 16),
        }
    }

    /// Whether the kernel is at least `major.minor` (`false` when unknown).
    pub fn release_at_least(&self, major: u32, minor: u32) -> bool {
        self.version.is_some_and(|v| v.at_least(major, minor))
    }

    /// The running kernel's features (cached).
    pub fn current() -> &'static KernelFeatures {
        static CURRENT: OnceLock<KernelFeatures> = OnceLock::new();
        CURRENT.get_or_init(|| KernelFeatures::from_release(&crate::sys::kernel_release().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(KernelVersion::parse("6.18.44-fc-v669"), Some(KernelVersion { major: 6, minor: 18 }));
        assert_eq!(KernelVersion::parse("5.4"), Some(KernelVersion { major: 5, minor: 4 }));
        assert_eq!(KernelVersion::parse("garbage"), None);
        assert_eq!(KernelVersion::parse(""), None);
    }

    #[test]
    fn feature_thresholds() {
        let f = KernelFeatures::from_release("6.18.44");
        assert!(f.fastopen_connect && f.client_fail_reason && f.tfo_child_flag);
        let f = KernelFeatures::from_release("5.4.0-150-generic");
        assert!(f.backup_key && !f.client_fail_reason && !f.tfo_child_flag);
        let f = KernelFeatures::from_release("6.15.2");
        assert!(f.client_fail_reason && !f.tfo_child_flag);
        let f = KernelFeatures::from_release("weird");
        assert!(!f.fastopen_connect);
    }
}
