//! Platform calls. This module and its children are the only place in the
//! workspace with `unsafe` code; everything above it is safe Rust.
//!
//! The backend is chosen once here: `linux.rs` on Linux and Android, and
//! `unsupported.rs` elsewhere, whose every function returns
//! [`Error::Unsupported`](crate::Error::Unsupported) so that a build for another
//! target compiles and fails at run time with a clear message.

#[cfg(any(target_os = "linux", target_os = "android"))]
#[path = "linux.rs"]
mod imp;

#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[path = "unsupported.rs"]
mod imp;

pub(crate) use imp::*;
