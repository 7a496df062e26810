//! Hostile bytes through the HTTP/1.1 head parsing that `tfo serve` (requests)
//! and `tfo load`/`send`/`probe` (responses) use. Nothing may panic, and no
//! length may wrap: a whole response's body lies within the bytes.
#![no_main]

use fastopen_wire::http::{examine_request, head_end, read, HeadScan, HttpRequest, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for closed in [false, true] {
        if let Reply::Whole(w) = read(data, closed) {
            assert!(w.body.0 <= w.body.1 && w.body.1 <= data.len());
        }
    }
    for max_body in [0, 1 << 20, usize::MAX] {
        if let HttpRequest::Complete { len, .. } = examine_request(data, max_body) {
            assert!(len <= data.len());
        }
    }
    let mut scan = HeadScan::default();
    for end in [data.len() / 3, data.len() / 2, data.len()] {
        let _ = scan.ready(&data[..end]);
    }
    let _ = head_end(data, data.len() / 2);
});
