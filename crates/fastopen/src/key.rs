//! TFO cookie keys and the cookie a key gives an address pair.

use std::fmt;
use std::hash::Hasher;
use std::net::IpAddr;

/// A 16-byte TFO key, as `TCP_FASTOPEN_KEY` takes it.
///
/// The kernel computes a server's cookie as SipHash-2-4 over
/// (client address, server address) keyed by this key: see [`FastOpenKey::cookie`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FastOpenKey(pub [u8; 16]);

/// Text that is not a key. It says what is wrong with the text and never
/// repeats the text itself: a key file's content is a secret, even a broken one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a TFO key: {0}; expected 32 hex digits, or the sysctl form xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx")]
pub struct BadKey(pub &'static str);

impl FastOpenKey {
    /// Parses 32 hex digits (bytes in order), or the `net.ipv4.tcp_fastopen_key`
    /// form `w-w-w-w` where each word is a little-endian u32.
    pub fn parse(text: &str) -> Result<FastOpenKey, BadKey> {
        let t = text.trim();
        let mut out = [0u8; 16];
        if t.is_empty() {
            return Err(BadKey("it is empty"));
        }
        // from_str_radix takes a leading '+': only hex digits (and the '-' of the sysctl form) are a key.
        if !t.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(BadKey("it holds a character that is not a hex digit"));
        }
        if t.contains('-') {
            let words: Vec<&str> = t.split('-').collect();
            if words.len() != 4 {
                return Err(BadKey("the sysctl form has four words separated by '-'"));
            }
            for (i, w) in words.iter().enumerate() {
                if w.is_empty() || w.len() > 8 {
                    return Err(BadKey("each word of the sysctl form has 1 to 8 hex digits"));
                }
                let v = u32::from_str_radix(w, 16)
                    .map_err(|_| BadKey("a word holds a character that is not a hex digit"))?;
                out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
        } else {
            if t.len() != 32 || !t.is_ascii() {
                return Err(BadKey("it is not 32 characters long"));
            }
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&t[i * 2..i * 2 + 2], 16)
                    .map_err(|_| BadKey("it holds a character that is not a hex digit"))?;
            }
        }
        Ok(FastOpenKey(out))
    }

    /// Parses a `net.ipv4.tcp_fastopen_key` value: a primary key and an optional
    /// backup key separated by a comma.
    pub fn parse_pair(text: &str) -> Result<(FastOpenKey, Option<FastOpenKey>), BadKey> {
        let mut parts = text.trim().split(',');
        let primary = FastOpenKey::parse(parts.next().unwrap_or_default())?;
        let backup = parts.next().map(FastOpenKey::parse).transpose()?;
        if parts.next().is_some() {
            return Err(BadKey("more than two keys (primary,backup)"));
        }
        Ok((primary, backup))
    }

    /// The key in the sysctl form (`w-w-w-w`, little-endian words).
    pub fn to_sysctl_form(&self) -> String {
        let w = |i: usize| u32::from_le_bytes([self.0[i], self.0[i + 1], self.0[i + 2], self.0[i + 3]]);
        format!("{:08x}-{:08x}-{:08x}-{:08x}", w(0), w(4), w(8), w(12))
    }

    /// Whether the key is all zeros (how the sysctl reads before any key exists).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Whether anyone could guess the key: all bytes equal (all zeros is how an
    /// unset key reads), or a pattern of at most 4 bytes repeated. A server
    /// with such a key hands out cookies anyone can compute, so key files
    /// holding one are refused ([`crate::keyfile::KeyFile::read`]).
    pub fn is_degenerate(&self) -> bool {
        is_degenerate(&self.0)
    }

    /// The 8-byte cookie a server with this key gives `client` talking to `server`.
    ///
    /// Both addresses must be of the same family; `None` otherwise. An
    /// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a dual-stack socket
    /// names an IPv4 peer) is hashed as the IPv4 address it is: the kernel
    /// computes the cookie from the IPv4 packet's 4-byte addresses.
    pub fn cookie(&self, client: IpAddr, server: IpAddr) -> Option<[u8; 8]> {
        let mut h = siphasher::sip::SipHasher24::new_with_key(&self.0);
        match (client.to_canonical(), server.to_canonical()) {
            (IpAddr::V4(c), IpAddr::V4(s)) => {
                h.write(&c.octets());
                h.write(&s.octets());
            }
            (IpAddr::V6(c), IpAddr::V6(s)) => {
                h.write(&c.octets());
                h.write(&s.octets());
            }
            _ => return None,
        }
        Some(h.finish().to_le_bytes())
    }
}

/// Bytes that are one byte, or a pattern of at most 4 bytes, repeated (at
/// least twice: a short input is not a pattern, and is refused for its length).
pub(crate) fn is_degenerate(bytes: &[u8]) -> bool {
    [1, 2, 4]
        .iter()
        .any(|&period| bytes.len() >= 2 * period && bytes.iter().enumerate().all(|(i, b)| *b == bytes[i % period]))
}

impl fmt::Display for FastOpenKey {
    /// 32 hex digits, the bytes in order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for FastOpenKey {
    /// Keys are secrets: Debug does not print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FastOpenKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_sysctl_forms() {
        let k = FastOpenKey::parse("00112233-44556677-8899aabb-ccddeeff").unwrap();
        // Each word is little-endian: 00112233 -> 33 22 11 00 (checked against the kernel).
        assert_eq!(&k.0[..4], &[0x33, 0x22, 0x11, 0x00]);
        assert_eq!(k.to_sysctl_form(), "00112233-44556677-8899aabb-ccddeeff");
        let same = FastOpenKey::parse(&k.to_string()).unwrap();
        assert_eq!(same, k);
        assert_eq!(k.to_string(), "3322110077665544bbaa9988ffeeddcc");
    }

    #[test]
    fn pair() {
        let (p, b) = FastOpenKey::parse_pair("1-2-3-4,5-6-7-8").unwrap();
        assert_eq!(p.0[0], 1);
        assert_eq!(b.unwrap().0[0], 5);
        assert!(FastOpenKey::parse_pair("1-2-3-4").unwrap().1.is_none());
        assert!(FastOpenKey::parse_pair("1-2-3-4,5-6-7-8,9-9-9-9").is_err());
    }

    #[test]
    fn rejects_bad_keys() {
        for bad in [
            "",
            "00",
            "1-2-3",
            "1-2-3-4-5",
            "123456789-0-0-0",
            "zz112233445566778899aabbccddeeff",
            "1--3-4",
            "é0112233445566778899aabbccddeef",
            "+1-2-3-4",
            "+0112233445566778899aabbccddeeff"[..32].as_ref(),
            "1-+2-3-4",
        ] {
            assert!(FastOpenKey::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn errors_never_repeat_the_text() {
        // One digit short of a key, and a broken pair: the secret part must not show.
        for secret in ["00112233445566778899aabbccddeef", "00112233445566778899aabbccddeeff,SECRETzz"] {
            let err = FastOpenKey::parse_pair(secret).unwrap_err().to_string();
            assert!(!err.contains("00112233") && !err.contains("SECRET"), "{err}");
        }
    }

    #[test]
    fn cookie_is_siphash_of_addresses() {
        // SipHash-2-4 reference vector (paper, vectors_sip64[8]): key 00..0f, message 00..07
        // -> 0x93f5f5799a932462, stored little-endian as the kernel does.
        let k = FastOpenKey(core::array::from_fn(|i| i as u8));
        let c = k.cookie("0.1.2.3".parse().unwrap(), "4.5.6.7".parse().unwrap()).unwrap();
        assert_eq!(c, [0x62, 0x24, 0x93, 0x9a, 0x79, 0xf5, 0xf5, 0x93]);
        assert!(k.cookie("127.0.0.1".parse().unwrap(), "::1".parse().unwrap()).is_none());
        assert_ne!(k.cookie("::1".parse().unwrap(), "::1".parse().unwrap()), None);
        let mapped = k.cookie("::ffff:0.1.2.3".parse().unwrap(), "::ffff:4.5.6.7".parse().unwrap());
        assert_eq!(mapped, Some(c), "IPv4-mapped addresses are hashed as IPv4");
    }

    #[test]
    fn debug_hides_the_secret() {
        assert_eq!(format!("{:?}", FastOpenKey([7; 16])), "FastOpenKey(..)");
    }

    #[test]
    fn degenerate_keys_are_recognised() {
        assert!(FastOpenKey([0; 16]).is_degenerate());
        assert!(FastOpenKey([0xff; 16]).is_degenerate());
        assert!(FastOpenKey::parse("01020304010203040102030401020304").unwrap().is_degenerate());
        assert!(FastOpenKey::parse("abababababababababababababababab").unwrap().is_degenerate());
        assert!(!FastOpenKey::parse("0123456789abcdef0123456789abcdef").unwrap().is_degenerate());
        assert!(!FastOpenKey::parse("00000000000000000000000000000001").unwrap().is_degenerate());
    }
}
