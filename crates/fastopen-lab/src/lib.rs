//! The lab: network namespaces that tfokit creates for itself, so that TFO can
//! be tried, tested and measured without touching the host's network settings.
//!
//! - [`netns`]: a private namespace for the calling thread (loopback only),
//!   the smallest lab: what tests and the loopback demo use.
#![deny(missing_docs)]

pub mod netns;
