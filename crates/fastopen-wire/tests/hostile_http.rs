//! The HTTP fuzz target's checks on stable Rust, in every test run: a
//! corpus of hostile heads, then bounded random mutations of it (proptest).
//! The libFuzzer target (`fuzz/`, `cargo +nightly fuzz run http`) runs the
//! same checks for as long as one likes.

use fastopen_wire::http::{examine_request, head_end, read, HeadScan, HttpRequest, Reply};
use proptest::prelude::*;

/// Heads that once broke a parser here, or would break a careless one.
const CORPUS: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nhi",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
    b"CONNECT a:443 HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\n\n",
    b"\r\n\r\n",
    b"",
];

fn check(data: &[u8]) {
    for closed in [false, true] {
        if let Reply::Whole(w) = read(data, closed) {
            assert!(w.body.0 <= w.body.1 && w.body.1 <= data.len(), "{w:?} past {} bytes", data.len());
        }
    }
    for max_body in [0, 1 << 20, usize::MAX] {
        if let HttpRequest::Complete { len, .. } = examine_request(data, max_body) {
            assert!(len <= data.len(), "a request of {len} bytes in {}", data.len());
        }
    }
    let mut scan = HeadScan::default();
    for end in [data.len() / 3, data.len() / 2, data.len()] {
        let _ = scan.ready(&data[..end]);
    }
    let _ = head_end(data, data.len() / 2);
}

#[test]
fn the_corpus_and_every_prefix_of_it() {
    for head in CORPUS {
        for end in 0..=head.len() {
            check(&head[..end]);
        }
    }
    let many_continues = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(100_000);
    check(&many_continues);
}

/// A corpus entry with random bytes overwritten, inserted and cut.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (0..CORPUS.len(), proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..8)).prop_map(|(i, edits)| {
        let mut v = CORPUS[i].to_vec();
        for (at, byte, how) in edits {
            let at = if v.is_empty() { 0 } else { at % (v.len() + 1) };
            match how {
                0 if at < v.len() => v[at] = byte,
                1 => v.insert(at, byte),
                _ => v.truncate(at),
            }
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_heads(data in mutated()) {
        check(&data);
    }

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&data);
    }
}
