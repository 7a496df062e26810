//! From packets to connections: a tracker that builds each connection's
//! handshake timeline and a verdict on TFO ("TFO used, 75 bytes in the SYN",
//! "cookie requested, cookie received", "option stripped on the way", ...).
//!
//! Packets may come from several capture points (say, both ends of a path):
//! give each a `point` number; a TFO option present at one point and missing at
//! a later one is reported as stripped on the way.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::options::{hex, write_hex, Cookie, FastOpenForm};
use crate::packet::{TcpFlags, TcpPacket};

/// Events kept per connection (the handshake and the first exchanges); later
/// packets are only counted.
pub const MAX_EVENTS: usize = 16;

/// Which way a packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// From the client (the side that sent the SYN).
    ToServer,
    /// From the server.
    ToClient,
}

/// A cookie, owned without allocation: up to 16 bytes (the longest valid
/// cookie); of a longer, malformed one the first 16 are kept and `len` tells
/// the real length.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CookieBytes {
    len: u8,
    bytes: [u8; 16],
}

impl CookieBytes {
    fn new(b: &[u8]) -> CookieBytes {
        let mut bytes = [0u8; 16];
        let n = b.len().min(16);
        bytes[..n].copy_from_slice(&b[..n]);
        CookieBytes { len: b.len().min(255) as u8, bytes }
    }
    /// The bytes kept (all of them for a valid cookie).
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).min(16)]
    }
    /// The cookie's length in the packet.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
    /// Whether the option carried no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for CookieBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(self.as_slice()))
    }
}

impl fmt::Display for CookieBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.as_slice())
    }
}

/// A TFO option as seen in a packet (owned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TfoSeen {
    /// An empty option: a cookie request.
    Request(FastOpenForm),
    /// A cookie of valid length.
    Cookie(FastOpenForm, CookieBytes),
    /// A cookie of invalid length.
    Malformed(FastOpenForm, CookieBytes),
}

impl TfoSeen {
    /// The TFO option of a packet, if it has one.
    pub fn of_packet(p: &TcpPacket<'_>) -> Option<TfoSeen> {
        let fo = p.fast_open()?;
        Some(match fo.cookie {
            Cookie::Request => TfoSeen::Request(fo.form),
            Cookie::Cookie(c) => TfoSeen::Cookie(fo.form, CookieBytes::new(c)),
            Cookie::Malformed(c) => TfoSeen::Malformed(fo.form, CookieBytes::new(c)),
        })
    }

    /// The cookie, if the option carries one of valid length.
    pub fn cookie(&self) -> Option<&CookieBytes> {
        match self {
            TfoSeen::Cookie(_, c) => Some(c),
            _ => None,
        }
    }

    /// The option's form.
    pub fn form(&self) -> FastOpenForm {
        match self {
            TfoSeen::Request(f) | TfoSeen::Cookie(f, _) | TfoSeen::Malformed(f, _) => *f,
        }
    }
}

impl fmt::Display for TfoSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = if self.form() == FastOpenForm::Experimental { " (exp 254)" } else { "" };
        match self {
            TfoSeen::Request(_) => write!(f, "TFO cookie request{exp}"),
            TfoSeen::Cookie(_, c) => write!(f, "TFO cookie={c}{exp}"),
            TfoSeen::Malformed(_, c) => write!(f, "TFO malformed cookie ({} bytes){exp}", c.len),
        }
    }
}

/// What a packet means for the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// This SYN-ACK acknowledges the SYN's data (this many bytes).
    AcksSynData(u32),
    /// This SYN-ACK acknowledges only the SYN, not its data.
    SynDataNotAcked(u32),
    /// A SYN sent again (same initial sequence number).
    SynRetransmission,
    /// The SYN of a connection that had already ended, again: a duplicate
    /// from the network or a replay.
    ReplayedSyn,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::AcksSynData(n) => write!(f, "acks the {n} bytes of SYN data"),
            Note::SynDataNotAcked(n) => write!(f, "does NOT ack the {n} bytes of SYN data"),
            Note::SynRetransmission => f.write_str("retransmitted SYN"),
            Note::ReplayedSyn => f.write_str("REPLAYED SYN: the connection had ended"),
        }
    }
}

/// One packet of a connection's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Time since the first packet of the whole trace.
    pub time: Duration,
    /// Capture point.
    pub point: u8,
    /// Direction.
    pub dir: Dir,
    /// Flags.
    pub flags: TcpFlags,
    /// Sequence number relative to the sender's initial one (absolute if unknown).
    pub seq: u32,
    /// Acknowledgment relative to the receiver's initial sequence number.
    pub ack: u32,
    /// Payload length.
    pub len: u32,
    /// The TFO option, if any.
    pub tfo: Option<TfoSeen>,
    /// What it means for the handshake.
    pub note: Option<Note>,
}

/// The verdict on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Data rode in the SYN with a cookie and the SYN-ACK acknowledged it.
    TfoUsed {
        /// Bytes in the SYN.
        bytes: u32,
    },
    /// The SYN asked for a cookie and the SYN-ACK brought one.
    CookieReceived,
    /// The SYN asked for a cookie; the SYN-ACK brought none.
    CookieNotReceived,
    /// A cookie and data went in the SYN; the SYN-ACK did not acknowledge the data.
    DataNotAcked {
        /// Bytes in the SYN.
        bytes: u32,
    },
    /// Data in the SYN without any TFO option (no-cookie mode).
    DataWithoutCookie {
        /// Bytes in the SYN.
        bytes: u32,
        /// Whether the SYN-ACK acknowledged them.
        acked: bool,
    },
    /// The TFO option was present at one capture point and gone at a later one.
    OptionStripped,
    /// A plain handshake.
    NoTfo,
    /// The SYN got no SYN-ACK in the capture.
    SynUnanswered,
    /// The SYN was answered by a reset: nothing listens there.
    Refused,
    /// The SYN carried data, got no answer, and was sent again without data
    /// or option: the signature of a path that drops SYNs with data.
    SynDataDropped {
        /// Bytes in the first SYN.
        bytes: u32,
    },
    /// The SYN's TFO option has a length no TFO option has; no cookie came back.
    MalformedOption,
    /// The SYN of a connection that had ended came again (same initial
    /// sequence number): a duplicate or a replay, which a server that no longer
    /// holds the connection takes as a new one.
    ReplayedSyn {
        /// Bytes in the SYN (its data is delivered again if the server accepts it).
        bytes: u32,
    },
    /// The SYN carried the cookie and no data (a client that reads first, as
    /// `tfo send --read-first` and `tfo wrap` make): a server with TFO makes
    /// the connection on it. `greeting_before_ack`: the server's first data
    /// left before the client's ACK reached it (it spoke in SYN_RECV, a round
    /// trip sooner).
    CookieOnlySyn {
        /// The server sent data before the client's ACK arrived.
        greeting_before_ack: bool,
    },
    /// The capture does not include the SYN.
    NoHandshake,
}

impl Verdict {
    /// A stable snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::TfoUsed { .. } => "tfo_used",
            Verdict::CookieReceived => "cookie_received",
            Verdict::CookieNotReceived => "cookie_not_received",
            Verdict::DataNotAcked { .. } => "data_not_acked",
            Verdict::DataWithoutCookie { .. } => "data_without_cookie",
            Verdict::OptionStripped => "option_stripped",
            Verdict::NoTfo => "no_tfo",
            Verdict::SynUnanswered => "syn_unanswered",
            Verdict::Refused => "refused",
            Verdict::SynDataDropped { .. } => "syn_data_dropped",
            Verdict::MalformedOption => "malformed_option",
            Verdict::ReplayedSyn { .. } => "replayed_syn",
            Verdict::CookieOnlySyn { .. } => "cookie_only_syn",
            Verdict::NoHandshake => "no_handshake",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::TfoUsed { bytes } => write!(f, "TFO used: {bytes} bytes in the SYN, acknowledged"),
            Verdict::CookieReceived => {
                f.write_str("cookie requested, cookie received (the next connection can use TFO)")
            }
            Verdict::CookieNotReceived => f.write_str("cookie requested, none received (server without TFO?)"),
            Verdict::DataNotAcked { bytes } => {
                write!(f, "cookie sent but the {bytes} bytes of SYN data were not acknowledged (sent again)")
            }
            Verdict::DataWithoutCookie { bytes, acked } => write!(
                f,
                "{bytes} bytes in the SYN without a cookie (no-cookie mode), {}",
                if *acked { "acknowledged" } else { "not acknowledged" }
            ),
            Verdict::OptionStripped => f.write_str("TFO option stripped on the way"),
            Verdict::NoTfo => f.write_str("no TFO"),
            Verdict::SynUnanswered => f.write_str("SYN not answered (in this capture)"),
            Verdict::Refused => f.write_str("refused: the SYN was answered by a reset (nothing listens there)"),
            Verdict::SynDataDropped { bytes } => write!(
                f,
                "the SYN with {bytes} bytes of data went unanswered and was sent again without data: something on the path drops SYNs that carry data"
            ),
            Verdict::MalformedOption => f.write_str("the SYN's TFO option is malformed (a length no TFO option has); no cookie came back"),
            Verdict::ReplayedSyn { bytes } => write!(
                f,
                "a REPLAYED SYN with {bytes} bytes of data, after its connection had ended: a new connection to the server"
            ),
            Verdict::CookieOnlySyn { greeting_before_ack: true } => f.write_str(
                "cookie sent without data (read first); the server's data left before the client's ACK: it spoke in SYN_RECV, a round trip sooner",
            ),
            Verdict::CookieOnlySyn { greeting_before_ack: false } => {
                f.write_str("cookie sent without data (read first); the server sent nothing before the client's ACK")
            }
            Verdict::NoHandshake => f.write_str("handshake not in the capture"),
        }
    }
}

/// What the first SYN and SYN-ACK looked like, per capture point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handshake {
    syn_seen: bool,
    syn_tfo: Option<TfoSeen>,
    syn_len: u32,
    synack_seen: bool,
    synack_tfo: Option<TfoSeen>,
    synack_ack: u32,
    /// An RST answered the SYN.
    refused: bool,
    /// The SYN carried data, went unanswered, and was sent again plain.
    resent_plain: bool,
    /// When this point saw the SYN, the SYN-ACK, the client's first ACK after
    /// it, and the server's first data (for a read-first verdict).
    syn_at: Option<Duration>,
    synack_at: Option<Duration>,
    client_ack_at: Option<Duration>,
    server_data_at: Option<Duration>,
}

impl Default for Handshake {
    fn default() -> Handshake {
        Handshake::NOT_SEEN
    }
}

impl Handshake {
    /// Nothing seen yet (also what an unseen capture point reads as).
    const NOT_SEEN: Handshake = Handshake {
        syn_seen: false,
        syn_tfo: None,
        syn_len: 0,
        synack_seen: false,
        synack_tfo: None,
        synack_ack: 0,
        refused: false,
        resent_plain: false,
        syn_at: None,
        synack_at: None,
        client_ack_at: None,
        server_data_at: None,
    };

    /// Whether the server's first data left before the client's ACK reached
    /// it: seen so at the server (data before the ACK), or at the client (data
    /// within half a round trip of the SYN-ACK, too soon to answer the ACK).
    fn greeting_before_ack(&self) -> bool {
        let (Some(syn), Some(synack), Some(data)) = (self.syn_at, self.synack_at, self.server_data_at) else {
            return false;
        };
        let before_ack = self.client_ack_at.is_none_or(|ack| data < ack);
        let half_rtt = synack.saturating_sub(syn) / 2;
        before_ack || data.saturating_sub(synack) < half_rtt
    }
}

/// A connection's handshake at each capture point: the first held inline,
/// the other three only when a capture has more than one point (a connection
/// is then about 260 bytes instead of 620: a million-packet capture holds
/// 125,000 of them).
#[derive(Debug, Clone, Default)]
struct Points {
    first: Handshake,
    more: Option<Box<[Handshake; 3]>>,
}

impl Points {
    /// The points' handshakes in order (those never written read as unseen).
    fn iter(&self) -> impl Iterator<Item = &Handshake> {
        std::iter::once(&self.first).chain(self.more.iter().flat_map(|m| m.iter()))
    }
}

impl std::ops::Index<usize> for Points {
    type Output = Handshake;
    fn index(&self, point: usize) -> &Handshake {
        match point {
            0 => &self.first,
            _ => self.more.as_ref().map_or(&Handshake::NOT_SEEN, |m| &m[point - 1]),
        }
    }
}

impl std::ops::IndexMut<usize> for Points {
    fn index_mut(&mut self, point: usize) -> &mut Handshake {
        match point {
            0 => &mut self.first,
            _ => &mut self.more.get_or_insert_with(Box::default)[point - 1],
        }
    }
}

/// One connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The side that sent the SYN (or, without one, the sender of the first packet).
    pub client: SocketAddr,
    /// The other side.
    pub server: SocketAddr,
    /// The first [`MAX_EVENTS`] packets.
    pub events: Vec<Event>,
    /// All packets.
    pub packets: u64,
    /// Payload bytes client -> server.
    pub bytes_to_server: u64,
    /// Payload bytes server -> client.
    pub bytes_to_client: u64,
    /// SYNs sent again.
    pub syn_retransmits: u32,
    /// A RST was seen.
    pub reset: bool,
    /// Its SYN repeats that of a connection that had ended ([`Verdict::ReplayedSyn`]).
    pub replayed: bool,
    client_isn: Option<u32>,
    server_isn: Option<u32>,
    /// Handshake per capture point (points 0..4).
    handshakes: Points,
    finished: bool,
}

impl Connection {
    fn new(client: SocketAddr, server: SocketAddr) -> Connection {
        Connection {
            client,
            server,
            events: Vec::new(),
            packets: 0,
            bytes_to_server: 0,
            bytes_to_client: 0,
            syn_retransmits: 0,
            reset: false,
            replayed: false,
            client_isn: None,
            server_isn: None,
            handshakes: Points::default(),
            finished: false,
        }
    }

    /// Counts a packet: bytes each way, RST, FIN.
    fn count(&mut self, p: &TcpPacket<'_>, dir: Dir, len: u32) {
        self.packets += 1;
        match dir {
            Dir::ToServer => self.bytes_to_server += u64::from(len),
            Dir::ToClient => self.bytes_to_client += u64::from(len),
        }
        if p.flags.has(TcpFlags::RST) {
            self.reset = true;
            self.finished = true;
        }
        if p.flags.has(TcpFlags::FIN) {
            self.finished = true;
        }
    }

    /// Notes when `point` saw the handshake's packets and the first data back.
    fn time(&mut self, point: usize, time: Duration, dir: Dir, p: &TcpPacket<'_>, len: u32) {
        let h = &mut self.handshakes[point];
        match dir {
            Dir::ToServer if p.flags.is_syn() => {
                h.syn_at.get_or_insert(time);
            }
            Dir::ToClient if p.flags.is_syn_ack() => {
                h.synack_at.get_or_insert(time);
            }
            Dir::ToServer if p.flags.has(TcpFlags::ACK) && h.synack_at.is_some() => {
                h.client_ack_at.get_or_insert(time);
            }
            Dir::ToClient if len > 0 => {
                h.server_data_at.get_or_insert(time);
            }
            _ => {}
        }
    }

    /// A SYN from the client at capture `point`: the first one, or a retransmission.
    fn on_syn(&mut self, point: usize, seq: u32, tfo: Option<TfoSeen>, len: u32) -> Option<Note> {
        let mut note = None;
        match self.client_isn {
            Some(isn) if isn == seq && self.handshakes[point].syn_seen => {
                self.syn_retransmits += 1;
                note = Some(Note::SynRetransmission);
                let h = &mut self.handshakes[point];
                // SYN data went unanswered and the SYN came again, without data or option.
                if h.syn_len > 0 && !h.synack_seen && len == 0 && tfo.is_none() {
                    h.resent_plain = true;
                }
            }
            _ => self.client_isn = Some(seq),
        }
        let h = &mut self.handshakes[point];
        if !h.syn_seen {
            let syn_at = h.syn_at;
            *h = Handshake { syn_seen: true, syn_tfo: tfo, syn_len: len, syn_at, ..Handshake::default() };
        }
        note
    }

    /// A SYN-ACK from the server at capture `point`.
    fn on_syn_ack(&mut self, point: usize, seq: u32, ack: u32, tfo: Option<TfoSeen>) -> Option<Note> {
        self.server_isn.get_or_insert(seq);
        let isn = self.client_isn.unwrap_or(0);
        let h = &mut self.handshakes[point];
        if !h.syn_seen || h.synack_seen {
            return None;
        }
        h.synack_seen = true;
        h.synack_tfo = tfo;
        h.synack_ack = ack;
        (h.syn_len > 0).then(|| {
            if ack == isn.wrapping_add(1).wrapping_add(h.syn_len) {
                Note::AcksSynData(h.syn_len)
            } else {
                Note::SynDataNotAcked(h.syn_len)
            }
        })
    }

    /// An RST from the server before any SYN-ACK: the SYN was refused.
    fn on_reset_before_syn_ack(&mut self, point: usize) -> Option<Note> {
        let h = &mut self.handshakes[point];
        if h.syn_seen && !h.synack_seen {
            h.refused = true;
        }
        None
    }

    /// Keeps an event, with seq and ack made relative to each side's initial number.
    fn record(&mut self, mut e: Event) {
        let (own, other) = match e.dir {
            Dir::ToServer => (self.client_isn, self.server_isn),
            Dir::ToClient => (self.server_isn, self.client_isn),
        };
        let rel = |v: u32, base: Option<u32>| base.map_or(v, |b| v.wrapping_sub(b));
        e.seq = rel(e.seq, own);
        e.ack = if e.flags.has(TcpFlags::ACK) { rel(e.ack, other) } else { 0 };
        self.events.push(e);
    }

    /// The cookie the server gave, if a SYN-ACK carried one.
    pub fn cookie_received(&self) -> Option<CookieBytes> {
        self.handshakes.iter().find_map(|h| h.synack_tfo.and_then(|t| t.cookie().copied()))
    }

    /// The verdict on TFO for this connection.
    pub fn verdict(&self) -> Verdict {
        let seen: Vec<&Handshake> = self.handshakes.iter().filter(|h| h.syn_seen).collect();
        let Some(first) = seen.first() else { return Verdict::NoHandshake };
        if self.replayed {
            return Verdict::ReplayedSyn { bytes: first.syn_len };
        }
        // An option present at an earlier point and gone at a later one.
        for pair in seen.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if (a.syn_tfo.is_some() && b.syn_tfo.is_none())
                || (a.synack_seen && b.synack_seen && a.synack_tfo.is_some() && b.synack_tfo.is_none())
            {
                return Verdict::OptionStripped;
            }
        }
        // Judge by the last point that saw the SYN-ACK (the client's view when both ends are captured).
        let h = seen.iter().rev().find(|h| h.synack_seen).copied().unwrap_or(first);
        let isn = self.client_isn.unwrap_or(0);
        let acked = h.synack_seen && h.syn_len > 0 && h.synack_ack == isn.wrapping_add(1).wrapping_add(h.syn_len);
        let cookie_back = h.synack_tfo.and_then(|t| t.cookie().copied()).is_some();
        match (h.syn_tfo, h.syn_len, h.synack_seen) {
            (_, _, false) if h.refused => Verdict::Refused,
            (_, _, false) => Verdict::SynUnanswered,
            (_, n, true) if n > 0 && !acked && h.resent_plain => Verdict::SynDataDropped { bytes: n },
            (Some(_), n, true) if n > 0 => {
                if acked {
                    Verdict::TfoUsed { bytes: n }
                } else {
                    Verdict::DataNotAcked { bytes: n }
                }
            }
            (None, n, true) if n > 0 => Verdict::DataWithoutCookie { bytes: n, acked },
            // A cookie came back: whatever the SYN's option looked like, it asked for one.
            (Some(_), _, true) if cookie_back => Verdict::CookieReceived,
            (Some(TfoSeen::Request(_)), _, true) => Verdict::CookieNotReceived,
            (Some(TfoSeen::Malformed(..)), _, true) => Verdict::MalformedOption,
            (Some(TfoSeen::Cookie(..)), 0, true) => {
                Verdict::CookieOnlySyn { greeting_before_ack: h.greeting_before_ack() }
            }
            (Some(TfoSeen::Cookie(..)), _, true) | (None, _, true) => Verdict::NoTfo,
        }
    }
}

/// A connection's two ends, in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey(IpAddr, u16, IpAddr, u16);

impl FlowKey {
    fn of(p: &TcpPacket<'_>) -> FlowKey {
        FlowKey::of_ends(SocketAddr::new(p.src, p.src_port), SocketAddr::new(p.dst, p.dst_port))
    }

    fn of_ends(x: SocketAddr, y: SocketAddr) -> FlowKey {
        let a = (x.ip(), x.port());
        let b = (y.ip(), y.port());
        if a <= b {
            FlowKey(a.0, a.1, b.0, b.1)
        } else {
            FlowKey(b.0, b.1, a.0, a.1)
        }
    }
}

/// Turns packets into connections.
///
/// Memory is bounded whatever the capture holds (a SYN flood makes a
/// connection per packet): at most [`Tracker::max_connections`] connections
/// are held; past that, the oldest is retired (its verdict counted, its
/// timeline dropped). The table is keyed by a hash seeded per process
/// (aHash's `RandomState`), so tuples an attacker picks cannot be made to collide.
#[derive(Debug)]
pub struct Tracker {
    /// Flow → connection id. The keys are chosen by whoever sent the
    /// packets, so the hash is keyed per process (aHash: nearly FxHash's
    /// speed; SipHash was a tenth of `tfo trace`'s time).
    index: std::collections::HashMap<FlowKey, u64, ahash::RandomState>,
    /// Held connections; `connections[i]` has the id `first_id + i`.
    connections: Vec<Connection>,
    first_id: u64,
    start: Option<Duration>,
    packets: u64,
    max_events: usize,
    max_connections: usize,
    retired: u64,
    retired_verdicts: std::collections::BTreeMap<&'static str, u64>,
}

/// Connections a [`Tracker`] holds by default (about 500 bytes each, and the
/// first [`MAX_EVENTS`] packets of each when timelines are kept).
pub const MAX_CONNECTIONS: usize = 200_000;

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Tracker {
    /// A tracker that keeps each connection's first [`MAX_EVENTS`] packets.
    pub fn new() -> Tracker {
        Tracker {
            index: std::collections::HashMap::with_hasher(ahash::RandomState::new()),
            connections: Vec::new(),
            first_id: 0,
            start: None,
            packets: 0,
            max_events: MAX_EVENTS,
            max_connections: MAX_CONNECTIONS,
            retired: 0,
            retired_verdicts: std::collections::BTreeMap::new(),
        }
    }

    /// Holds at most `n` connections (at least 1); older ones are retired.
    pub fn max_connections(mut self, n: usize) -> Tracker {
        self.max_connections = n.max(1);
        self
    }

    /// Connections retired to bound memory (counted in [`Tracker::verdicts`], not held).
    pub fn retired(&self) -> u64 {
        self.retired
    }

    /// Every connection's verdict name and count, the retired ones included.
    pub fn verdicts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut all = self.retired_verdicts.clone();
        for c in &self.connections {
            *all.entry(c.verdict().as_str()).or_insert(0) += 1;
        }
        all
    }

    /// Connections seen in all, the retired ones included.
    pub fn total_connections(&self) -> u64 {
        self.retired + self.connections.len() as u64
    }

    /// A tracker that keeps no timelines, only what the verdicts need (faster).
    pub fn verdicts_only() -> Tracker {
        Tracker { max_events: 0, ..Tracker::new() }
    }

    /// Packets seen.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Adds one packet captured at `time` (any clock) at capture `point` (0..4).
    pub fn push(&mut self, time: Duration, point: u8, p: &TcpPacket<'_>) {
        self.packets += 1;
        let start = *self.start.get_or_insert(time);
        let idx = self.connection_of(p);
        let max_events = self.max_events;
        let c = &mut self.connections[idx];
        let dir = if SocketAddr::new(p.src, p.src_port) == c.client { Dir::ToServer } else { Dir::ToClient };
        let len = p.payload_len() as u32;
        c.count(p, dir, len);
        let point = usize::from(point.min(3));
        let tfo = if p.flags.has(TcpFlags::SYN) { TfoSeen::of_packet(p) } else { None };
        c.time(point, time, dir, p, len);
        let note = match dir {
            Dir::ToServer if p.flags.is_syn() => c.on_syn(point, p.seq, tfo, len),
            Dir::ToClient if p.flags.is_syn_ack() => c.on_syn_ack(point, p.seq, p.ack, tfo),
            Dir::ToClient if p.flags.has(TcpFlags::RST) => c.on_reset_before_syn_ack(point),
            _ => None,
        };
        let note = if c.replayed && c.events.is_empty() { Some(Note::ReplayedSyn) } else { note };
        if c.events.len() < max_events {
            c.record(Event {
                time: time.saturating_sub(start),
                point: point as u8,
                dir,
                flags: p.flags,
                seq: p.seq,
                ack: p.ack,
                len,
                tfo,
                note,
            });
        }
    }

    /// The position in `connections` of the one a packet belongs to (a new one
    /// for a SYN that starts one).
    fn connection_of(&mut self, p: &TcpPacket<'_>) -> usize {
        let key = FlowKey::of(p);
        let held = self.index.get(&key).and_then(|&id| id.checked_sub(self.first_id)).map(|i| i as usize);
        match held {
            Some(i) if !(p.flags.is_syn() && self.is_new_connection(i, p)) => i,
            _ => {
                let (client, server) = if p.flags.is_syn_ack() {
                    (SocketAddr::new(p.dst, p.dst_port), SocketAddr::new(p.src, p.src_port))
                } else {
                    (SocketAddr::new(p.src, p.src_port), SocketAddr::new(p.dst, p.dst_port))
                };
                // The same SYN as a connection that ended: a replay.
                let replayed = held.is_some_and(|i| {
                    let c = &self.connections[i];
                    p.flags.is_syn() && c.finished && c.client_isn == Some(p.seq)
                });
                if self.connections.len() >= self.max_connections {
                    self.retire_oldest();
                }
                self.connections.push(Connection { replayed, ..Connection::new(client, server) });
                let id = self.first_id + self.connections.len() as u64 - 1;
                self.index.insert(key, id);
                self.connections.len() - 1
            }
        }
    }

    /// Drops the oldest quarter of the held connections (at least one, so the
    /// cost is amortized), keeping their verdicts.
    fn retire_oldest(&mut self) {
        let n = (self.connections.len() / 4).max(1).min(self.connections.len());
        for (offset, old) in self.connections.drain(..n).enumerate() {
            let id = self.first_id + offset as u64;
            *self.retired_verdicts.entry(old.verdict().as_str()).or_insert(0) += 1;
            let key = FlowKey::of_ends(old.client, old.server);
            if self.index.get(&key) == Some(&id) {
                self.index.remove(&key);
            }
        }
        self.first_id += n as u64;
        self.retired += n as u64;
    }

    /// A SYN starts a new connection on a connection that finished (a reused
    /// port, or the same SYN again: a replay), or on one that completed its
    /// handshake if its initial sequence number is new.
    fn is_new_connection(&self, i: usize, p: &TcpPacket<'_>) -> bool {
        let c = &self.connections[i];
        c.finished || (c.client_isn != Some(p.seq) && c.handshakes.iter().any(|h| h.synack_seen))
    }

    /// The connections held, in order of first packet.
    pub fn connections(&self) -> &[Connection] {
        &self.connections
    }

    /// Consumes the tracker: the connections held, in order of first packet.
    pub fn into_connections(self) -> Vec<Connection> {
        self.connections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_index_is_keyed_per_table() {
        // Flows come from whoever sent the packets: an unkeyed hash (the same
        // in every table) lets them pick colliding tuples.
        let key = FlowKey::of_ends("10.0.0.1:40000".parse().unwrap(), "198.18.0.2:80".parse().unwrap());
        let hashes: std::collections::BTreeSet<u64> =
            (0..4).map(|_| Tracker::new().index.hasher().hash_one(key)).collect();
        assert!(hashes.len() > 1, "four tables hashed the flow alike: {hashes:?}");
    }

    #[test]
    fn a_syn_flood_is_held_within_the_bound_and_still_counted() {
        let mut t = Tracker::verdicts_only().max_connections(100);
        for i in 0..10_000u32 {
            let src = std::net::Ipv4Addr::from(0x0a00_0000 + i).octets();
            let mut b = Vec::new();
            etherparse::PacketBuilder::ipv4(src, [198, 18, 0, 2], 64)
                .tcp(40000, 8000, i, 64240)
                .syn()
                .write(&mut b, b"")
                .unwrap();
            t.push(Duration::from_micros(u64::from(i)), 0, &TcpPacket::parse(crate::LinkType::RawIp, &b).unwrap());
        }
        assert!(t.connections().len() <= 100, "{}", t.connections().len());
        assert!(t.index.len() <= 100, "the index is bounded too: {}", t.index.len());
        assert_eq!(t.total_connections(), 10_000);
        assert_eq!(t.retired() as usize + t.connections().len(), 10_000);
        assert_eq!(t.verdicts()["syn_unanswered"], 10_000);
    }

    fn pkt(from_client: bool, flags: u8, seq: u32, ack: u32, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let (s, d, sp, dp) = if from_client {
            ([198, 18, 0, 1], [198, 18, 0, 2], 40000, 8000)
        } else {
            ([198, 18, 0, 2], [198, 18, 0, 1], 8000, 40000)
        };
        let mut b = etherparse::PacketBuilder::ipv4(s, d, 64).tcp(sp, dp, seq, 64240);
        if flags & TcpFlags::SYN != 0 {
            b = b.syn();
        }
        if flags & TcpFlags::ACK != 0 {
            b = b.ack(ack);
        }
        if flags & TcpFlags::RST != 0 {
            b = b.rst();
        }
        if flags & TcpFlags::FIN != 0 {
            b = b.fin();
        }
        let b = b.options_raw(options).unwrap();
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    const REQ: [u8; 4] = [0x22, 0x02, 0x01, 0x01];
    const COOKIE: [u8; 12] = [0x22, 0x0a, 0xc2, 0xa1, 0x5a, 0xb5, 0x7a, 0xa2, 0xf3, 0x54, 0x01, 0x01];
    const SYN: u8 = TcpFlags::SYN;
    const SYNACK: u8 = TcpFlags::SYN | TcpFlags::ACK;
    const ACK: u8 = TcpFlags::ACK;

    fn track(packets: &[(u64, u8, Vec<u8>)]) -> Tracker {
        let mut t = Tracker::new();
        for (ms, point, bytes) in packets {
            t.push(Duration::from_millis(*ms), *point, &TcpPacket::parse_ip(bytes).unwrap());
        }
        t
    }

    #[test]
    fn a_cookie_syn_without_data_and_a_greeting_in_syn_recv() {
        use TcpFlags as F;
        let (syn, synack, ack, psh) = (F::SYN, F::SYN | F::ACK, F::ACK, F::ACK | F::PSH);
        // Seen at the client, 100 ms RTT: the greeting right behind the SYN-ACK.
        let client_view = track(&[
            (0, 0, pkt(true, syn, 100, 0, &COOKIE, b"")),
            (100, 0, pkt(false, synack, 500, 101, &[], b"")),
            (100, 0, pkt(true, ack, 101, 501, &[], b"")),
            (101, 0, pkt(false, psh, 501, 101, &[], b"220 hi\r\n")),
        ]);
        assert_eq!(client_view.connections()[0].verdict(), Verdict::CookieOnlySyn { greeting_before_ack: true });
        // Seen at the server: the greeting leaves before the client's ACK arrives.
        let server_view = track(&[
            (0, 0, pkt(true, syn, 100, 0, &COOKIE, b"")),
            (0, 0, pkt(false, synack, 500, 101, &[], b"")),
            (0, 0, pkt(false, psh, 501, 101, &[], b"220 hi\r\n")),
            (100, 0, pkt(true, ack, 101, 501, &[], b"")),
        ]);
        assert_eq!(server_view.connections()[0].verdict(), Verdict::CookieOnlySyn { greeting_before_ack: true });
        // A server that greets only after the ACK (no TFO on its listener): a round trip later.
        let late = track(&[
            (0, 0, pkt(true, syn, 100, 0, &COOKIE, b"")),
            (100, 0, pkt(false, synack, 500, 101, &[], b"")),
            (100, 0, pkt(true, ack, 101, 501, &[], b"")),
            (200, 0, pkt(false, psh, 501, 101, &[], b"220 hi\r\n")),
        ]);
        let v = late.connections()[0].verdict();
        assert_eq!(v, Verdict::CookieOnlySyn { greeting_before_ack: false });
        assert_eq!(v.as_str(), "cookie_only_syn");
    }

    /// What real captures showed: verdicts that must not read as something milder.
    #[test]
    fn verdicts_from_hostile_and_unlucky_captures() {
        // The SYN's option is malformed (length 1, 19, 255 past the header), yet a cookie came back.
        for bad in [&[0x22, 0x01, 0x01, 0x01][..], &[0x22, 19, 0, 0], &[0x01, 0x01, 0x22, 0xff]] {
            let t = track(&[(0, 0, pkt(true, SYN, 1, 0, bad, b"")), (1, 0, pkt(false, SYNACK, 9, 2, &COOKIE, b""))]);
            assert_eq!(t.connections()[0].verdict(), Verdict::CookieReceived, "{bad:?}");
            let t = track(&[(0, 0, pkt(true, SYN, 1, 0, bad, b"")), (1, 0, pkt(false, SYNACK, 9, 2, &[], b""))]);
            assert_eq!(t.connections()[0].verdict(), Verdict::MalformedOption, "{bad:?}");
            // With data, a malformed option is not no-cookie mode.
            let t = track(&[(0, 0, pkt(true, SYN, 1, 0, bad, b"GET")), (1, 0, pkt(false, SYNACK, 9, 2, &[], b""))]);
            assert_eq!(t.connections()[0].verdict(), Verdict::DataNotAcked { bytes: 3 }, "{bad:?}");
        }
        // A SYN answered by RST: refused, not unanswered.
        let rst = TcpFlags::RST | TcpFlags::ACK;
        let t = track(&[(0, 0, pkt(true, SYN, 1, 0, &REQ, b"")), (1, 0, pkt(false, rst, 0, 2, &[], b""))]);
        assert_eq!(t.connections()[0].verdict().as_str(), "refused");
        // Data SYN unanswered, then the same SYN again without data or option, answered.
        let t = track(&[
            (0, 0, pkt(true, SYN, 1, 0, &COOKIE, b"GET /")),
            (1000, 0, pkt(true, SYN, 1, 0, &[], b"")),
            (1010, 0, pkt(false, SYNACK, 9, 2, &[], b"")),
        ]);
        assert_eq!(t.connections()[0].verdict(), Verdict::SynDataDropped { bytes: 5 });
    }

    /// The SYN with data of a connection that ended comes again: a second
    /// connection, marked replayed; a new SYN on the port is not.
    #[test]
    fn a_replayed_syn_is_a_new_connection_marked_replayed() {
        let fin = TcpFlags::FIN | TcpFlags::ACK;
        let t = track(&[
            (0, 0, pkt(true, SYN, 1000, 0, &COOKIE, b"pay 1")),
            (100, 0, pkt(false, SYNACK, 5000, 1006, &[], b"")),
            (200, 0, pkt(true, fin, 1006, 5001, &[], b"")),
            (300, 0, pkt(false, fin, 5001, 1007, &[], b"")),
            (400, 0, pkt(true, SYN, 1000, 0, &COOKIE, b"pay 1")),
            (500, 0, pkt(false, SYNACK, 7000, 1006, &[], b"")),
        ]);
        let [original, replay] = t.connections() else { panic!("two connections: {:?}", t.connections()) };
        assert_eq!(original.verdict(), Verdict::TfoUsed { bytes: 5 });
        assert!(!original.replayed);
        assert_eq!(replay.verdict(), Verdict::ReplayedSyn { bytes: 5 });
        assert_eq!(replay.events[0].note, Some(Note::ReplayedSyn));
        assert_eq!((replay.events.len(), replay.events[1].seq), (2, 0), "its own sequence numbers");
        let reused = track(&[
            (0, 0, pkt(true, SYN, 1000, 0, &[], b"")),
            (200, 0, pkt(true, fin, 1001, 5001, &[], b"")),
            (400, 0, pkt(true, SYN, 9000, 0, &[], b"")),
        ]);
        assert!(!reused.connections()[1].replayed, "a new initial sequence number: a reused port");
    }

    #[test]
    fn cookie_request_then_cookie() {
        let t = track(&[
            (0, 0, pkt(true, SYN, 1000, 0, &REQ, b"")),
            (100, 0, pkt(false, SYNACK, 5000, 1001, &COOKIE, b"")),
            (100, 0, pkt(true, ACK, 1001, 5001, &[], b"")),
        ]);
        let c = &t.connections()[0];
        assert_eq!(c.verdict(), Verdict::CookieReceived);
        assert_eq!(c.cookie_received().unwrap().to_string(), "c2a15ab57aa2f354");
        assert_eq!(c.events.len(), 3);
        assert_eq!((c.events[1].dir, c.events[1].ack, c.events[2].seq), (Dir::ToClient, 1, 1));
        assert_eq!(c.client.port(), 40000);
    }

    #[test]
    fn data_in_syn_acked_and_not_acked() {
        let used = track(&[
            (0, 0, pkt(true, SYN, 1000, 0, &COOKIE, b"GET /")),
            (100, 0, pkt(false, SYNACK, 5000, 1006, &[], b"")),
        ]);
        assert_eq!(used.connections()[0].verdict(), Verdict::TfoUsed { bytes: 5 });
        assert_eq!(used.connections()[0].events[1].note, Some(Note::AcksSynData(5)));
        let refused = track(&[
            (0, 0, pkt(true, SYN, 1000, 0, &COOKIE, b"GET /")),
            (100, 0, pkt(false, SYNACK, 5000, 1001, &[], b"")),
        ]);
        assert_eq!(refused.connections()[0].verdict(), Verdict::DataNotAcked { bytes: 5 });
    }

    #[test]
    fn plain_unanswered_retransmitted_and_no_cookie_mode() {
        let plain = track(&[(0, 0, pkt(true, SYN, 1, 0, &[], b"")), (1, 0, pkt(false, SYNACK, 9, 2, &[], b""))]);
        assert_eq!(plain.connections()[0].verdict(), Verdict::NoTfo);
        let lost = track(&[(0, 0, pkt(true, SYN, 1, 0, &REQ, b"")), (1000, 0, pkt(true, SYN, 1, 0, &[], b""))]);
        let c = &lost.connections()[0];
        assert_eq!((c.verdict(), c.syn_retransmits), (Verdict::SynUnanswered, 1));
        assert_eq!(c.events[1].note, Some(Note::SynRetransmission));
        let nocookie = track(&[(0, 0, pkt(true, SYN, 1, 0, &[], b"abc")), (1, 0, pkt(false, SYNACK, 9, 5, &[], b""))]);
        assert_eq!(nocookie.connections()[0].verdict(), Verdict::DataWithoutCookie { bytes: 3, acked: true });
        let mid = track(&[(0, 0, pkt(false, ACK, 9, 5, &[], b"late"))]);
        assert_eq!(mid.connections()[0].verdict(), Verdict::NoHandshake);
    }

    #[test]
    fn stripped_between_two_points() {
        let t = track(&[
            (0, 0, pkt(true, SYN, 1, 0, &REQ, b"")),
            (50, 1, pkt(true, SYN, 1, 0, &[1, 1, 1, 1], b"")),
            (50, 1, pkt(false, SYNACK, 9, 2, &[], b"")),
            (100, 0, pkt(false, SYNACK, 9, 2, &[], b"")),
        ]);
        assert_eq!(t.connections().len(), 1);
        assert_eq!(t.connections()[0].verdict(), Verdict::OptionStripped);
    }

    #[test]
    fn a_new_syn_after_rst_is_a_new_connection() {
        let t = track(&[
            (0, 0, pkt(true, SYN, 1, 0, &[], b"")),
            (1, 0, pkt(false, TcpFlags::RST | ACK, 0, 2, &[], b"")),
            (2, 0, pkt(true, SYN, 777, 0, &REQ, b"")),
        ]);
        assert_eq!(t.connections().len(), 2);
        assert!(t.connections()[0].reset);
        assert_eq!(t.connections()[1].verdict(), Verdict::SynUnanswered);
    }
}
