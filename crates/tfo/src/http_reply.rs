//! When an HTTP/1.1 response is whole, for every client of the CLI (`send`,
//! `probe`, `bench`, `load`): 1xx heads (100 Continue, 103 Early Hints) are
//! skipped in a loop, `Content-Length` is digits only, a chunked body is whole
//! at its last chunk, and one without either ends at the close. Every offset
//! is checked arithmetic: a hostile length cannot wrap.
#![deny(clippy::arithmetic_side_effects)]

/// What the bytes received so far are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// More is needed (or the close, for a body without a length).
    Partial,
    /// A whole final response.
    Whole(Whole),
    /// Not a correct response: not HTTP, a bad length, or cut by the close.
    Invalid(&'static str),
}

/// A whole final response's status and where its parts are in the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Whole {
    pub(crate) code: u16,
    /// The body (chunk framing included, for a chunked one).
    pub(crate) body: (usize, usize),
}

/// The most response heads (1xx ones included) looked at.
const MAX_HEADS: usize = 16;

/// Reads `bytes`, the reply so far; `closed` when the server has closed.
pub(crate) fn read(bytes: &[u8], closed: bool) -> Reply {
    let mut start = 0usize;
    for _ in 0..MAX_HEADS {
        let rest = bytes.get(start..).unwrap_or_default();
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if closed => return Reply::Invalid("the head was cut by the close"),
            Ok(httparse::Status::Partial) => return Reply::Partial,
            Err(_) => return Reply::Invalid("not an HTTP/1.x response"),
        };
        let Some(body_start) = start.checked_add(head_len) else { return Reply::Invalid("too long") };
        let code = response.code.unwrap_or(0);
        if (100..200).contains(&code) {
            start = body_start;
            continue;
        }
        let framing = match framing(response.headers) {
            Ok(f) => f,
            Err(why) => return Reply::Invalid(why),
        };
        let body = bytes.get(body_start..).unwrap_or_default();
        let body_len = match framing {
            _ if code == 204 || code == 304 => Some(0),
            Framing::Length(n) => (body.len() >= n).then_some(n),
            Framing::Chunked => match chunked_len(body) {
                Ok(len) => len,
                Err(why) => return Reply::Invalid(why),
            },
            Framing::Close if closed => Some(body.len()),
            Framing::Close => None,
        };
        return match body_len.and_then(|n| body_start.checked_add(n)) {
            Some(end) => Reply::Whole(Whole { code, body: (body_start, end) }),
            None if closed => Reply::Invalid("the body was cut by the close"),
            None => Reply::Partial,
        };
    }
    Reply::Invalid("too many informational (1xx) responses")
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, &'static str> {
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = std::str::from_utf8(h.value).map_err(|_| "a Transfer-Encoding that is not text")?;
            chunked = value.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or("a Content-Length that is not a number (digits only)")?;
            if length.is_some_and(|m| m != n) {
                return Err("two different Content-Length headers");
            }
            length = Some(n);
        }
    }
    Ok(match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Close,
    })
}

/// `Content-Length`: 1 to 20 ASCII digits (a u64), nothing else (no sign, no spaces inside).
pub(crate) fn content_length(value: &[u8]) -> Option<usize> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse::<u64>().ok().and_then(|n| usize::try_from(n).ok())
}

/// The length of a whole chunked body (framing and trailers included), or
/// `None` while it is not whole.
fn chunked_len(body: &[u8]) -> Result<Option<usize>, &'static str> {
    let mut at = 0usize;
    loop {
        let rest = body.get(at..).unwrap_or_default();
        let (size_line, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete((n, size))) => (n, size),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("a chunk size that is not hexadecimal"),
        };
        let data_start = at.checked_add(size_line).ok_or("too long")?;
        if size == 0 {
            // Trailers, then an empty line.
            let trailers = body.get(data_start..).unwrap_or_default();
            if trailers.starts_with(b"\r\n") {
                return Ok(data_start.checked_add(2));
            }
            return Ok(trailers
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .and_then(|p| data_start.checked_add(p)?.checked_add(4)));
        }
        let size = usize::try_from(size).map_err(|_| "a chunk larger than memory")?;
        let data_end = data_start.checked_add(size).ok_or("a chunk larger than memory")?;
        let next = data_end.checked_add(2).ok_or("too long")?;
        match body.get(data_end..next) {
            None => return Ok(None),
            Some(b"\r\n") => at = next,
            Some(_) => return Err("a chunk not followed by CRLF"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8], closed: bool) -> Option<Whole> {
        match read(bytes, closed) {
            Reply::Whole(w) => Some(w),
            _ => None,
        }
    }

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(content_length(b"3"), Some(3));
        assert_eq!(content_length(b" 12 "), Some(12));
        for bad in [&b"+3"[..], b"-1", b"", b"1 2", b"0x10", b"99999999999999999999", b"000000000000000000001"] {
            assert_eq!(content_length(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(read(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", true), Reply::Invalid(_)));
        let huge = b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nhi";
        assert_eq!(read(huge, false), Reply::Partial, "no wrap: the body is simply not there yet");
        assert!(matches!(read(huge, true), Reply::Invalid(_)));
    }

    #[test]
    fn informational_heads_are_skipped_without_recursion() {
        let ok = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        let w = whole(ok, false).unwrap();
        assert_eq!((w.code, &ok[w.body.0..w.body.1]), (200, &b"hi"[..]));
        let many = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(100_000);
        assert!(matches!(read(&many, false), Reply::Invalid(_)), "bounded, no stack overflow");
    }

    #[test]
    fn chunked_bodies_end_at_their_last_chunk() {
        let ok = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        assert_eq!(whole(ok, false).map(|w| w.body.1), Some(ok.len()));
        let cut = &ok[..ok.len() - 5];
        assert_eq!(read(cut, false), Reply::Partial);
        assert!(matches!(read(cut, true), Reply::Invalid(_)), "a truncated chunked body is not ok");
        let trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n\r\n";
        assert!(whole(trailers, false).is_some());
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nhi";
        assert!(matches!(read(huge, false), Reply::Invalid(_)), "no wrap: a chunk past memory is refused");
    }

    #[test]
    fn a_body_without_length_ends_at_the_close() {
        let r = b"HTTP/1.1 200 OK\r\n\r\nhello";
        assert_eq!(read(r, false), Reply::Partial);
        assert_eq!(whole(r, true).map(|w| w.body), Some((19, 24)));
        assert_eq!(whole(b"HTTP/1.1 204 No Content\r\n\r\n", false).map(|w| w.code), Some(204));
        assert!(matches!(read(b"\xff\x00garbage\r\n\r\n", false), Reply::Invalid(_)));
    }
}
