//! Hostile bytes through every parser of kernel messages in fastopen:
//! netlink framing and attributes, sock_diag sockets, tcp_metrics entries,
//! tcp_info. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fastopen::fuzzing::kernel_messages(data);
});
