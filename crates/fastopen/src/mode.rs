//! `net.ipv4.tcp_fastopen`, the per-network-namespace TFO bitmap, as a typed value.

use std::fmt;

/// The value of `net.ipv4.tcp_fastopen`. A fresh namespace has 1 (client only).
///
/// Unknown bits are kept (see [`FastOpenMode::unknown_bits`]), so that a value
/// read from a newer kernel is never silently changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FastOpenMode(pub u32);

/// One documented bit of `net.ipv4.tcp_fastopen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModeBit {
    /// The bit's value.
    pub value: u32,
    /// The kernel's name for it.
    pub name: &'static str,
    /// What it does, in one sentence.
    pub meaning: &'static str,
}

/// The documented bits, in order (Documentation/networking/ip-sysctl.rst).
pub const MODE_BITS: [ModeBit; 5] = [
    ModeBit {
        value: 0x1,
        name: "client",
        meaning: "clients may send data in the SYN (MSG_FASTOPEN, TCP_FASTOPEN_CONNECT)",
    },
    ModeBit { value: 0x2, name: "server", meaning: "listeners that set TCP_FASTOPEN accept data in the SYN" },
    ModeBit {
        value: 0x4,
        name: "client_no_cookie",
        meaning: "clients send SYN data without any cookie (no TFO option)",
    },
    ModeBit { value: 0x200, name: "server_no_cookie", meaning: "servers accept SYN data with no cookie or any cookie" },
    ModeBit {
        value: 0x400,
        name: "server_all_listeners",
        meaning: "every listener gets TFO at listen(), without TCP_FASTOPEN (needs 0x2)",
    },
];

const KNOWN_BITS: u32 = 0x1 | 0x2 | 0x4 | 0x200 | 0x400;

/// `net.ipv4.tcp_fastopen` did not hold a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("net.ipv4.tcp_fastopen should be a number, found {0:?}")]
pub struct BadMode(pub String);

impl FastOpenMode {
    /// The value the walkthrough sets: client and server.
    pub const CLIENT_AND_SERVER: FastOpenMode = FastOpenMode(0x3);

    /// Parses the text of `/proc/sys/net/ipv4/tcp_fastopen` (decimal, or 0x hex).
    ///
    /// The sysctl is a C `int`: the kernel accepts negative values and reads
    /// them as their bits (`-1` sets every bit), so they are taken the same way.
    pub fn parse(text: &str) -> Result<FastOpenMode, BadMode> {
        let t = text.trim();
        let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => t.parse::<u32>().ok().or_else(|| t.parse::<i32>().ok().map(|v| v as u32)),
        };
        parsed.map(FastOpenMode).ok_or_else(|| BadMode(t.to_string()))
    }

    /// The value as the kernel's `int` reads and takes it (`-4`, not
    /// 4294967292: the kernel refuses values above `i32::MAX`). Use it to
    /// show the value or to write it back.
    pub fn sysctl_value(self) -> i32 {
        self.0 as i32
    }

    /// 0x1: clients may use TFO.
    pub fn client(self) -> bool {
        self.0 & 0x1 != 0
    }
    /// 0x2: listeners that ask for TFO get it.
    pub fn server(self) -> bool {
        self.0 & 0x2 != 0
    }
    /// 0x4: clients send SYN data without a cookie.
    pub fn client_no_cookie(self) -> bool {
        self.0 & 0x4 != 0
    }
    /// 0x200: servers take SYN data without a valid cookie.
    pub fn server_no_cookie(self) -> bool {
        self.0 & 0x200 != 0
    }
    /// 0x400: every listener has TFO (only with 0x2).
    pub fn server_all_listeners(self) -> bool {
        self.0 & 0x400 != 0
    }
    /// Bits this crate does not know (ignored by current kernels, kept as read).
    pub fn unknown_bits(self) -> u32 {
        self.0 & !KNOWN_BITS
    }
    /// The documented bits that are set.
    pub fn set_bits(self) -> impl Iterator<Item = &'static ModeBit> {
        MODE_BITS.iter().filter(move |b| self.0 & b.value != 0)
    }
    /// This value with the client and server bits added.
    pub fn with_client_and_server(self) -> FastOpenMode {
        FastOpenMode(self.0 | 0x3)
    }
}

impl fmt::Display for FastOpenMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#x}", self.sysctl_value(), self.0)?;
        let names: Vec<&str> = self.set_bits().map(|b| b.name).collect();
        if names.is_empty() {
            f.write_str(": TFO off")?;
        } else {
            write!(f, ": {}", names.join(" + "))?;
        }
        if self.unknown_bits() != 0 {
            write!(f, " + unknown {:#x}", self.unknown_bits())?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_namespace_is_client_only() {
        let m = FastOpenMode::parse("1\n").unwrap();
        assert!(m.client() && !m.server());
        assert_eq!(m.to_string(), "1 (0x1: client)");
    }

    #[test]
    fn walkthrough_value_and_all_bits() {
        let m = FastOpenMode::parse("3").unwrap();
        assert!(m.client() && m.server() && !m.client_no_cookie());
        let all = FastOpenMode::parse("0x607").unwrap();
        assert_eq!(all.0, 0x607);
        assert!(all.client_no_cookie() && all.server_no_cookie() && all.server_all_listeners());
        assert_eq!(all.set_bits().count(), 5);
        assert_eq!(all.unknown_bits(), 0);
    }

    #[test]
    fn unknown_bits_are_kept() {
        let m = FastOpenMode::parse("4099").unwrap(); // 0x1003
        assert_eq!(m.unknown_bits(), 0x1000);
        assert_eq!(m.to_string(), "4099 (0x1003: client + server + unknown 0x1000)");
        assert_eq!(FastOpenMode(0).to_string(), "0 (0x0: TFO off)");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(FastOpenMode::parse("").is_err());
        assert!(FastOpenMode::parse("three").is_err());
        // The kernel accepts -1 (an int with every bit set): client and server are on.
        let minus_four = FastOpenMode::parse("-4").unwrap();
        assert_eq!(minus_four.sysctl_value(), -4);
        assert!(minus_four.to_string().starts_with("-4 (0xfffffffc"), "{minus_four}");
        assert_eq!(minus_four.with_client_and_server().sysctl_value(), -1, "advised as the kernel takes it");
        let all = FastOpenMode::parse("-1").unwrap();
        assert_eq!(all.0, u32::MAX);
        assert!(all.client() && all.server());
        assert!(FastOpenMode::parse("-99999999999").is_err());
        assert!(FastOpenMode::parse("0xZZ").is_err());
    }

    #[test]
    fn enabling_keeps_other_bits() {
        assert_eq!(FastOpenMode(0x400).with_client_and_server(), FastOpenMode(0x403));
    }
}
