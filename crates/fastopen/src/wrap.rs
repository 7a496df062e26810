//! The contract between `tfo wrap` and its preload shim (`fastopen-preload`):
//! the settings handed to the shim in the environment ([`WrapConfig`]), the
//! fixed-size record the shim writes for each connection ([`Record`]), and
//! what a record means ([`WrappedOutcome`], [`WrapSummary`]).
//!
//! Pure code, no I/O. The shim encodes records inside interposed libc calls
//! (which may run in a signal handler), so [`encode`] writes into a caller's
//! fixed buffer and never allocates; a record is shorter than `PIPE_BUF`, so
//! one `write(2)` to a pipe delivers it whole, never interleaved with another
//! process's record.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::outcome::FailReason;
use crate::sock_diag::Role;
use crate::tcp_info::TcpInfo;

/// The environment variable that carries a [`WrapConfig`] to the shim.
pub const CONFIG_ENV: &str = "TFOKIT_WRAP";

/// Ports as a list of single ports and ranges (`80,443,8000-8100`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
}

/// A port list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a port list: give ports and ranges separated by commas, e.g. 80,443,8000-8100")]
pub struct BadPortList(pub String);

impl PortSet {
    /// Parses `80,443,8000-8100` (ports 1-65535; a range's start at most its end).
    pub fn parse(text: &str) -> Result<PortSet, BadPortList> {
        let bad = || BadPortList(text.to_string());
        let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p != 0);
        let mut ranges = Vec::new();
        for item in text.split(',') {
            let range = match item.split_once('-') {
                Some((a, b)) => (port(a).ok_or_else(bad)?, port(b).ok_or_else(bad)?),
                None => {
                    let p = port(item).ok_or_else(bad)?;
                    (p, p)
                }
            };
            if range.0 > range.1 {
                return Err(bad());
            }
            ranges.push(range);
        }
        Ok(PortSet { ranges })
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&port))
    }

    /// No port at all.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// What the shim does in a wrapped program, as `tfo wrap`'s flags set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapConfig {
    /// Give outgoing TCP connections TFO (`TCP_FASTOPEN_CONNECT`).
    pub client: bool,
    /// Give listening TCP sockets TFO (`TCP_FASTOPEN` with [`WrapConfig::queue`]).
    pub server: bool,
    /// The TFO queue length of a wrapped listener.
    pub queue: u32,
    /// Only these ports (a client's destination, a listener's own); empty: all.
    pub ports: PortSet,
    /// Never these ports.
    pub exclude: PortSet,
    /// The descriptor the records go to (the write end of `tfo wrap`'s pipe).
    pub report_fd: Option<i32>,
}

/// The value of [`CONFIG_ENV`] does not parse: the shim then does nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{CONFIG_ENV} does not parse: {0}")]
pub struct BadConfig(String);

impl WrapConfig {
    /// Whether a connection to, or a listener on, `port` is wrapped.
    pub fn wants_port(&self, port: u16) -> bool {
        (self.ports.is_empty() || self.ports.contains(port)) && !self.exclude.contains(port)
    }

    /// The value of [`CONFIG_ENV`] for these settings.
    pub fn to_env(&self) -> String {
        let fd = self.report_fd.map_or_else(|| "-".to_string(), |fd| fd.to_string());
        format!(
            "v1 client={} server={} queue={} fd={fd} ports={} exclude={}",
            u8::from(self.client),
            u8::from(self.server),
            self.queue,
            self.ports,
            self.exclude
        )
    }

    /// Parses what [`WrapConfig::to_env`] wrote.
    pub fn from_env(text: &str) -> Result<WrapConfig, BadConfig> {
        let mut words = text.split_whitespace();
        if words.next() != Some("v1") {
            return Err(BadConfig("not version v1".into()));
        }
        let mut config = WrapConfig {
            client: false,
            server: false,
            queue: 0,
            ports: PortSet::default(),
            exclude: PortSet::default(),
            report_fd: None,
        };
        for word in words {
            let (key, value) = word.split_once('=').ok_or_else(|| BadConfig(format!("`{word}` has no `=`")))?;
            let flag = || match value {
                "0" => Ok(false),
                "1" => Ok(true),
                _ => Err(BadConfig(format!("{key}={value}"))),
            };
            let ports = || if value.is_empty() { Ok(PortSet::default()) } else { PortSet::parse(value) };
            match key {
                "client" => config.client = flag()?,
                "server" => config.server = flag()?,
                "queue" => config.queue = value.parse().map_err(|_| BadConfig(format!("queue={value}")))?,
                "fd" if value == "-" => config.report_fd = None,
                "fd" => config.report_fd = Some(value.parse().map_err(|_| BadConfig(format!("fd={value}")))?),
                "ports" => config.ports = ports().map_err(|e| BadConfig(e.to_string()))?,
                "exclude" => config.exclude = ports().map_err(|e| BadConfig(e.to_string()))?,
                _ => {} // a later version's setting: ignored
            }
        }
        Ok(config)
    }
}

/// The length of every record.
pub const RECORD_LEN: usize = 736;
/// The most `tcp_info` bytes a record keeps (280 on Linux 6.18).
pub const MAX_TCP_INFO: usize = 320;
const MAGIC: u32 = u32::from_be_bytes(*b"TFOW");
const VERSION: u8 = 1;
const OFF_LOCAL: usize = 40;
const OFF_PEER: usize = 64;
const OFF_INFO: usize = 92;
const OFF_AT_ACCEPT: usize = OFF_INFO + MAX_TCP_INFO;
const ADDR_LEN: usize = 24;

/// What a record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// The shim loaded in a process (one per process image).
    Hello,
    /// A connection closed (or was still open when the process exited).
    Connection,
}

/// Flags of a connection record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordFlags(pub u8);

impl RecordFlags {
    /// `connect()` was deferred: a cookie was cached, so the SYN was to carry it.
    pub const DEFERRED: u8 = 0x01;
    /// The program read (or waited to read) before writing: the shim started
    /// the handshake with an empty send, a SYN with the cookie and no data.
    pub const KICKED: u8 = 0x02;
    /// Still open when the process exited; reported then.
    pub const AT_EXIT: u8 = 0x04;

    /// Whether `flag` is set.
    pub fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }
}

/// The fixed part of a record, as the shim fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    /// Hello or connection.
    pub kind: RecordKind,
    /// Which end the process is.
    pub role: Role,
    /// See [`RecordFlags`].
    pub flags: RecordFlags,
    /// The process that wrote the record.
    pub pid: u32,
    /// Records this process could not deliver before this one (a full pipe).
    pub dropped: u32,
    /// The socket's inode: the same socket closed in two processes (after a
    /// fork) is reported by both; the reader keeps the first.
    pub inode: u64,
    /// The process name (`comm`, 15 bytes at most).
    pub comm: [u8; 16],
}

fn put_addr(out: &mut [u8], addr: Option<SocketAddr>) {
    out.fill(0);
    let Some(addr) = addr else { return };
    out[2..4].copy_from_slice(&addr.port().to_ne_bytes());
    match addr {
        SocketAddr::V4(a) => {
            out[0] = 4;
            out[4..8].copy_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out[0] = 6;
            out[4..20].copy_from_slice(&a.ip().octets());
            out[20..24].copy_from_slice(&a.scope_id().to_ne_bytes());
        }
    }
}

fn get_addr(b: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_ne_bytes([b[2], b[3]]);
    match b[0] {
        4 => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])), port)),
        6 => {
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&b[4..20]).ok()?);
            let scope = u32::from_ne_bytes(b[20..24].try_into().ok()?);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(ip, port, 0, scope)))
        }
        _ => None,
    }
}

/// Writes one record into `buf`: the head, both ends, the `tcp_info` read at
/// the close (`info`) and, for a server, the one read at accept (`at_accept`).
/// `tcp_info` longer than [`MAX_TCP_INFO`] is cut. Never allocates.
pub fn encode(
    buf: &mut [u8; RECORD_LEN],
    head: &RecordHead,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    info: &[u8],
    at_accept: &[u8],
) {
    buf.fill(0);
    buf[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
    buf[4] = VERSION;
    buf[5] = match head.kind {
        RecordKind::Hello => 1,
        RecordKind::Connection => 2,
    };
    buf[6] = match head.role {
        Role::Client => 0,
        Role::Server => 1,
    };
    buf[7] = head.flags.0;
    buf[8..12].copy_from_slice(&head.pid.to_ne_bytes());
    buf[12..16].copy_from_slice(&head.dropped.to_ne_bytes());
    buf[16..24].copy_from_slice(&head.inode.to_ne_bytes());
    buf[24..40].copy_from_slice(&head.comm);
    put_addr(&mut buf[OFF_LOCAL..OFF_LOCAL + ADDR_LEN], local);
    put_addr(&mut buf[OFF_PEER..OFF_PEER + ADDR_LEN], peer);
    let info = &info[..info.len().min(MAX_TCP_INFO)];
    let at_accept = &at_accept[..at_accept.len().min(MAX_TCP_INFO)];
    buf[88..90].copy_from_slice(&(info.len() as u16).to_ne_bytes());
    buf[90..92].copy_from_slice(&(at_accept.len() as u16).to_ne_bytes());
    buf[OFF_INFO..OFF_INFO + info.len()].copy_from_slice(info);
    buf[OFF_AT_ACCEPT..OFF_AT_ACCEPT + at_accept.len()].copy_from_slice(at_accept);
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// The fixed part.
    pub head: RecordHead,
    /// This end, when the shim could read it.
    pub local: Option<SocketAddr>,
    /// The other end.
    pub peer: Option<SocketAddr>,
    /// `tcp_info` at the close.
    pub info: Option<TcpInfo>,
    /// `tcp_info` at accept (servers).
    pub at_accept: Option<TcpInfo>,
}

/// Bytes that are not a record of this version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a tfo wrap record (wrong length, magic, version or field)")]
pub struct BadRecord;

impl Record {
    /// The process name.
    pub fn process(&self) -> String {
        let end = self.head.comm.iter().position(|&b| b == 0).unwrap_or(self.head.comm.len());
        String::from_utf8_lossy(&self.head.comm[..end]).into_owned()
    }

    /// Decodes one record; any other length, magic or version is refused.
    pub fn decode(buf: &[u8]) -> Result<Record, BadRecord> {
        if buf.len() != RECORD_LEN || buf[0..4] != MAGIC.to_ne_bytes() || buf[4] != VERSION {
            return Err(BadRecord);
        }
        let kind = match buf[5] {
            1 => RecordKind::Hello,
            2 => RecordKind::Connection,
            _ => return Err(BadRecord),
        };
        let role = match buf[6] {
            0 => Role::Client,
            1 => Role::Server,
            _ => return Err(BadRecord),
        };
        let u32_at = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let mut inode = [0u8; 8];
        inode.copy_from_slice(&buf[16..24]);
        let mut comm = [0u8; 16];
        comm.copy_from_slice(&buf[24..40]);
        let len_at = |at: usize| usize::from(u16::from_ne_bytes([buf[at], buf[at + 1]]));
        let (info_len, accept_len) = (len_at(88), len_at(90));
        if info_len > MAX_TCP_INFO || accept_len > MAX_TCP_INFO {
            return Err(BadRecord);
        }
        let info = TcpInfo::parse(&buf[OFF_INFO..OFF_INFO + info_len]).ok();
        let at_accept = TcpInfo::parse(&buf[OFF_AT_ACCEPT..OFF_AT_ACCEPT + accept_len]).ok();
        Ok(Record {
            head: RecordHead {
                kind,
                role,
                flags: RecordFlags(buf[7]),
                pid: u32_at(8),
                dropped: u32_at(12),
                inode: u64::from_ne_bytes(inode),
                comm,
            },
            local: get_addr(&buf[OFF_LOCAL..OFF_LOCAL + ADDR_LEN]),
            peer: get_addr(&buf[OFF_PEER..OFF_PEER + ADDR_LEN]),
            info,
            at_accept,
        })
    }

    /// What the connection's TFO outcome was; `None` for a hello or without `tcp_info`.
    /// `client_tfo_enabled`: the namespace's `net.ipv4.tcp_fastopen` has bit 0x1.
    pub fn outcome(&self, client_tfo_enabled: bool) -> Option<WrappedOutcome> {
        if self.head.kind != RecordKind::Connection {
            return None;
        }
        let info = self.info.as_ref().or(self.at_accept.as_ref())?;
        let flags = self.head.flags;
        Some(match self.head.role {
            Role::Client if flags.has(RecordFlags::KICKED) && !info.syn_data() => WrappedOutcome {
                role: Role::Client,
                tfo_used: false,
                fail_reason: Some(FailReason::NoData),
                bytes_in_syn: Some(0),
                cookie_only_syn: true,
            },
            Role::Client => {
                let seen = crate::sock_diag::SeenOutcome::from_tcp_info(Role::Client, info, client_tfo_enabled);
                WrappedOutcome {
                    role: Role::Client,
                    tfo_used: seen.tfo_used,
                    fail_reason: seen.fail_reason,
                    // The client's kernel does not say how much of the first write the SYN held.
                    bytes_in_syn: if seen.tfo_used { None } else { Some(0) },
                    cookie_only_syn: false,
                }
            }
            Role::Server => {
                let first = self.at_accept.as_ref().unwrap_or(info);
                let accepted = crate::AcceptOutcome::derive(first, first, crate::KernelFeatures::current());
                WrappedOutcome {
                    role: Role::Server,
                    tfo_used: accepted.data_in_syn,
                    fail_reason: None,
                    bytes_in_syn: accepted.bytes_in_syn,
                    cookie_only_syn: !accepted.data_in_syn && accepted.tfo_child == Some(true),
                }
            }
        })
    }
}

/// The TFO outcome of one wrapped connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct WrappedOutcome {
    /// Which end the wrapped process was.
    pub role: Role,
    /// Client: the SYN's data was acknowledged; server: the SYN carried data.
    pub tfo_used: bool,
    /// Client only: why not.
    pub fail_reason: Option<FailReason>,
    /// Bytes that came in the SYN, when the kernel says (server side, one
    /// data segment so far); `None` when it does not (the client side).
    pub bytes_in_syn: Option<u64>,
    /// The SYN carried a cookie and no data: the program read first (a
    /// server that speaks first), and the server could answer one round
    /// trip sooner. Server side: a TFO child without data (Linux 6.16+).
    pub cookie_only_syn: bool,
}

/// The counts `tfo wrap` prints at exit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WrapSummary {
    /// Processes the shim loaded in.
    pub processes: u64,
    /// Connections reported.
    pub connections: u64,
    /// With data in the SYN (acknowledged, or accepted by a server).
    pub data_in_syn: u64,
    /// With a cookie and no data in the SYN (read-first programs).
    pub cookie_only_syn: u64,
    /// The others, by reason (`regular_handshake` for a server's plain SYN).
    pub not: std::collections::BTreeMap<&'static str, u64>,
    /// Records the shim could not deliver (a full pipe).
    pub lost_records: u64,
}

impl WrapSummary {
    /// Counts one connection.
    pub fn add(&mut self, outcome: &WrappedOutcome) {
        self.connections += 1;
        if outcome.tfo_used {
            self.data_in_syn += 1;
        } else if outcome.cookie_only_syn {
            self.cookie_only_syn += 1;
        } else {
            let reason = match (outcome.role, outcome.fail_reason) {
                (_, Some(r)) => r.as_str(),
                (Role::Server, None) => "regular_handshake",
                (Role::Client, None) => "not_requested",
            };
            *self.not.entry(reason).or_default() += 1;
        }
    }
}

impl fmt::Display for WrapSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.connections == 1 { "" } else { "s" };
        write!(f, "{} connection{plural}, {} with data in the SYN", self.connections, self.data_in_syn)?;
        if self.cookie_only_syn > 0 {
            write!(f, ", {} read-first with the cookie: the greeting a round trip sooner", self.cookie_only_syn)?;
        }
        if !self.not.is_empty() {
            f.write_str("; not:")?;
            for (i, (reason, n)) in self.not.iter().enumerate() {
                write!(f, "{} {reason} {n}", if i == 0 { "" } else { "," })?;
            }
        }
        if self.lost_records > 0 {
            write!(f, "; {} records lost (the report pipe was full)", self.lost_records)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(options: u8, client_fail: u8, state: u8) -> [u8; 280] {
        let mut b = [0u8; 280];
        b[0] = state;
        b[5] = options;
        b[7] = client_fail << 1;
        b[128..136].copy_from_slice(&9u64.to_ne_bytes());
        b[152..156].copy_from_slice(&1u32.to_ne_bytes());
        b
    }

    fn head(role: Role, flags: u8) -> RecordHead {
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"python3");
        RecordHead {
            kind: RecordKind::Connection,
            role,
            flags: RecordFlags(flags),
            pid: 42,
            dropped: 3,
            inode: 77,
            comm,
        }
    }

    fn round_trip(head: &RecordHead, info: &[u8], at_accept: &[u8]) -> Record {
        let mut buf = [0u8; RECORD_LEN];
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let peer: SocketAddr = "[fdf0::1%3]:443".parse().unwrap();
        encode(&mut buf, head, Some(local), Some(peer), info, at_accept);
        let r = Record::decode(&buf).unwrap();
        assert_eq!((r.local, r.peer), (Some(local), Some(peer)));
        r
    }

    #[test]
    fn records_round_trip() {
        let r = round_trip(&head(Role::Client, RecordFlags::DEFERRED), &info(0x27, 0, 1), &[]);
        assert_eq!(r.head, head(Role::Client, RecordFlags::DEFERRED));
        assert_eq!(r.process(), "python3");
        assert_eq!(r.info.unwrap().len, 280);
        assert_eq!(r.at_accept, None);
        const { assert!(RECORD_LEN <= 4096, "a record must fit PIPE_BUF to be written whole") };
    }

    #[test]
    fn hostile_bytes_are_refused_not_trusted() {
        let mut buf = [0u8; RECORD_LEN];
        encode(&mut buf, &head(Role::Server, 0), None, None, &info(0, 0, 1), &[]);
        assert!(Record::decode(&buf[..RECORD_LEN - 1]).is_err());
        let mut long = buf;
        long[88..90].copy_from_slice(&999u16.to_ne_bytes());
        assert_eq!(Record::decode(&long), Err(BadRecord));
        let mut kind = buf;
        kind[5] = 9;
        assert_eq!(Record::decode(&kind), Err(BadRecord));
        let mut addr = buf;
        addr[OFF_LOCAL] = 5;
        assert_eq!(Record::decode(&addr).unwrap().local, None);
        for i in 0..RECORD_LEN {
            let mut b = buf;
            b[i] ^= 0xff;
            let _ = Record::decode(&b).map(|r| r.outcome(true)); // never panics
        }
    }

    #[test]
    fn client_outcomes() {
        let used = round_trip(&head(Role::Client, RecordFlags::DEFERRED), &info(0x27, 0, 1), &[]);
        let o = used.outcome(true).unwrap();
        assert!(o.tfo_used && o.fail_reason.is_none() && o.bytes_in_syn.is_none());
        let no_cookie = round_trip(&head(Role::Client, 0), &info(0x07, 1, 1), &[]);
        assert_eq!(no_cookie.outcome(true).unwrap().fail_reason, Some(FailReason::CookieUnavailable));
        let kicked =
            round_trip(&head(Role::Client, RecordFlags::DEFERRED | RecordFlags::KICKED), &info(0x07, 0, 1), &[]);
        let o = kicked.outcome(true).unwrap();
        assert!(o.cookie_only_syn && !o.tfo_used);
        assert_eq!(o.fail_reason, Some(FailReason::NoData));
    }

    #[test]
    fn server_outcomes_come_from_the_accept_time_info() {
        let r = round_trip(&head(Role::Server, 0), &info(0x07, 0, 8), &info(0xa7, 0, 1));
        let o = r.outcome(true).unwrap();
        assert!(o.tfo_used);
        assert_eq!(o.bytes_in_syn, Some(9));
        let plain = round_trip(&head(Role::Server, 0), &info(0x07, 0, 1), &info(0x07, 0, 1));
        assert!(!plain.outcome(true).unwrap().tfo_used);
    }

    #[test]
    fn the_summary_reads_as_a_sentence() {
        let mut s = WrapSummary::default();
        let client = |tfo_used, fail_reason| WrappedOutcome {
            role: Role::Client,
            tfo_used,
            fail_reason,
            bytes_in_syn: None,
            cookie_only_syn: false,
        };
        for _ in 0..3 {
            s.add(&client(true, None));
        }
        s.add(&client(false, Some(FailReason::CookieUnavailable)));
        assert_eq!(s.to_string(), "4 connections, 3 with data in the SYN; not: cookie_unavailable 1");
        s.add(&WrappedOutcome { cookie_only_syn: true, ..client(false, Some(FailReason::NoData)) });
        s.add(&WrappedOutcome { role: Role::Server, ..client(false, None) });
        assert_eq!(
            s.to_string(),
            "6 connections, 3 with data in the SYN, 1 read-first with the cookie: the greeting a round trip sooner; not: cookie_unavailable 1, regular_handshake 1"
        );
    }

    #[test]
    fn config_round_trips_and_filters_ports() {
        let c = WrapConfig {
            client: true,
            server: false,
            queue: 256,
            ports: PortSet::parse("80,8000-8100").unwrap(),
            exclude: PortSet::parse("8080").unwrap(),
            report_fd: Some(1000),
        };
        assert_eq!(WrapConfig::from_env(&c.to_env()).unwrap(), c);
        assert!(c.wants_port(80) && c.wants_port(8001) && !c.wants_port(8080) && !c.wants_port(443));
        let all = WrapConfig { ports: PortSet::default(), exclude: PortSet::default(), report_fd: None, ..c };
        assert!(all.wants_port(443));
        assert_eq!(WrapConfig::from_env(&all.to_env()).unwrap(), all);
        assert!(WrapConfig::from_env("v2 client=1").is_err());
        assert!(WrapConfig::from_env("v1 client=yes").is_err());
        for bad in ["", "0", "80,", "a", "90-80", "70000", "1-2-3"] {
            assert!(PortSet::parse(bad).is_err(), "{bad}");
        }
    }
}
