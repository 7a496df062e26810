//! Pure packet code for TCP Fast Open: no I/O, no `unsafe`.
//!
//! - [`options`]: TCP options, with the TFO option parsed ourselves: kind 34
//!   (RFC 7413) and kind 254 with magic 0xF989 (the experimental form), a cookie
//!   request (empty) or a cookie (even length 4..=16; anything else is reported
//!   as [`Cookie::Malformed`], never dropped silently).
//! - [`packet`]: a zero-copy view of an IPv4/IPv6 TCP packet (headers sliced by
//!   `etherparse`), from raw IP or an Ethernet frame.
//! - [`http`]: when an HTTP/1.1 response or request is whole (lengths
//!   checked, 1xx skipped, chunked framing), for every client and the server.
//! - [`rewrite`]: in-place edits for middleboxes (strip the TFO option), with
//!   the TCP checksum recomputed.
//!
//! Promise: no function here panics, whatever the bytes. Malformed input is an
//! error value or a `Malformed` variant.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod capture;
pub mod http;
pub mod options;
pub mod packet;
pub mod rewrite;
pub mod timeline;

pub use options::{Cookie, FastOpen, FastOpenForm, OptionsIter, TcpOption};
pub use packet::{LinkType, TcpFlags, TcpPacket, WireError};
