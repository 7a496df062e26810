//! tcp_metrics' messages, pure: the family lookup, the dump and delete
//! requests, and the entries of an answer, built and decoded by hand over
//! bytes (no I/O), tested on bytes and fuzzed. Layout:
//! `include/uapi/linux/{genetlink,tcp_metrics}.h`; the kernel side:
//! `net/ipv4/tcp_metrics.c` (`tcp_metrics_fill_info`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::mode::FastOpenMode;
use crate::netlink::{self, u16_ne, u64_ne, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use crate::outcome::FailReason;

/// Generic netlink's controller, which names families.
pub(super) const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const FAMILY_NAME: &[u8] = b"tcp_metrics\0";
const TCP_METRICS_CMD_GET: u8 = 1;
const TCP_METRICS_CMD_DEL: u8 = 2;
const TCP_METRICS_GENL_VERSION: u8 = 1;
/// `struct genlmsghdr`: cmd, version, reserved.
const GENL_HDR: usize = 4;

const ATTR_ADDR_IPV4: u16 = 1;
const ATTR_ADDR_IPV6: u16 = 2;
const ATTR_AGE: u16 = 3;
const ATTR_FOPEN_MSS: u16 = 7;
const ATTR_FOPEN_SYN_DROPS: u16 = 8;
const ATTR_FOPEN_SYN_DROP_TS: u16 = 9;
const ATTR_FOPEN_COOKIE: u16 = 10;
const ATTR_SADDR_IPV4: u16 = 11;
const ATTR_SADDR_IPV6: u16 = 12;

/// One destination the kernel keeps TCP metrics for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedDestination {
    /// The destination address.
    pub peer: IpAddr,
    /// The source address the entry is for (kernels since 4.1 key on both).
    pub source: Option<IpAddr>,
    /// The TFO cookie the server gave, if any (4 to 16 bytes).
    pub cookie: Option<Vec<u8>>,
    /// The server's MSS remembered for SYN data.
    pub mss: Option<u16>,
    /// SYNs with data that went unanswered (recorded, no longer consulted).
    pub syn_drops: u16,
    /// How long ago the last of them was.
    pub last_syn_drop: Option<Duration>,
    /// How long since the entry was updated.
    pub age: Duration,
}

impl CachedDestination {
    /// Whether the next TFO connection to this destination (from this
    /// source) carries data in its SYN, under the namespace's `mode`: `None`
    /// if it will, else the library's reason why not (`client_disabled`,
    /// `cookie_unavailable`). The kernel may still refuse for a reason not
    /// kept here: an active blackhole detection, or a route with fastopen_no_cookie.
    pub fn syn_data_verdict(&self, mode: FastOpenMode) -> Option<FailReason> {
        if !mode.client() {
            Some(FailReason::ClientDisabled)
        } else if self.cookie.is_some() || mode.client_no_cookie() {
            None
        } else {
            Some(FailReason::CookieUnavailable)
        }
    }
}

/// `TCP_METRICS_CMD_DEL` for one destination address.
pub(super) fn delete_request(family: u16, seq: u32, peer: IpAddr) -> Vec<u8> {
    let mut payload = vec![TCP_METRICS_CMD_DEL, TCP_METRICS_GENL_VERSION, 0, 0];
    match peer {
        IpAddr::V4(a) => payload.extend(netlink::attribute(ATTR_ADDR_IPV4, &a.octets())),
        IpAddr::V6(a) => payload.extend(netlink::attribute(ATTR_ADDR_IPV6, &a.octets())),
    }
    netlink::request(family, NLM_F_REQUEST | NLM_F_ACK, seq, &payload)
}

pub(super) fn family_request(seq: u32) -> Vec<u8> {
    let mut payload = vec![CTRL_CMD_GETFAMILY, 1, 0, 0];
    payload.extend(netlink::attribute(CTRL_ATTR_FAMILY_NAME, FAMILY_NAME));
    netlink::request(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, &payload)
}

pub(crate) fn family_id(body: &[u8]) -> Option<u16> {
    netlink::attributes(body.get(GENL_HDR..)?)
        .find(|(kind, _)| *kind == CTRL_ATTR_FAMILY_ID)
        .and_then(|(_, v)| u16_ne(v, 0))
}

pub(super) fn dump_request(family: u16, seq: u32) -> Vec<u8> {
    netlink::request(family, NLM_F_REQUEST | NLM_F_DUMP, seq, &[TCP_METRICS_CMD_GET, TCP_METRICS_GENL_VERSION, 0, 0])
}

/// One entry; `None` without a destination address.
pub(crate) fn destination(body: &[u8]) -> Option<CachedDestination> {
    let mut peer = None;
    let mut d = CachedDestination {
        peer: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        source: None,
        cookie: None,
        mss: None,
        syn_drops: 0,
        last_syn_drop: None,
        age: Duration::ZERO,
    };
    let millis = |v: &[u8]| u64_ne(v, 0).map(Duration::from_millis);
    for (kind, v) in netlink::attributes(body.get(GENL_HDR..)?) {
        match kind {
            ATTR_ADDR_IPV4 | ATTR_ADDR_IPV6 => peer = address(v),
            ATTR_SADDR_IPV4 | ATTR_SADDR_IPV6 => d.source = address(v),
            ATTR_AGE => d.age = millis(v).unwrap_or_default(),
            ATTR_FOPEN_MSS => d.mss = u16_ne(v, 0),
            ATTR_FOPEN_SYN_DROPS => d.syn_drops = u16_ne(v, 0).unwrap_or_default(),
            ATTR_FOPEN_SYN_DROP_TS => d.last_syn_drop = millis(v),
            ATTR_FOPEN_COOKIE if !v.is_empty() => d.cookie = Some(v.to_vec()),
            _ => {}
        }
    }
    d.peer = peer?;
    Some(d)
}

/// An address attribute, in network byte order.
fn address(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{attribute, u32_ne};

    #[test]
    fn the_family_lookup_and_the_dump_are_the_kernel_layout() {
        let m = family_request(1);
        assert_eq!(u32_ne(&m, 0), Some(36));
        assert_eq!(u16_ne(&m, 4), Some(0x10), "GENL_ID_CTRL");
        assert_eq!(u16_ne(&m, 6), Some(0x5), "request, ack");
        assert_eq!(&m[16..20], &[3, 1, 0, 0], "CTRL_CMD_GETFAMILY, version 1");
        assert_eq!((u16_ne(&m, 20), u16_ne(&m, 22)), (Some(16), Some(2)), "CTRL_ATTR_FAMILY_NAME, 12 bytes");
        assert_eq!(&m[24..36], b"tcp_metrics\0");
        let d = dump_request(0x1d, 9);
        assert_eq!((u32_ne(&d, 0), u16_ne(&d, 4), u16_ne(&d, 6)), (Some(20), Some(0x1d), Some(0x301)));
        assert_eq!(&d[16..], &[1, 1, 0, 0], "TCP_METRICS_CMD_GET, version 1");
    }

    #[test]
    fn the_family_id_is_read_from_the_controller_answer() {
        let mut body = vec![1, 2, 0, 0];
        body.extend(attribute(CTRL_ATTR_FAMILY_NAME, FAMILY_NAME));
        body.extend(attribute(CTRL_ATTR_FAMILY_ID, &0x1du16.to_ne_bytes()));
        assert_eq!(family_id(&body), Some(0x1d));
        assert_eq!(family_id(&body[..20]), None, "cut before the id");
        assert_eq!(family_id(&[1]), None);
    }

    fn entry(attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![TCP_METRICS_CMD_GET, 1, 0, 0];
        attrs.iter().for_each(|a| body.extend(a));
        body
    }

    #[test]
    fn an_entry_with_a_cookie_as_the_kernel_sends_it() {
        let body = entry(&[
            attribute(ATTR_ADDR_IPV4, &[10, 0, 0, 2]),
            attribute(ATTR_SADDR_IPV4, &[10, 0, 0, 1]),
            attribute(ATTR_AGE, &1500u64.to_ne_bytes()),
            attribute(0x8000 | 6, &attribute(1, &5u32.to_ne_bytes())),
            attribute(ATTR_FOPEN_MSS, &1460u16.to_ne_bytes()),
            attribute(ATTR_FOPEN_SYN_DROPS, &2u16.to_ne_bytes()),
            attribute(ATTR_FOPEN_SYN_DROP_TS, &300u64.to_ne_bytes()),
            attribute(ATTR_FOPEN_COOKIE, &[0xaa; 8]),
        ]);
        let d = destination(&body).unwrap();
        assert_eq!(d.peer, IpAddr::from([10, 0, 0, 2]));
        assert_eq!(d.source, Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!((d.age, d.mss, d.syn_drops), (Duration::from_millis(1500), Some(1460), 2));
        assert_eq!(d.last_syn_drop, Some(Duration::from_millis(300)));
        assert_eq!(d.cookie.as_deref(), Some(&[0xaa; 8][..]));
        assert_eq!(d.syn_data_verdict(FastOpenMode(1)), None);
        assert_eq!(d.syn_data_verdict(FastOpenMode(2)), Some(FailReason::ClientDisabled));
    }

    #[test]
    fn an_entry_without_a_cookie() {
        let v6 = Ipv6Addr::LOCALHOST.octets();
        let d = destination(&entry(&[attribute(ATTR_ADDR_IPV6, &v6), attribute(ATTR_SADDR_IPV6, &v6)])).unwrap();
        assert_eq!((d.peer, d.cookie.clone(), d.mss), (IpAddr::V6(Ipv6Addr::LOCALHOST), None, None));
        assert_eq!(d.syn_data_verdict(FastOpenMode(3)), Some(FailReason::CookieUnavailable));
        assert_eq!(d.syn_data_verdict(FastOpenMode(0x5)), None, "client without cookies");
    }

    #[test]
    fn hostile_entries_never_panic_nor_invent_destinations() {
        let body = entry(&[attribute(ATTR_ADDR_IPV4, &[10, 0, 0, 2]), attribute(ATTR_FOPEN_COOKIE, &[1; 8])]);
        for cut in 0..body.len() {
            let d = destination(&body[..cut]);
            assert!(d.as_ref().is_none_or(|d| d.peer == IpAddr::from([10, 0, 0, 2])), "cut at {cut}: {d:?}");
        }
        assert_eq!(destination(&entry(&[attribute(ATTR_ADDR_IPV4, &[1, 2, 3])])), None, "a 3-byte address");
        let short =
            destination(&entry(&[attribute(ATTR_ADDR_IPV4, &[1, 2, 3, 4]), attribute(ATTR_AGE, &[1])])).unwrap();
        assert_eq!(short.age, Duration::ZERO);
    }
}
