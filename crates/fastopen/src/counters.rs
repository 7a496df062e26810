//! The eight `TcpExt TCPFastOpen*` counters of `/proc/net/netstat`.
//!
//! They are per network namespace. A thread that entered another namespace
//! must read `/proc/thread-self/net/netstat` (what [`FastOpenCounters::read`]
//! does), because `/proc/net` follows the process's main thread.

use std::collections::HashMap;
use std::ops::Sub;

/// Where the counters of the calling thread's network namespace live.
pub const NETSTAT_PATH: &str = "/proc/thread-self/net/netstat";

/// A snapshot of the TFO counters of one network namespace.
///
/// A counter the kernel did not list is `0` and its name is in
/// [`FastOpenCounters::missing`] (older kernels lack `PassiveAltKey`, for one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct FastOpenCounters {
    /// Client: a SYN-ACK acknowledged the SYN's data.
    pub active: u64,
    /// Client: the SYN data was not acknowledged, or a TFO socket hit its 3rd RTO.
    pub active_fail: u64,
    /// Server: a connection was created from a SYN with a valid cookie.
    pub passive: u64,
    /// Server: a cookie matched no key, or the child could not be created.
    pub passive_fail: u64,
    /// Server: the TFO queue (`TCP_FASTOPEN` qlen) was full; TFO skipped.
    pub listen_overflow: u64,
    /// Server: a SYN asked for a cookie.
    pub cookie_reqd: u64,
    /// Client: active TFO was disabled for the namespace (blackhole detection).
    pub blackhole: u64,
    /// Server: a cookie matched the backup key.
    pub passive_alt_key: u64,
    /// Names of counters the kernel did not list.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Vec::is_empty"))]
    pub missing: Vec<&'static str>,
}

/// `/proc/net/netstat` had no usable `TcpExt` lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no TcpExt header and value lines of equal length in netstat text")]
pub struct NoTcpExt;

/// Kernel names, in the order of the struct fields.
pub const COUNTER_NAMES: [&str; 8] = [
    "TCPFastOpenActive",
    "TCPFastOpenActiveFail",
    "TCPFastOpenPassive",
    "TCPFastOpenPassiveFail",
    "TCPFastOpenListenOverflow",
    "TCPFastOpenCookieReqd",
    "TCPFastOpenBlackhole",
    "TCPFastOpenPassiveAltKey",
];

impl FastOpenCounters {
    /// Parses the text of `/proc/net/netstat`.
    pub fn parse(netstat: &str) -> Result<FastOpenCounters, NoTcpExt> {
        let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
        let (names, values) = match (lines.next(), lines.next()) {
            (Some(n), Some(v)) => (n, v),
            _ => return Err(NoTcpExt),
        };
        let names: Vec<&str> = names.split_whitespace().skip(1).collect();
        let values: Vec<&str> = values.split_whitespace().skip(1).collect();
        if names.len() != values.len() {
            return Err(NoTcpExt);
        }
        let table: HashMap<&str, u64> =
            names.iter().zip(values).filter_map(|(n, v)| Some((*n, v.parse().ok()?))).collect();
        let mut out = FastOpenCounters::default();
        for name in COUNTER_NAMES {
            match table.get(name) {
                Some(&v) => *out.field_mut(name) = v,
                None => out.missing.push(name),
            }
        }
        Ok(out)
    }

    /// Reads the counters of the calling thread's network namespace.
    pub fn read() -> crate::Result<FastOpenCounters> {
        let text = std::fs::read_to_string(NETSTAT_PATH)
            .map_err(|e| crate::Error::Io { what: "reading /proc/thread-self/net/netstat", source: e })?;
        FastOpenCounters::parse(&text)
            .map_err(|_| crate::Error::Proc { path: NETSTAT_PATH, problem: "no TcpExt counters" })
    }

    /// `(kernel name, value)` pairs in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        COUNTER_NAMES.into_iter().map(|n| (n, self.field(n)))
    }

    /// The counters that are not zero (for printing a delta).
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.iter().filter(|(_, v)| *v != 0)
    }

    fn field(&self, name: &str) -> u64 {
        match name {
            "TCPFastOpenActive" => self.active,
            "TCPFastOpenActiveFail" => self.active_fail,
            "TCPFastOpenPassive" => self.passive,
            "TCPFastOpenPassiveFail" => self.passive_fail,
            "TCPFastOpenListenOverflow" => self.listen_overflow,
            "TCPFastOpenCookieReqd" => self.cookie_reqd,
            "TCPFastOpenBlackhole" => self.blackhole,
            _ => self.passive_alt_key,
        }
    }

    fn field_mut(&mut self, name: &str) -> &mut u64 {
        match name {
            "TCPFastOpenActive" => &mut self.active,
            "TCPFastOpenActiveFail" => &mut self.active_fail,
            "TCPFastOpenPassive" => &mut self.passive,
            "TCPFastOpenPassiveFail" => &mut self.passive_fail,
            "TCPFastOpenListenOverflow" => &mut self.listen_overflow,
            "TCPFastOpenCookieReqd" => &mut self.cookie_reqd,
            "TCPFastOpenBlackhole" => &mut self.blackhole,
            _ => &mut self.passive_alt_key,
        }
    }
}

/// `after - before`, counter by counter (saturating: a counter never goes back,
/// but two snapshots from different namespaces must not panic).
impl Sub for &FastOpenCounters {
    type Output = FastOpenCounters;
    fn sub(self, before: &FastOpenCounters) -> FastOpenCounters {
        let mut out = FastOpenCounters { missing: self.missing.clone(), ..Default::default() };
        for name in COUNTER_NAMES {
            *out.field_mut(name) = self.field(name).saturating_sub(before.field(name));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETSTAT_6_18: &str = "\
TcpExt: SyncookiesSent SyncookiesRecv TCPFastOpenActive TCPFastOpenActiveFail TCPFastOpenPassive TCPFastOpenPassiveFail TCPFastOpenListenOverflow TCPFastOpenCookieReqd TCPFastOpenBlackhole TCPFastOpenPassiveAltKey TCPOrigDataSent
TcpExt: 0 0 5 1 4 2 0 7 0 1 99
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
";

    #[test]
    fn parses_all_eight() {
        let c = FastOpenCounters::parse(NETSTAT_6_18).unwrap();
        assert_eq!((c.active, c.active_fail, c.passive, c.passive_fail), (5, 1, 4, 2));
        assert_eq!((c.listen_overflow, c.cookie_reqd, c.blackhole, c.passive_alt_key), (0, 7, 0, 1));
        assert!(c.missing.is_empty());
        assert_eq!(c.nonzero().count(), 6);
    }

    #[test]
    fn delta() {
        let before = FastOpenCounters::parse(NETSTAT_6_18).unwrap();
        let after = FastOpenCounters::parse(&NETSTAT_6_18.replace("0 0 5 1 4 2 0 7", "0 0 6 1 5 2 0 7")).unwrap();
        let d = &after - &before;
        assert_eq!(d.nonzero().collect::<Vec<_>>(), [("TCPFastOpenActive", 1), ("TCPFastOpenPassive", 1)]);
        // Reversed snapshots saturate instead of wrapping.
        assert_eq!((&before - &after).nonzero().count(), 0);
    }

    #[test]
    fn older_kernel_lacks_alt_key() {
        let text = "TcpExt: TCPFastOpenActive TCPFastOpenPassive\nTcpExt: 3 4\n";
        let c = FastOpenCounters::parse(text).unwrap();
        assert_eq!((c.active, c.passive), (3, 4));
        assert_eq!(c.missing.len(), 6);
        assert!(c.missing.contains(&"TCPFastOpenPassiveAltKey"));
    }

    #[test]
    fn malformed() {
        assert_eq!(FastOpenCounters::parse(""), Err(NoTcpExt));
        assert_eq!(FastOpenCounters::parse("TcpExt: A B\n"), Err(NoTcpExt));
        assert_eq!(FastOpenCounters::parse("TcpExt: A B\nTcpExt: 1\n"), Err(NoTcpExt));
        // A value that is not a number counts as missing, not as zero-by-accident.
        let c = FastOpenCounters::parse("TcpExt: TCPFastOpenActive\nTcpExt: x\n").unwrap();
        assert!(c.missing.contains(&"TCPFastOpenActive"));
    }
}
