//! Middleboxes: named policies that look into packets (with `fastopen-wire`)
//! and strip, drop or replay what real middleboxes strip, drop or replay.
//!
//! Everything about a policy lives in this file: its variant of
//! [`Middlebox`], its row in [`Middlebox::POLICIES`] (name, argument, the name
//! and label of what it counts), and its arm in [`inspect`]. Parsing,
//! printing, counters and reports follow from the table. To add one: a
//! variant, a row, an arm (and a test below).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fastopen_wire::rewrite::strip_fast_open;
use fastopen_wire::TcpPacket;

use crate::parse::parse_duration;

/// Which way a packet travels through the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client namespace to the server namespace.
    ToServer,
    /// From the server namespace to the client namespace.
    ToClient,
}

impl Direction {
    /// 0 for [`Direction::ToServer`], 1 for [`Direction::ToClient`]: the
    /// index of per-direction arrays (and of the sending device).
    pub fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
}

/// A middlebox policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Middlebox {
    /// Remove the TFO option (kinds 34 and 254) from SYNs and SYN-ACKs, as
    /// firewalls that strip unknown options do. Checksums are fixed.
    StripTfo,
    /// Drop SYNs that carry payload (the client retransmits the SYN without data).
    DropSynData,
    /// Drop SYNs that carry a TFO option (cookie request or cookie).
    DropTfoSyn,
    /// Forward each SYN that carries data, and inject a copy again after the
    /// given time: the duplicated request that TFO makes possible.
    ReplaySynData(Duration),
}

/// What the table says about one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Its name on the command line.
    pub name: &'static str,
    /// The default of its delay argument (`None`: it takes no argument).
    pub default_delay: Option<Duration>,
    /// The report field of what it counts (a JSON name: a contract).
    pub counter: &'static str,
    /// What it counts, for people.
    pub label: &'static str,
}

impl Middlebox {
    /// Every policy, in [`Middlebox::index`] order.
    pub const POLICIES: [Policy; 4] = [
        Policy { name: "strip-tfo", default_delay: None, counter: "stripped", label: "TFO stripped" },
        Policy { name: "drop-syn-data", default_delay: None, counter: "dropped_syn_data", label: "SYN data dropped" },
        Policy { name: "drop-tfo-syn", default_delay: None, counter: "dropped_tfo_syn", label: "TFO SYN dropped" },
        Policy {
            name: "replay-syn-data",
            default_delay: Some(Duration::from_millis(500)),
            counter: "replayed",
            label: "replayed",
        },
    ];

    /// All policy names, for help texts.
    pub const NAMES: &'static str = "strip-tfo, drop-syn-data, drop-tfo-syn, replay-syn-data=DELAY";

    /// The policy's row in [`Middlebox::POLICIES`].
    pub fn index(self) -> usize {
        match self {
            Middlebox::StripTfo => 0,
            Middlebox::DropSynData => 1,
            Middlebox::DropTfoSyn => 2,
            Middlebox::ReplaySynData(_) => 3,
        }
    }

    /// The policy's row.
    pub fn policy(self) -> Policy {
        Middlebox::POLICIES[self.index()]
    }

    fn from_row(index: usize, delay: Option<Duration>) -> Option<Middlebox> {
        Some(match index {
            0 => Middlebox::StripTfo,
            1 => Middlebox::DropSynData,
            2 => Middlebox::DropTfoSyn,
            3 => Middlebox::ReplaySynData(delay?),
            _ => return None,
        })
    }
}

impl fmt::Display for Middlebox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.policy().name)?;
        match self {
            Middlebox::ReplaySynData(d) => write!(f, "={}ms", d.as_millis()),
            _ => Ok(()),
        }
    }
}

/// Text that names no middlebox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadMiddlebox {
    /// No policy has this name.
    #[error("unknown middlebox {0:?}; known: {names}", names = Middlebox::NAMES)]
    Unknown(String),
    /// The policy's argument is not a duration.
    #[error("middlebox argument: {0}")]
    Argument(#[from] crate::parse::BadQuantity),
}

impl FromStr for Middlebox {
    type Err = BadMiddlebox;
    fn from_str(s: &str) -> Result<Middlebox, BadMiddlebox> {
        let (name, arg) = match s.split_once(['=', ':']) {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let unknown = || BadMiddlebox::Unknown(s.to_string());
        let index = Middlebox::POLICIES.iter().position(|p| p.name == name).ok_or_else(unknown)?;
        let delay = match (Middlebox::POLICIES[index].default_delay, arg) {
            (Some(_), Some(a)) => Some(parse_duration(a)?),
            (Some(default), None) => Some(default),
            (None, Some(_)) => return Err(unknown()),
            (None, None) => None,
        };
        Middlebox::from_row(index, delay).ok_or_else(unknown)
    }
}

/// What each policy did, counted (indexed by [`Middlebox::index`]). A
/// replay is counted by the link when the copy is really queued.
#[derive(Debug, Default)]
pub struct MiddleboxCounters([AtomicU64; Middlebox::POLICIES.len()]);

impl MiddleboxCounters {
    /// Counts one action of `policy`.
    pub fn add(&self, policy: Middlebox) {
        self.0[policy.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts, by the policies' counter names.
    pub fn snapshot(&self) -> MiddleboxCounts {
        MiddleboxCounts(
            Middlebox::POLICIES.iter().zip(&self.0).map(|(p, c)| (p.counter, c.load(Ordering::Relaxed))).collect(),
        )
    }
}

/// A copy of the middlebox counters: counter name -> count, every policy present.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct MiddleboxCounts(std::collections::BTreeMap<&'static str, u64>);

impl MiddleboxCounts {
    /// The count of one policy's actions.
    pub fn of(&self, policy: Middlebox) -> u64 {
        self.0.get(policy.policy().counter).copied().unwrap_or(0)
    }

    /// Every count since `earlier`.
    pub fn since(&self, earlier: &MiddleboxCounts) -> MiddleboxCounts {
        MiddleboxCounts(
            self.0.iter().map(|(k, v)| (*k, v.saturating_sub(earlier.0.get(k).copied().unwrap_or(0)))).collect(),
        )
    }

    /// Whether any policy acted.
    pub fn any(&self) -> bool {
        self.0.values().any(|v| *v > 0)
    }

    /// "TFO stripped 3, SYN data dropped 0, ...", for people.
    pub fn describe(&self) -> String {
        Middlebox::POLICIES
            .iter()
            .map(|p| format!("{} {}", p.label, self.0.get(p.counter).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on (possibly rewritten).
    Forward,
    /// Drop it.
    Drop,
    /// Pass it on, and send a copy again after this long.
    ForwardAndReplay(Duration),
}

/// Applies `policies` to one raw IP packet travelling `direction`.
/// Packets that are not TCP pass untouched.
pub fn inspect(
    policies: &[Middlebox],
    direction: Direction,
    packet: &mut [u8],
    counters: &MiddleboxCounters,
) -> Verdict {
    if policies.is_empty() {
        return Verdict::Forward;
    }
    let (is_syn, is_syn_ack, has_tfo, has_data) = match TcpPacket::parse_ip(packet) {
        Ok(p) => (p.flags.is_syn(), p.flags.is_syn_ack(), p.fast_open().is_some(), p.payload_len() > 0),
        Err(_) => return Verdict::Forward,
    };
    let mut verdict = Verdict::Forward;
    for policy in policies {
        match policy {
            Middlebox::StripTfo if (is_syn || is_syn_ack) && has_tfo && strip_fast_open(packet).unwrap_or(false) => {
                counters.add(*policy);
            }
            Middlebox::DropSynData if is_syn && has_data && direction == Direction::ToServer => {
                counters.add(*policy);
                return Verdict::Drop;
            }
            Middlebox::DropTfoSyn if is_syn && has_tfo && direction == Direction::ToServer => {
                counters.add(*policy);
                return Verdict::Drop;
            }
            Middlebox::ReplaySynData(after) if is_syn && has_data && direction == Direction::ToServer => {
                verdict = Verdict::ForwardAndReplay(*after);
            }
            _ => {}
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(options: &[u8], payload: &[u8], syn_ack: bool) -> Vec<u8> {
        let mut b =
            etherparse::PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64).tcp(40000, 8000, 1, 64240).syn();
        if syn_ack {
            b = b.ack(5);
        }
        let b = b.options_raw(options).unwrap();
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    const COOKIE: [u8; 12] = [0x22, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1];

    #[test]
    fn the_table_is_the_one_place() {
        for (i, p) in Middlebox::POLICIES.iter().enumerate() {
            let m: Middlebox = p.name.parse().unwrap();
            assert_eq!((m.index(), m.policy()), (i, *p));
            assert!(Middlebox::NAMES.contains(p.name), "{} missing from NAMES", p.name);
        }
        let counts = MiddleboxCounters::default().snapshot();
        assert_eq!(serde_json::to_value(&counts).unwrap().as_object().unwrap().len(), Middlebox::POLICIES.len());
        assert!("strip-tfo=1s".parse::<Middlebox>().is_err(), "no argument where none is taken");
    }

    #[test]
    fn names_parse_and_print() {
        for s in ["strip-tfo", "drop-syn-data", "drop-tfo-syn", "replay-syn-data=250ms"] {
            assert_eq!(s.parse::<Middlebox>().unwrap().to_string(), s);
        }
        assert_eq!(
            "replay-syn-data:1s".parse::<Middlebox>().unwrap(),
            Middlebox::ReplaySynData(Duration::from_secs(1))
        );
        assert!("firewall".parse::<Middlebox>().unwrap_err().to_string().contains("strip-tfo"));
        assert!(
            matches!("replay-syn-data=200".parse::<Middlebox>(), Err(BadMiddlebox::Argument(_))),
            "a unit is needed"
        );
        assert!("replay-syn-data=soon".parse::<Middlebox>().is_err());
    }

    #[test]
    fn each_policy_does_its_one_thing() {
        let c = MiddleboxCounters::default();
        let mut p = syn(&COOKIE, b"GET /", false);
        assert_eq!(inspect(&[Middlebox::StripTfo], Direction::ToServer, &mut p, &c), Verdict::Forward);
        assert!(TcpPacket::parse_ip(&p).unwrap().fast_open().is_none());
        assert!(fastopen_wire::rewrite::tcp_checksum_ok(&p).unwrap());
        let mut p = syn(&COOKIE, b"", true);
        inspect(&[Middlebox::StripTfo], Direction::ToClient, &mut p, &c);
        assert_eq!(c.snapshot().of(Middlebox::StripTfo), 2);

        let mut p = syn(&COOKIE, b"GET /", false);
        assert_eq!(inspect(&[Middlebox::DropSynData], Direction::ToServer, &mut p, &c), Verdict::Drop);
        let mut p = syn(&[0x22, 0x02, 1, 1], b"", false);
        assert_eq!(
            inspect(&[Middlebox::DropSynData], Direction::ToServer, &mut p, &c),
            Verdict::Forward,
            "no data: pass"
        );
        assert_eq!(inspect(&[Middlebox::DropTfoSyn], Direction::ToServer, &mut p, &c), Verdict::Drop);
        let mut plain = syn(&[], b"", false);
        assert_eq!(inspect(&[Middlebox::DropTfoSyn], Direction::ToServer, &mut plain, &c), Verdict::Forward);

        let mut p = syn(&COOKIE, b"GET /", false);
        let replay = Middlebox::ReplaySynData(Duration::from_millis(100));
        assert_eq!(
            inspect(&[replay], Direction::ToServer, &mut p, &c),
            Verdict::ForwardAndReplay(Duration::from_millis(100))
        );
        assert_eq!(inspect(&[replay], Direction::ToClient, &mut p, &c), Verdict::Forward, "only client SYNs");
    }

    #[test]
    fn non_tcp_and_garbage_pass() {
        let c = MiddleboxCounters::default();
        let mut junk = vec![0x45, 0, 0];
        assert_eq!(
            inspect(&[Middlebox::DropTfoSyn, Middlebox::StripTfo], Direction::ToServer, &mut junk, &c),
            Verdict::Forward
        );
    }
}
