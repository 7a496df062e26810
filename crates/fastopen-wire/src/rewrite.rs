//! In-place edits of IP/TCP packets, as the lab's middleboxes make them.

use etherparse::TcpSlice;

use crate::options::{find_fast_open, kind};
use crate::packet::{LinkType, TcpPacket, WireError};

/// Replaces the TFO option (kind 34 or 254/F989) of a raw IP packet with NOPs,
/// as a middlebox that strips unknown options does, and fixes the TCP checksum.
/// Returns whether an option was removed.
pub fn strip_fast_open(packet: &mut [u8]) -> Result<bool, WireError> {
    let (range, tcp_offset) = {
        let p = TcpPacket::parse(LinkType::RawIp, packet)?;
        if p.truncated > 0 {
            // The checksum covers bytes we do not have.
            return Err(WireError::Malformed("a truncated packet cannot be rewritten".into()));
        }
        match find_fast_open(p.options) {
            Some((range, _)) => (range, p.tcp_offset),
            None => return Ok(false),
        }
    };
    let start = tcp_offset + 20 + range.start;
    let end = tcp_offset + 20 + range.end;
    packet.get_mut(start..end).ok_or_else(|| WireError::Malformed("option beyond packet".into()))?.fill(kind::NOP);
    fix_tcp_checksum(packet)?;
    Ok(true)
}

/// Recomputes the TCP checksum of a raw IP packet in place.
pub fn fix_tcp_checksum(packet: &mut [u8]) -> Result<(), WireError> {
    let (src, dst, tcp_offset, tcp_end) = {
        let p = TcpPacket::parse(LinkType::RawIp, packet)?;
        (p.src, p.dst, p.tcp_offset, p.tcp_offset + tcp_len(&p))
    };
    packet[tcp_offset + 16..tcp_offset + 18].fill(0);
    let segment =
        packet.get(tcp_offset..tcp_end).ok_or_else(|| WireError::Malformed("segment beyond packet".into()))?;
    let tcp = TcpSlice::from_slice(segment).map_err(|e| WireError::Malformed(e.to_string()))?;
    let sum = match (src, dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => tcp.calc_checksum_ipv4(s.octets(), d.octets()),
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => tcp.calc_checksum_ipv6(s.octets(), d.octets()),
        _ => return Err(WireError::Malformed("mixed address families".into())),
    }
    .map_err(|e| WireError::Malformed(e.to_string()))?;
    packet[tcp_offset + 16..tcp_offset + 18].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

fn tcp_len(p: &TcpPacket<'_>) -> usize {
    20 + p.options.len() + p.payload.len()
}

/// Whether the TCP checksum of a raw IP packet is right.
pub fn tcp_checksum_ok(packet: &[u8]) -> Result<bool, WireError> {
    let mut copy = packet.to_vec();
    fix_tcp_checksum(&mut copy)?;
    Ok(copy == packet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::build_v4;
    use crate::packet::TcpFlags;
    use proptest::prelude::*;

    #[test]
    fn strip_replaces_with_nops_and_keeps_checksum_valid() {
        let opts = [0x02, 0x04, 0x05, 0xb4, 0x22, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 0x01, 0x01];
        let mut p = build_v4(TcpFlags::SYN, &opts, b"data");
        assert!(tcp_checksum_ok(&p).unwrap());
        assert!(strip_fast_open(&mut p).unwrap());
        let parsed = TcpPacket::parse_ip(&p).unwrap();
        assert_eq!(parsed.fast_open(), None);
        assert_eq!(&parsed.options[..4], &[0x02, 0x04, 0x05, 0xb4], "other options untouched");
        assert_eq!(parsed.payload, b"data");
        assert!(tcp_checksum_ok(&p).unwrap());
        assert!(!strip_fast_open(&mut p).unwrap(), "nothing left to strip");
    }

    #[test]
    fn strip_experimental_form() {
        let mut p = build_v4(TcpFlags::SYN, &[0xfe, 0x04, 0xf9, 0x89], b"");
        assert!(strip_fast_open(&mut p).unwrap());
        assert!(TcpPacket::parse_ip(&p).unwrap().fast_open().is_none());
        assert!(tcp_checksum_ok(&p).unwrap());
    }

    fn tfo_option() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(vec![0x22, 0x02, 0x01, 0x01]),
            proptest::collection::vec(any::<u8>(), 8).prop_map(|c| [vec![0x22, 0x0a], c, vec![1, 1]].concat()),
            proptest::collection::vec(any::<u8>(), 4).prop_map(|c| [vec![0xfe, 0x08, 0xf9, 0x89], c].concat()),
        ]
    }

    proptest! {
        /// parse -> emit -> parse: what we build with the option is what we read back,
        /// and stripping leaves every other field and a valid checksum.
        #[test]
        fn roundtrip(tfo in tfo_option(), payload in proptest::collection::vec(any::<u8>(), 0..1400), syn_ack in any::<bool>()) {
            let flags = if syn_ack { TcpFlags::SYN | TcpFlags::ACK } else { TcpFlags::SYN };
            let mut bytes = build_v4(flags, &tfo, &payload);
            let before = TcpPacket::parse_ip(&bytes).unwrap();
            prop_assert!(before.fast_open().is_some());
            prop_assert_eq!(before.payload, &payload[..]);
            let (seq, ack, window) = (before.seq, before.ack, before.window);
            prop_assert!(strip_fast_open(&mut bytes).unwrap());
            let after = TcpPacket::parse_ip(&bytes).unwrap();
            prop_assert!(after.fast_open().is_none());
            prop_assert_eq!((after.seq, after.ack, after.window, after.flags.0), (seq, ack, window, flags));
            prop_assert_eq!(after.payload, &payload[..]);
            prop_assert!(tcp_checksum_ok(&bytes).unwrap());
        }

        /// Hostile bytes never panic.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = TcpPacket::parse_ip(&bytes).map(|p| p.options_iter().count());
            let _ = TcpPacket::parse(LinkType::Ethernet, &bytes);
            let mut copy = bytes.clone();
            let _ = strip_fast_open(&mut copy);
            let _ = crate::options::OptionsIter::new(&bytes).count();
        }
    }
}
