//! A zero-copy view of one TCP segment in an IPv4 or IPv6 packet.

use std::fmt;
use std::net::IpAddr;

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};

use crate::options::{find_fast_open, FastOpen, OptionsIter};

/// How a captured frame begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// An IP packet with no link header (TUN devices, pcap LINKTYPE_RAW).
    RawIp,
    /// An Ethernet II frame (also what `lo` gives to packet sockets).
    Ethernet,
    /// Linux "cooked" capture v1 (pcap LINKTYPE_LINUX_SLL: `-i any` on older
    /// tcpdump, or captures on `lo` and TUN devices by some tools).
    LinuxSll,
    /// Linux "cooked" capture v2 (pcap LINKTYPE_LINUX_SLL2: what `tcpdump -i any` writes).
    LinuxSll2,
    /// BSD loopback: a 4-byte address family, then IP (LINKTYPE_NULL, host
    /// byte order, and LINKTYPE_LOOP, network byte order).
    Loopback,
}

impl LinkType {
    /// From a pcap link-layer header type number.
    pub fn from_pcap(linktype: u32) -> Option<LinkType> {
        match linktype {
            1 => Some(LinkType::Ethernet),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            0 | 108 => Some(LinkType::Loopback),
            _ => None,
        }
    }

    /// The pcap link-layer header type number.
    pub fn to_pcap(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::RawIp => 101,
            LinkType::LinuxSll => 113,
            LinkType::LinuxSll2 => 276,
            LinkType::Loopback => 0,
        }
    }
}

/// Why bytes are not a TCP segment we can read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Not an IPv4 or IPv6 packet (ARP, or another ether type).
    NotIp,
    /// IP, but not TCP.
    NotTcp,
    /// A fragment of an IPv4 or IPv6 packet (fragments are not reassembled).
    Fragment,
    /// The headers are cut short or inconsistent; the text says how.
    Malformed(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::NotIp => f.write_str("not an IP packet"),
            WireError::NotTcp => f.write_str("not a TCP segment"),
            WireError::Fragment => f.write_str("an IP fragment (not reassembled)"),
            WireError::Malformed(why) => write!(f, "malformed packet: {why}"),
        }
    }
}

impl std::error::Error for WireError {}

/// TCP flags (the low byte of the flags field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;

    /// Whether all bits of `mask` are set.
    pub fn has(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
    /// SYN without ACK.
    pub fn is_syn(self) -> bool {
        self.has(Self::SYN) && !self.has(Self::ACK)
    }
    /// SYN with ACK.
    pub fn is_syn_ack(self) -> bool {
        self.has(Self::SYN | Self::ACK)
    }
}

impl fmt::Display for TcpFlags {
    /// "SYN", "SYN-ACK", "ACK", "PSH-ACK", "FIN-ACK", "RST"...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u8, &str); 8] = [
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::RST, "RST"),
            (TcpFlags::PSH, "PSH"),
            (TcpFlags::URG, "URG"),
            (TcpFlags::ECE, "ECE"),
            (TcpFlags::CWR, "CWR"),
            (TcpFlags::ACK, "ACK"),
        ];
        let mut first = true;
        for (bit, name) in NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str("-")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// One TCP segment, borrowed from the packet bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful with ACK).
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Receive window (unscaled).
    pub window: u16,
    /// The TCP options bytes (after the fixed 20-byte header).
    pub options: &'a [u8],
    /// The TCP payload, as captured (shorter than on the wire when the
    /// capture was cut at a snap length: see `truncated`).
    pub payload: &'a [u8],
    /// Bytes of the segment that the capture did not keep (0 for a whole packet).
    pub truncated: usize,
    /// Where the IP header starts in the parsed bytes (after any link header).
    pub ip_offset: usize,
    /// Where the TCP header starts in the parsed bytes.
    pub tcp_offset: usize,
}

/// Where IP starts in a Linux cooked frame whose ethertype is at `ethertype_at`
/// and whose header is `header_len` long; `NotIp` for other protocols.
fn cooked_ip_start(bytes: &[u8], ethertype_at: usize, header_len: usize) -> Result<usize, WireError> {
    let ethertype = bytes
        .get(ethertype_at..ethertype_at + 2)
        .ok_or_else(|| WireError::Malformed("shorter than a Linux cooked header".into()))?;
    match u16::from_be_bytes([ethertype[0], ethertype[1]]) {
        0x0800 | 0x86dd if bytes.len() >= header_len => Ok(header_len),
        0x0800 | 0x86dd => Err(WireError::Malformed("shorter than a Linux cooked header".into())),
        _ => Err(WireError::NotIp),
    }
}

fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

impl<'a> TcpPacket<'a> {
    /// Parses a frame of the given link type. A frame cut short by a snap
    /// length still parses when its IP and TCP headers are whole; the
    /// payload is then what was captured, and `truncated` says how much is missing.
    pub fn parse(link: LinkType, bytes: &'a [u8]) -> Result<TcpPacket<'a>, WireError> {
        if let Some(p) = TcpPacket::parse_plain(link, bytes) {
            return Ok(p);
        }
        TcpPacket::parse_any(link, bytes)
    }

    /// The common case read directly: IPv4 without fragmentation or IPv6
    /// without extension headers, carrying a whole TCP header. `None` for
    /// anything else (VLAN tags, extension headers, fragments, lengths that
    /// disagree, errors), which [`TcpPacket::parse_any`] then decodes: it gives
    /// the same packet for every frame this accepts (a property test holds
    /// them together), at a third of the cost of slicing every layer.
    fn parse_plain(link: LinkType, bytes: &'a [u8]) -> Option<TcpPacket<'a>> {
        let be16 = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let ip_offset = match link {
            LinkType::RawIp => 0,
            LinkType::Loopback => 4,
            LinkType::Ethernet if matches!(be16(12)?, 0x0800 | 0x86dd) => 14,
            LinkType::LinuxSll if matches!(be16(14)?, 0x0800 | 0x86dd) => 16,
            LinkType::LinuxSll2 if matches!(be16(0)?, 0x0800 | 0x86dd) => 20,
            LinkType::Ethernet | LinkType::LinuxSll | LinkType::LinuxSll2 => return None,
        };
        let ip = bytes.get(ip_offset..)?;
        let (src, dst, header_len, declared_len) = match ip.first()? >> 4 {
            4 => {
                let header_len = usize::from(ip[0] & 0x0f) * 4;
                let fragment = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff;
                if header_len < 20 || ip.len() < header_len || ip[9] != 6 || fragment != 0 {
                    return None;
                }
                let src: [u8; 4] = ip[12..16].try_into().ok()?;
                let dst: [u8; 4] = ip[16..20].try_into().ok()?;
                (IpAddr::from(src), IpAddr::from(dst), header_len, usize::from(u16::from_be_bytes([ip[2], ip[3]])))
            }
            6 => {
                if ip.len() < 40 || ip[6] != 6 {
                    return None;
                }
                let src: [u8; 16] = ip[8..24].try_into().ok()?;
                let dst: [u8; 16] = ip[24..40].try_into().ok()?;
                let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                (IpAddr::from(src), IpAddr::from(dst), 40, 40 + payload_len)
            }
            _ => return None,
        };
        // The TCP segment: as declared, or what the capture kept of it.
        let tcp = ip.get(header_len..declared_len.min(ip.len()))?;
        let tcp_header_len = usize::from(*tcp.get(12)? >> 4) * 4;
        if tcp_header_len < 20 || tcp.len() < tcp_header_len {
            return None;
        }
        let u32_at = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
        let tcp_offset = ip_offset + header_len;
        Some(TcpPacket {
            src,
            dst,
            src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
            dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
            seq: u32_at(4),
            ack: u32_at(8),
            flags: TcpFlags(tcp[13]),
            window: u16::from_be_bytes([tcp[14], tcp[15]]),
            options: &tcp[20..tcp_header_len],
            payload: &tcp[tcp_header_len..],
            truncated: declared_len.saturating_sub(ip.len()),
            ip_offset,
            tcp_offset,
        })
    }

    /// Any frame of the link type, every layer sliced by etherparse.
    fn parse_any(link: LinkType, bytes: &'a [u8]) -> Result<TcpPacket<'a>, WireError> {
        let malformed = |e: &dyn fmt::Display| WireError::Malformed(e.to_string());
        let ip_start = match link {
            LinkType::Ethernet => None,
            LinkType::RawIp => Some(0),
            LinkType::LinuxSll => Some(cooked_ip_start(bytes, 14, 16)?),
            LinkType::LinuxSll2 => Some(cooked_ip_start(bytes, 0, 20)?),
            LinkType::Loopback => Some(4),
        };
        let sliced = match ip_start {
            None => LaxSlicedPacket::from_ethernet(bytes).map_err(|e| malformed(&e))?,
            Some(start) => {
                let ip =
                    bytes.get(start..).ok_or_else(|| WireError::Malformed("shorter than its link header".into()))?;
                match ip.first().map(|b| b >> 4) {
                    Some(4 | 6) => LaxSlicedPacket::from_ip(ip).map_err(|e| malformed(&e))?,
                    _ => return Err(WireError::NotIp),
                }
            }
        };
        let (src, dst, ip_offset, declared_end, payload) = match &sliced.net {
            Some(LaxNetSlice::Ipv4(v4)) => {
                let h = v4.header();
                let offset = offset_in(bytes, h.slice());
                let end = offset + usize::from(h.total_len());
                (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr()), offset, end, v4.payload())
            }
            Some(LaxNetSlice::Ipv6(v6)) => {
                let h = v6.header();
                let offset = offset_in(bytes, h.slice());
                let end = offset + 40 + usize::from(h.payload_length());
                (IpAddr::V6(h.source_addr()), IpAddr::V6(h.destination_addr()), offset, end, v6.payload())
            }
            _ => return Err(WireError::NotIp),
        };
        if payload.fragmented {
            return Err(WireError::Fragment);
        }
        if payload.ip_number != etherparse::IpNumber::TCP {
            return Err(WireError::NotTcp);
        }
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
            let why = sliced.stop_err.as_ref().map_or("no TCP header".to_string(), |(e, _)| e.to_string());
            return Err(WireError::Malformed(why));
        };
        let flags = tcp.header_slice().get(13).copied().unwrap_or(0);
        let truncated = if payload.incomplete { declared_end.saturating_sub(bytes.len()) } else { 0 };
        Ok(TcpPacket {
            src,
            dst,
            src_port: tcp.source_port(),
            dst_port: tcp.destination_port(),
            seq: tcp.sequence_number(),
            ack: tcp.acknowledgment_number(),
            flags: TcpFlags(flags),
            window: tcp.window_size(),
            options: &tcp.header_slice()[20.min(tcp.header_slice().len())..],
            payload: tcp.payload(),
            truncated,
            ip_offset,
            tcp_offset: offset_in(bytes, tcp.header_slice()),
        })
    }

    /// The payload's length on the wire (captured or not).
    pub fn payload_len(&self) -> usize {
        self.payload.len() + self.truncated
    }

    /// Parses a raw IP packet.
    pub fn parse_ip(bytes: &'a [u8]) -> Result<TcpPacket<'a>, WireError> {
        TcpPacket::parse(LinkType::RawIp, bytes)
    }

    /// The TFO option, if the segment carries one.
    pub fn fast_open(&self) -> Option<FastOpen<'a>> {
        find_fast_open(self.options).map(|(_, fo)| fo)
    }

    /// The options, parsed.
    pub fn options_iter(&self) -> OptionsIter<'a> {
        OptionsIter::new(self.options)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::options::{Cookie, FastOpenForm};

    /// Builds an IPv4 TCP packet with etherparse (the "construct" side).
    pub(crate) fn build_v4(flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut b = etherparse::PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64).tcp(40000, 8000, 1000, 64240);
        if flags & TcpFlags::SYN != 0 {
            b = b.syn();
        }
        if flags & TcpFlags::ACK != 0 {
            b = b.ack(77);
        }
        let b = b.options_raw(options).expect("options length is a multiple of 4");
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).expect("write");
        out
    }

    #[test]
    fn construct_then_deconstruct_syn_with_data_and_cookie() {
        let opts = [0x02, 0x04, 0x05, 0xb4, 0x22, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 0x01, 0x01];
        let bytes = build_v4(TcpFlags::SYN, &opts, b"GET / HTTP/1.1\r\n");
        let p = TcpPacket::parse_ip(&bytes).unwrap();
        assert_eq!((p.src.to_string(), p.dst_port, p.seq), ("198.18.0.1".into(), 8000, 1000));
        assert!(p.flags.is_syn() && !p.flags.is_syn_ack());
        assert_eq!(p.flags.to_string(), "SYN");
        assert_eq!(p.payload, b"GET / HTTP/1.1\r\n");
        let fo = p.fast_open().unwrap();
        assert_eq!((fo.form, fo.cookie), (FastOpenForm::Rfc7413, Cookie::Cookie(&[1, 2, 3, 4, 5, 6, 7, 8])));
        assert_eq!((p.ip_offset, p.tcp_offset), (0, 20));
    }

    #[test]
    fn ethernet_and_ipv6() {
        let ip = build_v4(TcpFlags::SYN | TcpFlags::ACK, &[], b"");
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ip);
        let p = TcpPacket::parse(LinkType::Ethernet, &frame).unwrap();
        assert_eq!((p.ip_offset, p.tcp_offset), (14, 34));
        assert_eq!(p.flags.to_string(), "SYN-ACK");

        let b = etherparse::PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).tcp(1, 2, 3, 4).syn();
        let mut v6 = Vec::new();
        b.write(&mut v6, b"x").unwrap();
        let p = TcpPacket::parse_ip(&v6).unwrap();
        assert!(p.src.is_ipv6());
        assert_eq!(p.tcp_offset, 40);
        assert_eq!(p.payload, b"x");
    }

    /// The same SYN behind each link header tfo trace decodes.
    #[test]
    fn every_link_type_gives_the_same_segment() {
        let ip = build_v4(TcpFlags::SYN, &[0x22, 0x02, 0x01, 0x01], b"hi");
        let mut sll = vec![0, 0, 0x03, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00]; // ARPHRD_LOOPBACK
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // TUN
        sll2.extend_from_slice(&ip);
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(&ip);
        for (link, frame) in [
            (LinkType::RawIp, &ip),
            (LinkType::LinuxSll, &sll),
            (LinkType::LinuxSll2, &sll2),
            (LinkType::Loopback, &null),
        ] {
            let p = TcpPacket::parse(link, frame).unwrap_or_else(|e| panic!("{link:?}: {e}"));
            assert_eq!((p.dst_port, p.payload, p.truncated), (8000, &b"hi"[..], 0), "{link:?}");
            assert!(p.fast_open().is_some());
            assert_eq!(LinkType::from_pcap(link.to_pcap()), Some(link));
        }
        assert_eq!(LinkType::from_pcap(276), Some(LinkType::LinuxSll2));
        assert_eq!(LinkType::from_pcap(108), Some(LinkType::Loopback));
        let mut arp = sll2.clone();
        arp[..2].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(TcpPacket::parse(LinkType::LinuxSll2, &arp), Err(WireError::NotIp));
    }

    #[test]
    fn a_snap_length_cut_keeps_the_headers_and_says_what_is_missing() {
        let ip = build_v4(TcpFlags::SYN, &[0x22, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1], &[b'x'; 500]);
        let cut = &ip[..80];
        let p = TcpPacket::parse_ip(cut).unwrap();
        assert_eq!((p.payload.len(), p.truncated, p.payload_len()), (80 - 52, 500 - 28, 500));
        assert!(p.fast_open().is_some());
    }

    #[test]
    fn fragments_are_named() {
        let mut ip = build_v4(TcpFlags::SYN, &[], b"data");
        ip[6] |= 0x20; // more fragments
        let sum = {
            ip[10] = 0;
            ip[11] = 0;
            let words = ip[..20].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])));
            let mut s: u32 = words.sum();
            while s > 0xffff {
                s = (s & 0xffff) + (s >> 16);
            }
            !(s as u16)
        };
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(TcpPacket::parse_ip(&ip), Err(WireError::Fragment));
    }

    /// Frames of every link type around IPv4 and IPv6 TCP packets, for the
    /// fast path's agreement with the full one.
    fn frames() -> Vec<(LinkType, Vec<u8>)> {
        let v4 = build_v4(TcpFlags::SYN, &[0x22, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1], b"GET / HTTP/1.1\r\n");
        let mut v6 = Vec::new();
        etherparse::PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).tcp(1, 2, 3, 4).syn().write(&mut v6, b"x").unwrap();
        let mut out = Vec::new();
        for ip in [v4, v6] {
            let ethertype: [u8; 2] = if ip[0] >> 4 == 4 { [0x08, 0x00] } else { [0x86, 0xdd] };
            let with = |head: Vec<u8>| [head, ip.clone()].concat();
            out.push((LinkType::RawIp, ip.clone()));
            out.push((LinkType::Loopback, with(vec![2, 0, 0, 0])));
            out.push((LinkType::Ethernet, with([vec![0; 12], ethertype.to_vec()].concat())));
            out.push((LinkType::LinuxSll, with([vec![0; 14], ethertype.to_vec()].concat())));
            out.push((LinkType::LinuxSll2, with([ethertype.to_vec(), vec![0; 18]].concat())));
        }
        out
    }

    proptest::proptest! {
        /// Whatever the bytes, the fast path either declines or gives what
        /// the full decode gives.
        #[test]
        fn the_fast_path_agrees_with_the_full_decode(
            which in 0usize..10,
            edits in proptest::collection::vec((0usize..120, proptest::prelude::any::<u8>()), 0..4),
            cut in 0usize..200,
            pad in 0usize..20,
        ) {
            let (link, mut frame) = frames().swap_remove(which);
            for (at, byte) in edits {
                if let Some(b) = frame.get_mut(at) {
                    *b = byte;
                }
            }
            frame.truncate(cut.max(1));
            frame.extend(std::iter::repeat_n(0u8, pad));
            if let Some(fast) = TcpPacket::parse_plain(link, &frame) {
                proptest::prop_assert_eq!(Ok(fast), TcpPacket::parse_any(link, &frame));
            }
        }
    }

    #[test]
    fn the_fast_path_takes_the_common_frames() {
        for (link, frame) in frames() {
            let fast = TcpPacket::parse_plain(link, &frame);
            assert!(fast.is_some(), "{link:?}");
            assert_eq!(fast.ok_or(WireError::NotIp), TcpPacket::parse_any(link, &frame), "{link:?}");
        }
    }

    #[test]
    fn truncated_and_not_tcp() {
        let bytes = build_v4(TcpFlags::SYN, &[], b"hello");
        for cut in [0, 1, 10, 19, 20, 30, 39] {
            assert!(TcpPacket::parse_ip(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let udp = {
            let b = etherparse::PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9).udp(1, 2);
            let mut v = Vec::new();
            b.write(&mut v, b"u").unwrap();
            v
        };
        assert_eq!(TcpPacket::parse_ip(&udp), Err(WireError::NotTcp));
        let arp_frame = [0u8; 12].iter().copied().chain([0x08, 0x06]).chain([0u8; 28]).collect::<Vec<_>>();
        assert!(TcpPacket::parse(LinkType::Ethernet, &arp_frame).is_err());
    }
}
