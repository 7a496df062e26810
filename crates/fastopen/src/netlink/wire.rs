//! Netlink framing, pure: message headers and attributes
//! (`include/uapi/linux/netlink.h`) built and walked by hand, over bytes
//! only (no I/O). A length that does not fit ends a walk: hostile or cut
//! bytes never panic and never invent a message.

pub(crate) const NLMSG_HDR: usize = 16;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
/// An attribute type's flag bits (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`).
const NLA_TYPE_MASK: u16 = 0x3fff;

pub(crate) fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn u64_ne(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One request message: the header, then `payload`.
pub(crate) fn request(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDR + payload.len());
    m.extend_from_slice(&((NLMSG_HDR + payload.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

/// One attribute, padded to 4 bytes.
pub(crate) fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(align4(a.len()), 0);
    a
}

/// The messages in `buf`: (type, body after the header), in order.
pub(crate) fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    messages_with_seq(buf).map(|(kind, _, body)| (kind, body))
}

/// The messages in `buf`: (type, sequence number, body), in order.
pub(crate) fn messages_with_seq(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let len = u32_ne(buf, at)? as usize;
        let kind = u16_ne(buf, at.checked_add(4)?)?;
        let seq = u32_ne(buf, at.checked_add(8)?)?;
        let end = at.checked_add(len)?;
        if len < NLMSG_HDR || end > buf.len() {
            return None;
        }
        let body = &buf[at + NLMSG_HDR..end];
        at = at.checked_add(align4(len))?;
        Some((kind, seq, body))
    })
}

/// The attributes in `buf`: (type without its flag bits, value).
pub(crate) fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = u16_ne(buf, at)? as usize;
        let kind = u16_ne(buf, at + 2)?;
        if len < 4 || at + len > buf.len() {
            return None;
        }
        let value = &buf[at + 4..at + len];
        at += align4(len);
        Some((kind & NLA_TYPE_MASK, value))
    })
}

/// The errno of an `NLMSG_ERROR` body (0: an acknowledgement).
pub(crate) fn error_code(body: &[u8]) -> i32 {
    u32_ne(body, 0).map_or(0, |e| (e as i32).saturating_neg())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_its_header_and_payload() {
        let m = request(20, NLM_F_REQUEST | NLM_F_DUMP, 7, &[1, 2, 3, 4]);
        assert_eq!(m.len(), 20);
        assert_eq!(u32_ne(&m, 0), Some(20));
        assert_eq!(u16_ne(&m, 4), Some(20));
        assert_eq!(u16_ne(&m, 6), Some(0x301));
        assert_eq!(u32_ne(&m, 8), Some(7));
        assert_eq!(u32_ne(&m, 12), Some(0), "port id 0: the kernel");
        assert_eq!(&m[16..], &[1, 2, 3, 4]);
    }

    #[test]
    fn attributes_are_padded_and_walked_back() {
        let mut buf = attribute(2, b"tcp_metrics\0");
        assert_eq!(buf.len(), 16);
        assert_eq!((u16_ne(&buf, 0), u16_ne(&buf, 2)), (Some(16), Some(2)));
        buf.extend(attribute(0x8000 | 6, &[9; 5]));
        let found: Vec<(u16, Vec<u8>)> = attributes(&buf).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(found, vec![(2, b"tcp_metrics\0".to_vec()), (6, vec![9; 5])], "the nested flag is dropped");
    }

    #[test]
    fn sequence_numbers_are_read_with_each_message() {
        let mut two = request(20, 0, 7, b"abcd");
        two.extend(request(3, 0, 8, b""));
        let seen: Vec<(u16, u32)> = messages_with_seq(&two).map(|(k, s, _)| (k, s)).collect();
        assert_eq!(seen, [(20, 7), (3, 8)]);
    }

    #[test]
    fn hostile_lengths_end_the_walk() {
        let mut two = request(16, 0, 1, &[0; 4]);
        two.extend(request(3, 0, 1, &[]));
        assert_eq!(messages(&two).map(|(k, _)| k).collect::<Vec<_>>(), [16, 3]);
        for cut in 0..two.len() {
            assert!(messages(&two[..cut]).count() <= 1, "cut at {cut}");
        }
        let mut zero = two.clone();
        zero[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(messages(&zero).count(), 0, "a zero length cannot loop");
        let mut huge = attribute(1, &[1, 2]);
        huge[0..2].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(attributes(&huge).count(), 0);
        assert_eq!(attributes(&[3, 0, 1, 0]).count(), 0, "shorter than its header");
        assert_eq!(error_code(&(-13i32).to_ne_bytes()), 13);
        assert_eq!(error_code(&[]), 0);
        assert_eq!(error_code(&i32::MIN.to_ne_bytes()), i32::MAX, "no overflow");
    }
}
