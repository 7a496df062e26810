//! A zero-copy view of one TCP segment in an IPv4 or IPv6 packet.

use std::fmt;
use std::net::IpAddr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use crate::options::{find_fast_open, FastOpen, OptionsIter};

/// How a captured frame begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// An IP packet with no link header (TUN devices, pcap LINKTYPE_RAW).
    RawIp,
    /// An Ethernet II frame (also what `lo` gives to packet sockets).
    Ethernet,
    /// Linux "cooked" capture (pcap LINKTYPE_LINUX_SLL, `-i any`).
    LinuxSll,
}

impl LinkType {
    /// From a pcap link-layer header type number.
    pub fn from_pcap(linktype: u32) -> Option<LinkType> {
        match linktype {
            1 => Some(LinkType::Ethernet),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            113 => Some(LinkType::LinuxSll),
            _ => None,
        }
    }

    /// The pcap link-layer header type number.
    pub fn to_pcap(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::RawIp => 101,
            LinkType::LinuxSll => 113,
        }
    }
}

/// Why bytes are not a TCP segment we can read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Not an IPv4 or IPv6 packet (ARP, or another ether type).
    NotIp,
    /// IP, but not TCP (or a non-first fragment).
    NotTcp,
    /// The headers are cut short or inconsistent; the text says how.
    Malformed(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::NotIp => f.write_str("not an IP packet"),
            WireError::NotTcp => f.write_str("not a TCP segment"),
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
    /// The TCP payload.
    pub payload: &'a [u8],
    /// Where the IP header starts in the parsed bytes (after any link header).
    pub ip_offset: usize,
    /// Where the TCP header starts in the parsed bytes.
    pub tcp_offset: usize,
}

fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

impl<'a> TcpPacket<'a> {
    /// Parses a frame of the given link type.
    pub fn parse(link: LinkType, bytes: &'a [u8]) -> Result<TcpPacket<'a>, WireError> {
        let sliced = match link {
            LinkType::RawIp => SlicedPacket::from_ip(bytes),
            LinkType::Ethernet => SlicedPacket::from_ethernet(bytes),
            LinkType::LinuxSll => SlicedPacket::from_linux_sll(bytes),
        }
        .map_err(|e| WireError::Malformed(e.to_string()))?;
        let (src, dst, ip_offset) = match &sliced.net {
            Some(NetSlice::Ipv4(v4)) => {
                let h = v4.header();
                (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr()), offset_in(bytes, h.slice()))
            }
            Some(NetSlice::Ipv6(v6)) => {
                let h = v6.header();
                (IpAddr::V6(h.source_addr()), IpAddr::V6(h.destination_addr()), offset_in(bytes, h.slice()))
            }
            _ => return Err(WireError::NotIp),
        };
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else { return Err(WireError::NotTcp) };
        let flags = tcp.header_slice().get(13).copied().unwrap_or(0);
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
            ip_offset,
            tcp_offset: offset_in(bytes, tcp.header_slice()),
        })
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
