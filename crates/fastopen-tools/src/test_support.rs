//! What the engines' unit tests share.

use fastopen::AcceptOutcome;

/// The outcome of a plain accept (a regular handshake, no TFO), as the
/// kernel's `tcp_info` would give it.
pub(crate) fn plain_accept() -> AcceptOutcome {
    let info = fastopen::TcpInfo::parse(&[1u8, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    AcceptOutcome::derive(&info, &info, fastopen::KernelFeatures::current())
}
