//! The kernel-message fuzz target on stable Rust, in every test run: netlink
//! framing with hostile lengths, then bounded random inputs (proptest). The
//! libFuzzer target (`fuzz/`, `cargo +nightly fuzz run kernel_messages`)
//! runs it for as long as one likes.

use proptest::prelude::*;

/// A netlink message: length, type, flags, seq, pid, then `body`.
fn message(len: u32, kind: u16, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

#[test]
fn hostile_lengths_and_truncations() {
    let bodies: [&[u8]; 4] = [b"", &[0xff; 3], &[0u8; 72], &[0x41; 300]];
    for kind in [2u16, 3, 20, 0x10, 0x15] {
        for body in bodies {
            for len in [0u32, 15, 16, 17, body.len() as u32 + 16, u32::MAX, u32::MAX - 3] {
                let m = message(len, kind, body);
                for end in 0..=m.len() {
                    fastopen::fuzzing::kernel_messages(&m[..end]);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn framed_random_bodies(kind in any::<u16>(), body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let m = message(body.len() as u32 + 16, kind, &body);
        fastopen::fuzzing::kernel_messages(&m);
    }

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fastopen::fuzzing::kernel_messages(&data);
    }
}
