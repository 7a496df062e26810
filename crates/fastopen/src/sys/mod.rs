//! Platform calls. This module and its children are the only place in the
//! workspace with `unsafe` code; everything above it is safe Rust.
//!
//! The backend is chosen once here: `linux.rs` on Linux and Android, and
//! `unsupported.rs` elsewhere, whose every function returns
//! [`Error::Unsupported`](crate::Error::Unsupported) so that a build for another
//! target compiles and fails at run time with a clear message.
//!
//! # What a platform backend provides
//!
//! - the option numbers `TCP_FASTOPEN`, `TCP_FASTOPEN_CONNECT`,
//!   `TCP_FASTOPEN_NO_COOKIE` and the flag `MSG_FASTOPEN`;
//! - int socket options (`set_tcp_int`, `get_tcp_int`), the listener key
//!   (`set_fastopen_key`, `get_fastopen_key`) and the raw `tcp_info` bytes;
//! - `wait_ready` (a deadline, not restarted by signals, and a cancellation
//!   descriptor) and `kernel_release`;
//! - the meaning of errors: `client_errno` (in progress / TFO disabled / other)
//!   and `key_errno`, so that no errno is matched outside this module;
//! - `bpf`: the bpf(2) calls of `tfo watch`'s process probe (a map, a
//!   program, its attachment, lookups; `crate::owners`);
//! - `PlatformUnsupported`, the error that only the fallback backend makes.
//!
//! Non-Unix targets (Windows) do not build: the API hands out file descriptors
//! (`std::os::fd`). CI compiles the fallback on Linux with
//! `RUSTFLAGS="--cfg fastopen_unsupported_backend" cargo check -p fastopen`.

#[cfg(all(any(target_os = "linux", target_os = "android"), not(fastopen_unsupported_backend)))]
#[path = "linux.rs"]
mod imp;

#[cfg(any(not(any(target_os = "linux", target_os = "android")), fastopen_unsupported_backend))]
#[path = "unsupported.rs"]
mod imp;

pub(crate) use imp::*;
