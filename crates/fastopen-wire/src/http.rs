//! HTTP/1.1 heads, for the clients and the server of tfokit: when a
//! response is whole (1xx heads skipped in a loop, `Content-Length` digits
//! only, a chunked body whole at its last chunk, one without either ending at
//! the close), and how far a request has come (its head parsed once, when
//! whole; lengths checked; `CONNECT` refused). Pure: no I/O, and every offset
//! is checked arithmetic, so a hostile length cannot wrap. The parsing itself
//! is `httparse`'s.
#![deny(clippy::arithmetic_side_effects)]

/// What the bytes received so far are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// More is needed (or the close, for a body without a length).
    Partial,
    /// A whole final response.
    Whole(Whole),
    /// Not a correct response: not HTTP, a bad length, or cut by the close.
    Invalid(&'static str),
}

/// A whole final response's status and where its parts are in the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole {
    /// The final response's status code.
    pub code: u16,
    /// The body (chunk framing included, for a chunked one).
    pub body: (usize, usize),
}

/// An HTTP/1.1 request head, the one way tfokit's clients build one:
/// `METHOD PATH HTTP/1.1`, `Host`, `User-Agent`, then `headers` in order,
/// and the blank line. A CR or LF in any part is dropped, so no value can
/// end the head early or add a header of its own.
pub fn request_head(method: &str, path: &str, host: &str, agent: &str, headers: &[(&str, &str)]) -> String {
    fn clean(s: &str) -> std::borrow::Cow<'_, str> {
        if s.contains(['\r', '\n']) {
            s.replace(['\r', '\n'], "").into()
        } else {
            s.into()
        }
    }
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\n",
        clean(method),
        clean(path),
        clean(host),
        clean(agent)
    );
    for (name, value) in headers {
        head.push_str(&clean(name));
        head.push_str(": ");
        head.push_str(&clean(value));
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// The status code of the response whose head begins `bytes`, as soon as
/// its status line has come (the rest of the head may still be on its way):
/// `HTTP/1.1 200 OK\r\n` gives 200. `None` before that, or when it is not
/// an HTTP/1.x status line.
pub fn status_code(bytes: &[u8]) -> Option<u16> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        // httparse keeps what it parsed of a partial head.
        Ok(_) => response.code,
        // A head too long for `headers` still has its status line.
        Err(httparse::Error::TooManyHeaders) => response.code,
        Err(_) => None,
    }
    .filter(|code| (100..600).contains(code))
}

/// The most response heads (1xx ones included) looked at.
const MAX_HEADS: usize = 16;

/// Reads `bytes`, the reply so far; `closed` when the server has closed.
pub fn read(bytes: &[u8], closed: bool) -> Reply {
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
pub fn content_length(value: &[u8]) -> Option<usize> {
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

/// Largest request head read before answering 431.
pub const MAX_HEAD: usize = 64 * 1024;

/// How far a buffered HTTP request has come.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpRequest {
    /// Need more bytes. `expects_continue`: the head is complete, the body is
    /// not, and the client sent `Expect: 100-continue` (answer 100 first).
    Partial {
        /// The head asked `Expect: 100-continue` and is whole, the body is not.
        expects_continue: bool,
    },
    /// Head and body complete: the whole request is `len` bytes long.
    Complete {
        /// Head and body, in bytes.
        len: usize,
        /// A `HEAD` request (its answer has no body).
        head: bool,
    },
    /// Not HTTP, or not acceptable: answer with this status and reason.
    Reject(u16, &'static str),
}

/// Where a request's head ends in `buf` (after its empty line), looking only
/// from `from` on (what earlier calls already scanned): the head is parsed
/// once, when it is whole, not again after every read (a byte at a time
/// would be quadratic).
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let tail = buf.get(start..)?;
    tail.windows(2).enumerate().find_map(|(i, w)| {
        let at = start.checked_add(i)?;
        match w {
            b"\n\n" => at.checked_add(2),
            b"\n\r" if tail.get(i.checked_add(2)?) == Some(&b'\n') => at.checked_add(3),
            _ => None,
        }
    })
}

/// Whether a request's head has arrived whole (or outgrown [`MAX_HEAD`]),
/// scanning each byte once across reads: the head is parsed only then.
#[derive(Debug, Default)]
pub struct HeadScan {
    scanned: usize,
    whole: bool,
}

impl HeadScan {
    /// Whether the head in `buf` (the request so far) is whole now.
    pub fn ready(&mut self, buf: &[u8]) -> bool {
        if !self.whole {
            self.whole = head_end(buf, self.scanned).is_some() || buf.len() >= MAX_HEAD;
            self.scanned = buf.len();
        }
        self.whole
    }
}

/// Looks at the bytes of a request received so far.
pub fn examine_request(buf: &[u8], max_body: usize) -> HttpRequest {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            HttpRequest::Reject(431, "Request Header Fields Too Large")
        }
        Ok(httparse::Status::Partial) => HttpRequest::Partial { expects_continue: false },
        Err(httparse::Error::TooManyHeaders) => HttpRequest::Reject(431, "Request Header Fields Too Large"),
        Err(_) => HttpRequest::Reject(400, "Bad Request"),
        Ok(httparse::Status::Complete(head_len)) => {
            if req.method == Some("CONNECT") {
                return HttpRequest::Reject(405, "Method Not Allowed");
            }
            let mut body_len = None;
            let mut expects_continue = false;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return HttpRequest::Reject(411, "Length Required");
                }
                if h.name.eq_ignore_ascii_case("expect") {
                    expects_continue = h.value.eq_ignore_ascii_case(b"100-continue");
                }
                if h.name.eq_ignore_ascii_case("content-length") {
                    if body_len.is_some() {
                        // Two lengths: which one a proxy in front believed is unknowable (smuggling).
                        return HttpRequest::Reject(400, "Bad Request");
                    }
                    // Digits only: no sign, no hex (the one parser of lengths).
                    match content_length(h.value) {
                        Some(n) if n <= max_body => body_len = Some(n),
                        Some(_) => return HttpRequest::Reject(413, "Content Too Large"),
                        None => return HttpRequest::Reject(400, "Bad Request"),
                    }
                }
            }
            let Some(len) = head_len.checked_add(body_len.unwrap_or(0)) else {
                return HttpRequest::Reject(413, "Content Too Large");
            };
            if buf.len() >= len {
                HttpRequest::Complete { len, head: req.method == Some("HEAD") }
            } else {
                HttpRequest::Partial { expects_continue }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_heads_are_built_one_way_and_cannot_be_split() {
        let head = request_head("GET", "/x", "h:80", "tfo-test", &[("Connection", "close")]);
        assert_eq!(head, "GET /x HTTP/1.1\r\nHost: h:80\r\nUser-Agent: tfo-test\r\nConnection: close\r\n\r\n");
        assert!(matches!(examine_request(head.as_bytes(), 0), HttpRequest::Complete { .. }));
        let hostile = request_head("GET", "/", "h\r\nX-Evil: 1", "a", &[("B", "c\r\n\r\nGET /")]);
        assert_eq!(hostile.matches("\r\n").count(), 5, "{hostile:?}");
        assert!(!hostile.contains("\r\nX-Evil"));
    }

    use super::*;

    #[test]
    fn the_status_code_comes_with_the_status_line() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200), "the rest of the head not yet here");
        assert_eq!(status_code(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"), Some(404));
        assert_eq!(status_code(b"HTTP/1.1 20"), None, "a cut status line");
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"\xff\x00\r\n"), None);
        assert_eq!(status_code(b""), None);
        assert_eq!(status_code(b"HTTP/1.1 abc\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 999 x\r\n"), None, "not a status");
    }

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

    #[test]
    fn requests() {
        let examine = |b: &[u8]| examine_request(b, 1 << 20);
        let partial = HttpRequest::Partial { expects_continue: false };
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(examine(get), HttpRequest::Complete { len: get.len(), head: false });
        assert_eq!(examine(&get[..10]), partial);
        let post = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel";
        assert_eq!(examine(post), partial);
        let post = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(examine(post), HttpRequest::Complete { len: post.len(), head: false });
        assert_eq!(
            examine(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"),
            HttpRequest::Partial { expects_continue: true }
        );
        assert!(matches!(examine(b"\x16\x03\x01garbage\r\n\r\n"), HttpRequest::Reject(400, _)));
        assert!(matches!(examine(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), HttpRequest::Reject(400, _)));
        assert!(matches!(
            examine(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab"),
            HttpRequest::Reject(400, _)
        ));
        assert!(matches!(examine(b"POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n"), HttpRequest::Reject(413, _)));
        assert!(matches!(
            examine(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpRequest::Reject(411, _)
        ));
        // A head of MAX_HEAD bytes without its end: 431, whatever it is made of.
        let mut huge = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        huge.resize(MAX_HEAD, b'a');
        assert_eq!(examine(&huge), HttpRequest::Reject(431, "Request Header Fields Too Large"));
        // Lengths are digits only, and no sum wraps.
        assert!(matches!(examine(b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc"), HttpRequest::Reject(400, _)));
        let max = b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nab";
        assert!(matches!(examine_request(max, usize::MAX), HttpRequest::Reject(413, _)), "no wrap of head + body");
        let head = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(examine(head), HttpRequest::Complete { len: head.len(), head: true });
        assert!(matches!(examine(b"CONNECT a:443 HTTP/1.1\r\n\r\n"), HttpRequest::Reject(405, _)));
    }

    #[test]
    fn a_head_sent_a_byte_at_a_time_is_parsed_once() {
        let mut request = b"GET / HTTP/1.1\r\n".to_vec();
        while request.len() < 60 * 1024 {
            request.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        request.extend_from_slice(b"\r\n");
        let mut scan = HeadScan::default();
        let mut parses = 0;
        for end in 1..=request.len() {
            if scan.ready(&request[..end]) {
                parses += 1;
            }
        }
        assert_eq!(parses, 1, "ready once, at the last byte");
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody", 10), Some(18));
    }
}
