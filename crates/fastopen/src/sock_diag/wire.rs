//! sock_diag's messages, pure: the dump request and the sockets of an answer
//! or a destroy notification, encoded and decoded by hand over bytes (no
//! I/O), tested on bytes and fuzzed. Layouts:
//! `include/uapi/linux/{netlink,sock_diag,inet_diag}.h`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::netlink::{self, u32_ne, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST};
use crate::tcp_info::TcpInfo;

/// `SOCK_DIAG_BY_FAMILY`: the request and answer type.
pub(super) const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `INET_DIAG_INFO`: the attribute holding `struct tcp_info`.
const INET_DIAG_INFO: u16 = 2;
const IPPROTO_TCP: u8 = 6;
/// `struct inet_diag_msg`.
const DIAG_MSG: usize = 72;
/// `tcpi_state` / `idiag_state` of a listening socket.
pub const TCP_LISTEN: u8 = 10;

/// One TCP socket as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiagSocket {
    /// This host's end.
    pub local: SocketAddr,
    /// The other end (unspecified for a listener).
    pub peer: SocketAddr,
    /// `idiag_state` (1 ESTABLISHED, 2 SYN_SENT, 10 LISTEN, ...).
    pub state: u8,
    /// The owner's user id.
    pub uid: u32,
    /// The socket's inode (0 once its file is closed): finds the owning process.
    pub inode: u32,
    /// The kernel's cookie for the socket: unique while it lives.
    pub cookie: u64,
    /// Its `tcp_info`, when the kernel attached one.
    pub info: Option<TcpInfo>,
}

/// Which end of a connection this host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
pub enum Role {
    /// This host sent the SYN.
    Client,
    /// This host accepted it (the local port is a listener's).
    Server,
}

impl Role {
    /// `client` or `server`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }

    /// A connection's role, from the namespace's listening sockets: `Server`
    /// when one listens on its local port, on its address or a wildcard.
    /// (sock_diag does not say who sent the SYN; a client that connects from
    /// a port some listener also uses is taken for a server.)
    pub fn of(socket: &DiagSocket, listeners: &[SocketAddr]) -> Role {
        let serves = listeners
            .iter()
            .any(|l| l.port() == socket.local.port() && (l.ip() == socket.local.ip() || l.ip().is_unspecified()));
        if serves {
            Role::Server
        } else {
            Role::Client
        }
    }
}

/// The TFO outcome of a connection seen through sock_diag, with the
/// library's reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeenOutcome {
    /// Which end this host is.
    pub role: Role,
    /// Client: the SYN's data was acknowledged; server: the SYN's data was accepted.
    pub tfo_used: bool,
    /// Client only: why not (`cookie_unavailable`, ...); `not_requested` when
    /// the kernel reports no attempt (the program did not ask, or the kernel
    /// skipped it), `client_disabled` when the namespace has client TFO off.
    pub fail_reason: Option<crate::FailReason>,
    /// Server only: the connection was made by TFO on a cookie SYN without
    /// data (a client that reads first; kernels since 6.16 say so). A
    /// client's `tcp_info` does not tell a cookie-only SYN from a plain one.
    pub cookie_only_syn: bool,
}

impl DiagSocket {
    /// The TFO outcome, `None` without `tcp_info`. `client_tfo_enabled`: the
    /// namespace's `net.ipv4.tcp_fastopen` has the client bit.
    pub fn outcome(&self, role: Role, client_tfo_enabled: bool) -> Option<SeenOutcome> {
        Some(SeenOutcome::from_tcp_info(role, self.info.as_ref()?, client_tfo_enabled))
    }
}

impl SeenOutcome {
    /// The outcome of a connection whose `tcp_info` is `info`, read at any
    /// time after its handshake (sock_diag's dump, its close).
    pub fn from_tcp_info(role: Role, info: &TcpInfo, client_tfo_enabled: bool) -> SeenOutcome {
        use crate::FailReason;
        let tfo_used = info.syn_data();
        let fail_reason = match role {
            Role::Server => None,
            Role::Client if tfo_used => None,
            Role::Client => Some(match info.fastopen_client_fail {
                1 => FailReason::CookieUnavailable,
                2 => FailReason::DataNotAcked,
                3 => FailReason::SynRetransmitted,
                _ if !client_tfo_enabled => FailReason::ClientDisabled,
                _ => FailReason::NotRequested,
            }),
        };
        let cookie_only_syn = role == Role::Server && !tfo_used && info.tfo_child();
        SeenOutcome { role, tfo_used, fail_reason, cookie_only_syn }
    }
}

/// A message of a sock_diag answer, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Socket(DiagSocket),
    Done,
    /// `NLMSG_ERROR` with this errno (0 is an acknowledgement).
    Error(i32),
    Other,
}

/// The request for every TCP socket of `family` (`AF_INET` or `AF_INET6`)
/// in every state, with `tcp_info`.
pub(super) fn dump_request(family: u8, seq: u32) -> Vec<u8> {
    // struct inet_diag_req_v2: family, protocol, extensions, pad, states, id.
    let mut req = vec![family, IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0];
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&[0u8; 48]);
    netlink::request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, &req)
}

/// The netlink messages in `buf`, in order.
pub(crate) fn parse(buf: &[u8]) -> Vec<Message> {
    netlink::messages(buf)
        .map(|(kind, body)| match kind {
            NLMSG_DONE => Message::Done,
            NLMSG_ERROR => Message::Error(netlink::error_code(body)),
            SOCK_DIAG_BY_FAMILY => diag_socket(body).map_or(Message::Other, Message::Socket),
            _ => Message::Other,
        })
        .collect()
}

/// `struct inet_diag_msg` and its attributes.
pub(crate) fn diag_socket(body: &[u8]) -> Option<DiagSocket> {
    if body.len() < DIAG_MSG {
        return None;
    }
    let family = body[0];
    let id = &body[4..52];
    let port = |at: usize| u16::from_be_bytes([id[at], id[at + 1]]);
    let ip = |at: usize| -> Option<IpAddr> {
        match family {
            2 => Some(IpAddr::V4(Ipv4Addr::new(id[at], id[at + 1], id[at + 2], id[at + 3]))),
            10 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&id[at..at + 16]).ok()?))),
            _ => None,
        }
    };
    let cookie = u64::from(u32_ne(id, 40)?) | (u64::from(u32_ne(id, 44)?) << 32);
    let info = netlink::attributes(&body[DIAG_MSG..])
        .filter(|(kind, _)| *kind == INET_DIAG_INFO)
        .find_map(|(_, value)| TcpInfo::parse(value).ok());
    Some(DiagSocket {
        local: SocketAddr::new(ip(4)?, port(0)),
        peer: SocketAddr::new(ip(20)?, port(2)),
        state: body[1],
        uid: u32_ne(body, 64)?,
        inode: u32_ne(body, 68)?,
        cookie,
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{u16_ne, NLMSG_HDR};

    #[test]
    fn the_dump_request_is_the_kernel_layout() {
        let m = dump_request(2, 7);
        assert_eq!(m.len(), 72);
        assert_eq!(u32_ne(&m, 0), Some(72));
        assert_eq!(u16_ne(&m, 4), Some(20));
        assert_eq!(u16_ne(&m, 6), Some(0x301));
        assert_eq!(u32_ne(&m, 8), Some(7));
        assert_eq!(&m[16..20], &[2, 6, 0b10, 0], "AF_INET, IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1)");
        assert_eq!(u32_ne(&m, 20), Some(u32::MAX), "every state");
        assert!(m[24..].iter().all(|b| *b == 0));
    }

    /// A `SOCK_DIAG_BY_FAMILY` message as the kernel sends it.
    fn message(family: u8, local: (&[u8], u16), peer: (&[u8], u16), info: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![family, 1, 0, 0];
        let mut id = [0u8; 48];
        id[0..2].copy_from_slice(&local.1.to_be_bytes());
        id[2..4].copy_from_slice(&peer.1.to_be_bytes());
        id[4..4 + local.0.len()].copy_from_slice(local.0);
        id[20..20 + peer.0.len()].copy_from_slice(peer.0);
        id[40..44].copy_from_slice(&0x1234u32.to_ne_bytes());
        id[44..48].copy_from_slice(&0x1u32.to_ne_bytes());
        body.extend_from_slice(&id);
        body.extend_from_slice(&[0u8; 12]);
        body.extend_from_slice(&1000u32.to_ne_bytes());
        body.extend_from_slice(&4242u32.to_ne_bytes());
        if let Some(info) = info {
            body.extend_from_slice(&((4 + info.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
            body.extend_from_slice(info);
            body.resize((body.len() + 3) & !3, 0);
        }
        let mut m = ((NLMSG_HDR + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn sockets_with_and_without_tcp_info() {
        let mut info = [0u8; 232];
        info[0] = 1;
        info[5] = crate::TCPI_OPT_SYN_DATA;
        let mut buf = message(2, (&[127, 0, 0, 1], 40000), (&[127, 0, 0, 2], 8000), Some(&info));
        let v6 = Ipv6Addr::LOCALHOST.octets();
        buf.extend(message(10, (&v6, 8000), (&v6, 50000), None));
        let mut done = (NLMSG_HDR as u32 + 4).to_ne_bytes().to_vec();
        done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        done.extend_from_slice(&[0u8; 14]);
        buf.extend(done);
        let messages = parse(&buf);
        assert_eq!(messages.len(), 3);
        let Message::Socket(s) = &messages[0] else { panic!("{messages:?}") };
        assert_eq!((s.local, s.peer), ("127.0.0.1:40000".parse().unwrap(), "127.0.0.2:8000".parse().unwrap()));
        assert_eq!((s.state, s.uid, s.inode, s.cookie), (1, 1000, 4242, 0x1_0000_1234));
        assert!(s.info.unwrap().syn_data());
        let Message::Socket(s) = &messages[1] else { panic!("{messages:?}") };
        assert_eq!((s.local, s.info), ("[::1]:8000".parse().unwrap(), None));
        assert_eq!(messages[2], Message::Done);
    }

    #[test]
    fn roles_and_outcomes() {
        let mut info = [0u8; 232];
        info[0] = 1;
        let sock = |local: &str, info: Option<&[u8]>| DiagSocket {
            local: local.parse().unwrap(),
            peer: "10.0.0.9:5000".parse().unwrap(),
            state: 1,
            uid: 0,
            inode: 0,
            cookie: 0,
            info: info.map(|b| TcpInfo::parse(b).unwrap()),
        };
        let listeners: Vec<SocketAddr> = vec!["0.0.0.0:80".parse().unwrap(), "10.0.0.1:443".parse().unwrap()];
        assert_eq!(Role::of(&sock("10.0.0.1:80", None), &listeners), Role::Server);
        assert_eq!(Role::of(&sock("10.0.0.1:443", None), &listeners), Role::Server);
        assert_eq!(Role::of(&sock("10.0.0.2:443", None), &listeners), Role::Client);
        assert_eq!(sock("10.0.0.1:80", None).outcome(Role::Server, true), None);
        let mut reason = |fail: u8, enabled: bool| {
            info[7] = fail << 1;
            sock("10.0.0.2:4000", Some(&info)).outcome(Role::Client, enabled).unwrap().fail_reason
        };
        use crate::FailReason::*;
        assert_eq!(reason(1, true), Some(CookieUnavailable));
        assert_eq!(reason(2, true), Some(DataNotAcked));
        assert_eq!(reason(3, true), Some(SynRetransmitted));
        assert_eq!(reason(0, true), Some(NotRequested));
        assert_eq!(reason(0, false), Some(ClientDisabled));
        info[5] = crate::TCPI_OPT_SYN_DATA;
        let used = sock("10.0.0.1:80", Some(&info)).outcome(Role::Server, true).unwrap();
        assert_eq!((used.tfo_used, used.fail_reason), (true, None));
    }

    #[test]
    fn hostile_bytes_never_panic_nor_invent_sockets() {
        let good = message(2, (&[10, 0, 0, 1], 1), (&[10, 0, 0, 2], 2), Some(&[1u8; 100]));
        for cut in 0..good.len() {
            let messages = parse(&good[..cut]);
            assert!(messages.iter().all(|m| !matches!(m, Message::Socket(_))), "cut at {cut}: {messages:?}");
        }
        let mut bad_family = good.clone();
        bad_family[16] = 99;
        assert_eq!(parse(&bad_family), [Message::Other]);
        let mut zero_len = good.clone();
        zero_len[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(parse(&zero_len).is_empty(), "a zero length cannot loop");
        let mut short_attr = good;
        short_attr[16 + 72..16 + 74].copy_from_slice(&2u16.to_ne_bytes());
        let Message::Socket(s) = &parse(&short_attr)[0] else { panic!() };
        assert_eq!(s.info, None, "an attribute shorter than its header is skipped");
        let mut err = (NLMSG_HDR as u32 + 4).to_ne_bytes().to_vec();
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&[0u8; 10]);
        err.extend_from_slice(&(-13i32).to_ne_bytes());
        assert_eq!(parse(&err), [Message::Error(13)]);
    }
}
