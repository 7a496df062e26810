//! TCP options, and the TFO option in both of its forms.

use std::fmt;

/// Option kinds this module names.
pub mod kind {
    /// End of option list.
    pub const EOL: u8 = 0;
    /// No-operation (padding).
    pub const NOP: u8 = 1;
    /// Maximum segment size.
    pub const MSS: u8 = 2;
    /// Window scale.
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks.
    pub const SACK: u8 = 5;
    /// Timestamps.
    pub const TIMESTAMPS: u8 = 8;
    /// TCP Fast Open, RFC 7413.
    pub const FAST_OPEN: u8 = 34;
    /// Experimental options (RFC 6994); TFO used it with magic 0xF989.
    pub const EXPERIMENTAL: u8 = 254;
}

/// The magic of the experimental TFO option (kind 254).
pub const FAST_OPEN_MAGIC: [u8; 2] = [0xF9, 0x89];

/// Which encoding a TFO option used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
pub enum FastOpenForm {
    /// Kind 34 (RFC 7413).
    Rfc7413,
    /// Kind 254 with magic 0xF989 (pre-RFC; Linux falls back to it).
    Experimental,
}

/// The contents of a TFO option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cookie<'a> {
    /// Empty: the client asks for a cookie.
    Request,
    /// A cookie of valid length (even, 4..=16 bytes).
    Cookie(&'a [u8]),
    /// A cookie of invalid length (odd, 2, or over 16): receivers ignore it.
    Malformed(&'a [u8]),
}

/// A TFO option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastOpen<'a> {
    /// Kind 34 or kind 254.
    pub form: FastOpenForm,
    /// Request, cookie or malformed cookie.
    pub cookie: Cookie<'a>,
}

impl<'a> FastOpen<'a> {
    fn from_data(form: FastOpenForm, data: &'a [u8]) -> FastOpen<'a> {
        let cookie = match data.len() {
            0 => Cookie::Request,
            n if n % 2 == 0 && (4..=16).contains(&n) => Cookie::Cookie(data),
            _ => Cookie::Malformed(data),
        };
        FastOpen { form, cookie }
    }

    /// The cookie bytes, if any (valid or not).
    pub fn cookie_bytes(&self) -> Option<&'a [u8]> {
        match self.cookie {
            Cookie::Request => None,
            Cookie::Cookie(c) | Cookie::Malformed(c) => Some(c),
        }
    }
}

impl fmt::Display for FastOpen<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = if self.form == FastOpenForm::Experimental { " (exp 254)" } else { "" };
        match self.cookie {
            Cookie::Request => write!(f, "TFO cookie request{exp}"),
            Cookie::Cookie(c) => write!(f, "TFO cookie={}{exp}", hex(c)),
            Cookie::Malformed(c) => write!(f, "TFO malformed cookie ({} bytes: {}){exp}", c.len(), hex(c)),
        }
    }
}

/// Lower-case hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    let _ = write_hex(&mut s, bytes);
    s
}

/// Writes lower-case hex of some bytes, without allocating (a trace prints a
/// cookie on every SYN).
pub fn write_hex(out: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for chunk in bytes.chunks(32) {
        let mut text = [0u8; 64];
        for (pair, b) in text.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0f)];
        }
        out.write_str(std::str::from_utf8(&text[..chunk.len() * 2]).map_err(|_| fmt::Error)?)?;
    }
    Ok(())
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Maximum segment size.
    Mss(u16),
    /// Window scale shift.
    WindowScale(u8),
    /// SACK permitted.
    SackPermitted,
    /// SACK blocks (raw).
    Sack(&'a [u8]),
    /// Timestamps value and echo reply.
    Timestamps {
        /// TSval.
        value: u32,
        /// TSecr.
        echo: u32,
    },
    /// TCP Fast Open, either form.
    FastOpen(FastOpen<'a>),
    /// Any other option.
    Unknown {
        /// The kind.
        kind: u8,
        /// Its data (after kind and length).
        data: &'a [u8],
    },
    /// An option whose length is impossible; parsing stops after it.
    Malformed {
        /// The kind.
        kind: u8,
        /// What was wrong.
        problem: &'static str,
    },
}

/// Iterates over the options of a TCP header (the bytes after the fixed 20).
/// Stops at EOL, at the end, or after yielding a `Malformed` option. NOPs are skipped.
#[derive(Debug, Clone)]
pub struct OptionsIter<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> OptionsIter<'a> {
    /// Iterates over `options`.
    pub fn new(options: &'a [u8]) -> OptionsIter<'a> {
        OptionsIter { rest: options, offset: 0 }
    }

    /// The next option with its byte range within the options area.
    pub fn next_with_range(&mut self) -> Option<(std::ops::Range<usize>, TcpOption<'a>)> {
        loop {
            let (&kind, after) = self.rest.split_first()?;
            let start = self.offset;
            match kind {
                kind::EOL => {
                    self.rest = &[];
                    return None;
                }
                kind::NOP => {
                    self.rest = after;
                    self.offset += 1;
                    continue;
                }
                _ => {}
            }
            let Some(&len) = after.first() else {
                self.rest = &[];
                return Some((start..start + 1, TcpOption::Malformed { kind, problem: "no length byte" }));
            };
            let len = usize::from(len);
            if len < 2 {
                self.rest = &[];
                return Some((start..start + 2, TcpOption::Malformed { kind, problem: "length below 2" }));
            }
            if len > self.rest.len() {
                let end = start + self.rest.len();
                self.rest = &[];
                return Some((start..end, TcpOption::Malformed { kind, problem: "length beyond the header" }));
            }
            let data = &self.rest[2..len];
            self.rest = &self.rest[len..];
            self.offset += len;
            return Some((start..start + len, parse_one(kind, data)));
        }
    }
}

fn parse_one(kind: u8, data: &[u8]) -> TcpOption<'_> {
    let be16 = |d: &[u8]| u16::from_be_bytes([d[0], d[1]]);
    let be32 = |d: &[u8]| u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    match (kind, data.len()) {
        (kind::MSS, 2) => TcpOption::Mss(be16(data)),
        (kind::WINDOW_SCALE, 1) => TcpOption::WindowScale(data[0]),
        (kind::SACK_PERMITTED, 0) => TcpOption::SackPermitted,
        (kind::SACK, _) => TcpOption::Sack(data),
        (kind::TIMESTAMPS, 8) => TcpOption::Timestamps { value: be32(&data[..4]), echo: be32(&data[4..]) },
        (kind::MSS | kind::WINDOW_SCALE | kind::SACK_PERMITTED | kind::TIMESTAMPS, _) => {
            TcpOption::Malformed { kind, problem: "wrong length for this kind" }
        }
        (kind::FAST_OPEN, _) => TcpOption::FastOpen(FastOpen::from_data(FastOpenForm::Rfc7413, data)),
        (kind::EXPERIMENTAL, n) if n >= 2 && data[..2] == FAST_OPEN_MAGIC => {
            TcpOption::FastOpen(FastOpen::from_data(FastOpenForm::Experimental, &data[2..]))
        }
        _ => TcpOption::Unknown { kind, data },
    }
}

impl<'a> Iterator for OptionsIter<'a> {
    type Item = TcpOption<'a>;
    fn next(&mut self) -> Option<TcpOption<'a>> {
        self.next_with_range().map(|(_, o)| o)
    }
}

/// The first TFO option in `options`, with its byte range. A kind-34 option
/// whose length no TFO option has (below 2, or past the header) is a TFO
/// option all the same: it comes back as [`Cookie::Malformed`], never as
/// "no option" (which would read as no-cookie mode).
pub fn find_fast_open(options: &[u8]) -> Option<(std::ops::Range<usize>, FastOpen<'_>)> {
    let mut it = OptionsIter::new(options);
    while let Some((range, opt)) = it.next_with_range() {
        match opt {
            TcpOption::FastOpen(fo) => return Some((range, fo)),
            TcpOption::Malformed { kind: kind::FAST_OPEN, .. } => {
                let data = options.get(range.start + 2.min(range.len())..range.end).unwrap_or_default();
                return Some((range, FastOpen { form: FastOpenForm::Rfc7413, cookie: Cookie::Malformed(data) }));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Linux cookie-request SYN's options: MSS, SACK-perm, TS, NOP, WS, TFO request, NOP NOP.
    const SYN_REQUEST: [u8; 24] = [
        0x02, 0x04, 0xff, 0xd7, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03,
        0x03, 0x07, 0x22, 0x02, 0x01, 0x01,
    ];

    #[test]
    fn deconstruct_cookie_request() {
        let opts: Vec<_> = OptionsIter::new(&SYN_REQUEST).collect();
        assert_eq!(
            opts,
            [
                TcpOption::Mss(65495),
                TcpOption::SackPermitted,
                TcpOption::Timestamps { value: 0x0001_0203, echo: 0 },
                TcpOption::WindowScale(7),
                TcpOption::FastOpen(FastOpen { form: FastOpenForm::Rfc7413, cookie: Cookie::Request }),
            ]
        );
        let (range, _) = find_fast_open(&SYN_REQUEST).unwrap();
        assert_eq!(range, 20..22);
    }

    #[test]
    fn cookie_and_experimental_forms() {
        let cookie = [0x22, 0x0a, 0xc2, 0xa1, 0x5a, 0xb5, 0x7a, 0xa2, 0xf3, 0x54];
        let (_, fo) = find_fast_open(&cookie).unwrap();
        assert_eq!(fo.cookie, Cookie::Cookie(&cookie[2..]));
        assert_eq!(fo.to_string(), "TFO cookie=c2a15ab57aa2f354");
        let exp_request = [0xfe, 0x04, 0xf9, 0x89];
        let (_, fo) = find_fast_open(&exp_request).unwrap();
        assert_eq!((fo.form, fo.cookie), (FastOpenForm::Experimental, Cookie::Request));
        let exp_cookie = [0xfe, 0x0c, 0xf9, 0x89, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(find_fast_open(&exp_cookie).unwrap().1.cookie, Cookie::Cookie(&[1, 2, 3, 4, 5, 6, 7, 8]));
        // Kind 254 with another magic is not TFO.
        assert!(find_fast_open(&[0xfe, 0x04, 0x12, 0x34]).is_none());
    }

    #[test]
    fn malformed_cookies_are_reported() {
        for len in [1usize, 2, 3, 5, 18] {
            let mut o = vec![0x22, (len + 2) as u8];
            o.extend(std::iter::repeat_n(0xab, len));
            let (_, fo) = find_fast_open(&o).unwrap();
            assert!(matches!(fo.cookie, Cookie::Malformed(c) if c.len() == len), "len {len}");
        }
    }

    #[test]
    fn truncated_and_absurd_lengths() {
        assert_eq!(
            OptionsIter::new(&[0x02]).collect::<Vec<_>>(),
            [TcpOption::Malformed { kind: 2, problem: "no length byte" }]
        );
        assert_eq!(
            OptionsIter::new(&[0x22, 0x00]).collect::<Vec<_>>(),
            [TcpOption::Malformed { kind: 34, problem: "length below 2" }]
        );
        assert_eq!(
            OptionsIter::new(&[0x22, 0x0a, 1, 2]).collect::<Vec<_>>(),
            [TcpOption::Malformed { kind: 34, problem: "length beyond the header" }]
        );
        assert_eq!(
            OptionsIter::new(&[0x02, 0x03, 0x00]).next(),
            Some(TcpOption::Malformed { kind: 2, problem: "wrong length for this kind" })
        );
        // EOL ends the list even if bytes follow.
        assert_eq!(OptionsIter::new(&[0x00, 0x22, 0x02]).count(), 0);
        assert_eq!(OptionsIter::new(&[]).count(), 0);
    }
}
