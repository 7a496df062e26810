//! `struct tcp_info` as the kernel returns it from `getsockopt(TCP_INFO)`.
//!
//! The structure grows with kernel releases (232 bytes in 6.1 headers, 280 on
//! 6.18), so it is parsed by the length the kernel actually returned: a field
//! that lies beyond that length is `None`, never a guessed zero. Offsets are
//! those of `include/uapi/linux/tcp.h`.

/// `TCPI_OPT_SYN_DATA`: client: the SYN's data was acked; server: the SYN carried data.
pub const TCPI_OPT_SYN_DATA: u8 = 0x20;
/// `TCPI_OPT_TFO_CHILD` (Linux 6.16): the server socket was created by TFO.
pub const TCPI_OPT_TFO_CHILD: u8 = 0x80;

/// The fields of `tcp_info` that TFO outcome reporting needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpInfo {
    /// How many bytes the kernel returned.
    pub len: usize,
    /// `tcpi_state` (1 = ESTABLISHED, 2 = SYN_SENT, ...).
    pub state: u8,
    /// `tcpi_options`: `TCPI_OPT_*` bits.
    pub options: u8,
    /// `tcpi_fastopen_client_fail` (bits 1-2 of byte 7; meaningful on Linux 5.5+).
    pub fastopen_client_fail: u8,
    /// `tcpi_rtt`: smoothed round-trip time in microseconds.
    pub rtt_us: Option<u32>,
    /// `tcpi_total_retrans`.
    pub total_retrans: Option<u32>,
    /// `tcpi_bytes_received`: payload bytes received (a TFO child counts its SYN data).
    pub bytes_received: Option<u64>,
    /// `tcpi_data_segs_in`: segments received that carried data.
    pub data_segs_in: Option<u32>,
    /// `tcpi_delivered`: packets the peer acknowledged; a passive socket
    /// counts its SYN-ACK when the client's final ACK arrives (Linux 4.18+).
    pub delivered: Option<u32>,
    /// `tcpi_bytes_sent`: payload bytes sent, retransmissions included.
    pub bytes_sent: Option<u64>,
}

/// The `tcp_info` bytes were too short to hold even the first 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tcp_info is {0} bytes long; at least 8 are needed")]
pub struct TruncatedTcpInfo(pub usize);

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let raw = bytes.get(offset..offset + 4)?;
    Some(u32::from_ne_bytes(raw.try_into().ok()?))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    let raw = bytes.get(offset..offset + 8)?;
    Some(u64::from_ne_bytes(raw.try_into().ok()?))
}

/// `tcpi_fastopen_client_fail` out of byte 7, which C declares as
/// `__u8 tcpi_delivery_rate_app_limited:1, tcpi_fastopen_client_fail:2;`.
/// Bit-fields are allocated from the low bit on little-endian ABIs and from
/// the high bit on big-endian ones (s390x, powerpc, big-endian ARM/MIPS).
fn client_fail_bits(byte: u8, big_endian: bool) -> u8 {
    if big_endian {
        (byte >> 5) & 0b11
    } else {
        (byte >> 1) & 0b11
    }
}

impl TcpInfo {
    /// Parses the bytes the kernel returned (pass exactly the returned length).
    pub fn parse(bytes: &[u8]) -> Result<TcpInfo, TruncatedTcpInfo> {
        if bytes.len() < 8 {
            return Err(TruncatedTcpInfo(bytes.len()));
        }
        Ok(TcpInfo {
            len: bytes.len(),
            state: bytes[0],
            options: bytes[5],
            fastopen_client_fail: client_fail_bits(bytes[7], cfg!(target_endian = "big")),
            rtt_us: u32_at(bytes, 68),
            total_retrans: u32_at(bytes, 100),
            bytes_received: u64_at(bytes, 128),
            data_segs_in: u32_at(bytes, 152),
            delivered: u32_at(bytes, 192),
            bytes_sent: u64_at(bytes, 200),
        })
    }

    /// `TCPI_OPT_SYN_DATA` is set.
    pub fn syn_data(&self) -> bool {
        self.options & TCPI_OPT_SYN_DATA != 0
    }

    /// `TCPI_OPT_TFO_CHILD` is set.
    pub fn tfo_child(&self) -> bool {
        self.options & TCPI_OPT_TFO_CHILD != 0
    }
}

/// `tcpi_state` of a socket whose handshake is not complete (TCP_SYN_RECV).
const TCP_SYN_RECV: u8 = 3;
/// `tcpi_state` of a closed socket (TCP_CLOSE), e.g. after a reset.
const TCP_CLOSE: u8 = 7;

/// Where an accepted connection's handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum HandshakeState {
    /// The client's final ACK arrived: the client is real and holds this connection.
    Confirmed,
    /// Still in SYN_RECV: the data came in the SYN, the ACK has not arrived yet.
    Pending,
    /// The connection was reset or closed before it was confirmed (a replay's
    /// SYN-ACK reaches the real client, which answers with a reset).
    Failed,
}

impl HandshakeState {
    /// From an accepted socket's `tcp_info`. The state alone does not tell
    /// once the server has closed: a TFO child closed before the ACK leaves
    /// SYN_RECV for FIN_WAIT1, and a confirmed connection ends in CLOSE like a
    /// reset one. `tcpi_delivered` does: the kernel counts the SYN-ACK as
    /// delivered when the final ACK arrives, and a replay's sender never
    /// acknowledges anything. Kernels older than 4.18 lack it: then the
    /// state decides (CLOSE = failed, any other but SYN_RECV = confirmed).
    pub fn from_tcp_info(info: &TcpInfo) -> HandshakeState {
        match (info.state, info.delivered) {
            (TCP_SYN_RECV, _) => HandshakeState::Pending,
            (_, Some(delivered)) if delivered > 0 => HandshakeState::Confirmed,
            (TCP_CLOSE, _) => HandshakeState::Failed,
            (_, Some(_)) => HandshakeState::Pending, // closing, nothing acknowledged yet
            (_, None) => HandshakeState::Confirmed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server-side TFO child as seen on 6.18: options 0xa7, 9 bytes received in one segment.
    fn server_child_6_18() -> [u8; 280] {
        let mut b = [0u8; 280];
        b[0] = 1; // ESTABLISHED
        b[5] = 0xa7;
        b[7] = 0x01; // app_limited, no client_fail
        b[68..72].copy_from_slice(&150u32.to_ne_bytes());
        b[128..136].copy_from_slice(&9u64.to_ne_bytes());
        b[152..156].copy_from_slice(&1u32.to_ne_bytes());
        b
    }

    #[test]
    fn deconstruct_server_child() {
        let info = TcpInfo::parse(&server_child_6_18()).unwrap();
        assert_eq!(info.len, 280);
        assert_eq!(info.state, 1);
        assert!(info.syn_data());
        assert!(info.tfo_child());
        assert_eq!(info.fastopen_client_fail, 0);
        assert_eq!(info.rtt_us, Some(150));
        assert_eq!(info.bytes_received, Some(9));
        assert_eq!(info.data_segs_in, Some(1));
    }

    #[test]
    fn client_fail_bits_are_bits_one_and_two_of_byte_seven() {
        let mut b = server_child_6_18();
        for (byte7, want) in [(0b000, 0), (0b010, 1), (0b100, 2), (0b111, 3), (0b001, 0)] {
            b[7] = byte7;
            assert_eq!(TcpInfo::parse(&b).unwrap().fastopen_client_fail, want, "byte7={byte7:#b}");
        }
    }

    #[test]
    fn client_fail_bits_follow_the_abi_bit_order() {
        // app_limited = 1 and client_fail = 2 (DataNotAcked), as each ABI lays them out.
        assert_eq!(client_fail_bits(0b0000_0101, false), 2);
        assert_eq!(client_fail_bits(0b1100_0000, true), 2);
        assert_eq!(client_fail_bits(0b1010_0000, true), 1);
        assert_eq!(client_fail_bits(0b1000_0000, true), 0, "app_limited alone");
    }

    #[test]
    fn short_struct_gives_none_not_zero() {
        let b = server_child_6_18();
        // A 3.x-era tcp_info ends before bytes_received.
        let info = TcpInfo::parse(&b[..104]).unwrap();
        assert_eq!(info.total_retrans, Some(0));
        assert_eq!(info.bytes_received, None);
        assert_eq!(info.data_segs_in, None);
        assert_eq!(info.bytes_sent, None);
        // 6.1 headers: 232 bytes, everything we read is present.
        assert_eq!(TcpInfo::parse(&b[..232]).unwrap().bytes_sent, Some(0));
    }

    #[test]
    fn truncated() {
        assert_eq!(TcpInfo::parse(&[1, 2, 3]), Err(TruncatedTcpInfo(3)));
        assert!(TcpInfo::parse(&[]).is_err());
    }

    fn with_state(state: u8, delivered: Option<u32>) -> TcpInfo {
        let mut bytes = vec![0u8; if delivered.is_some() { 232 } else { 104 }];
        bytes[0] = state;
        if let Some(d) = delivered {
            bytes[192..196].copy_from_slice(&d.to_ne_bytes());
        }
        TcpInfo::parse(&bytes).unwrap()
    }

    #[test]
    fn handshake_states() {
        use HandshakeState::*;
        let cases = [
            (3, Some(0), Pending, "SYN_RECV"),
            (1, Some(1), Confirmed, "ESTABLISHED"),
            (8, Some(1), Confirmed, "CLOSE_WAIT: a FIN came after the ACK"),
            (7, Some(0), Failed, "CLOSE, nothing acknowledged: reset before the ACK"),
            (7, Some(3), Confirmed, "CLOSE after a confirmed exchange and a clean close"),
            (4, Some(0), Pending, "FIN_WAIT1: the server answered and closed before the ACK"),
            (4, Some(2), Confirmed, "FIN_WAIT1, response acknowledged"),
            (4, None, Confirmed, "old kernel: the state decides"),
            (7, None, Failed, "old kernel: CLOSE"),
        ];
        for (state, delivered, expected, what) in cases {
            assert_eq!(HandshakeState::from_tcp_info(&with_state(state, delivered)), expected, "{what}");
        }
    }
}
