//! TCP Fast Open (RFC 7413) for Rust on Linux, with the one thing other TFO
//! libraries do not give you: **per connection, was TFO used, and if not, why.**
//!
//! - Server: [`ListenerBuilder`] → [`BlockingListener`] or `TokioListener`
//!   (feature `tokio`). Each accepted connection comes with an
//!   [`AcceptOutcome`]: did its data arrive in the SYN, how many bytes.
//!   Cookie keys can be set and rotated on a live listener.
//! - Client: [`Connector::connect`] (blocking) or `Connector::connect_async` / `TfoStream` (feature `tokio`)
//!   sends the first data in the SYN with `sendto(MSG_FASTOPEN)` or
//!   `TCP_FASTOPEN_CONNECT`, and returns a [`ClientOutcome`]: bytes in the SYN and
//!   acknowledged, or a [`FailReason`] (`cookie_unavailable`, `data_not_acked`, ...).
//!   With an event loop of your own: [`Connector::start_connect`] (a
//!   [`PendingConnect`] once the SYN left) and [`Connector::finish_connect`].
//! - HTTPS (feature `rustls`): `tls::TlsConnector` for hyper and tonic, the
//!   ClientHello in the SYN and, opted in, the request as TLS 1.3 early data
//!   beside it (one round trip), each response telling what TLS did.
//! - Host: the namespace's [`FastOpenMode`] (`net.ipv4.tcp_fastopen`), blackhole
//!   timeout, key state ([`host`]), the `TCPFastOpen*` [`FastOpenCounters`] with
//!   deltas, and what the running kernel supports ([`KernelFeatures`]).
//!
//! ```no_run
//! use fastopen::{Connector, ListenerBuilder};
//! use std::io::Read;
//!
//! let listener = ListenerBuilder::new("127.0.0.1:8000".parse()?).bind()?;
//! std::thread::spawn(move || {
//!     let (mut stream, _, outcome) = listener.accept().unwrap();
//!     println!("server: {outcome}");
//!     std::io::copy(&mut stream.try_clone().unwrap(), &mut stream).unwrap();
//! });
//! let (mut stream, outcome) = Connector::new().connect("127.0.0.1:8000".parse()?, b"hello")?;
//! println!("client: {outcome}"); // first time: cookie_unavailable; then: TFO used
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! TFO must be enabled in the network namespace: bit 0x1 of
//! `net.ipv4.tcp_fastopen` for clients (on by default), 0x2 for servers. A
//! listener still works as plain TCP without it; [`host::read_mode`] tells.
//!
//! On Unix targets other than Linux the crate compiles and every call returns
//! [`Error::Unsupported`]. Windows is not supported: the API hands out file
//! descriptors (`std::os::fd`), and the build stops with a message saying so.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

#[cfg(not(unix))]
compile_error!(
    "fastopen needs a Unix target: its sockets are file descriptors (std::os::fd); TFO itself is Linux-only"
);

#[cfg(feature = "axum")]
mod axum_serve;
pub mod btf;
mod cancel;
mod client;
mod confirm;
mod counters;
mod diagnosis;
#[cfg(feature = "tokio")]
mod early_data;
mod error;
mod fleet;
pub mod host;
#[cfg(feature = "hyper")]
pub mod hyper;
mod kernel;
mod key;
#[cfg(feature = "key-schedule")]
mod key_schedule;
pub mod keyfile;
mod listener;
mod mode;
mod netlink;
mod outcome;
pub mod owners;
mod pending;
pub mod sock_diag;
mod socket_info;
mod sys;
mod tcp_info;
pub mod tcp_metrics;
#[cfg(feature = "rustls")]
pub mod tls;
#[cfg(feature = "tokio")]
mod tokio_io;
pub mod wrap;

/// Entry points for the fuzz targets (`fuzz/`) and the hostile-input tests:
/// every parser of kernel messages over arbitrary bytes. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// Runs the netlink, sock_diag, tcp_metrics and tcp_info parsers over `bytes`.
    pub fn kernel_messages(bytes: &[u8]) {
        for (kind, _seq, body) in crate::netlink::messages_with_seq(bytes) {
            let _ = (kind, crate::netlink::error_code(body));
            let _ = crate::netlink::attributes(body).count();
            let _ = crate::sock_diag::diag_socket(body);
            let _ = crate::tcp_metrics::family_id(body);
            let _ = crate::tcp_metrics::destination(body);
        }
        let _ = crate::sock_diag::parse(bytes).len();
        let _ = crate::tcp_info::TcpInfo::parse(bytes);
    }
}

#[cfg(feature = "axum")]
pub use axum_serve::{early_data, AcceptedStream, TfoConnectInfo};
pub use cancel::Cancel;
pub use client::{socket_outcome, Connector, SocketOutcome};
#[cfg(feature = "tokio")]
pub use confirm::{confirmation_at_close, wait_confirmed_async};
pub use confirm::{handshake_state, wait_confirmed, Confirmation};
pub use counters::{FastOpenCounters, NoTcpExt, COUNTER_NAMES, NETSTAT_PATH};
pub use diagnosis::{diagnose_probe, ProbeAttempt, ProbeVerdict};
#[cfg(feature = "tokio")]
pub use early_data::{admit, Admission, EarlyDataPolicy, Handshake};
#[cfg(feature = "tower")]
pub use early_data::{EarlyData, EarlyDataLayer, EarlyDataService};
pub use error::{accept_starved, out_of_resources, Error, Result};
pub use fleet::{diagnose_fleet, CookieOrigins, FleetDiagnosis, FleetRound, FleetVerdict, SeenCookie};
pub use kernel::{KernelFeatures, KernelVersion};
pub use key::{BadKey, FastOpenKey};
#[cfg(feature = "key-schedule")]
pub use key_schedule::{BadSchedule, KeySchedule, ScheduledKeys};
pub use listener::{accept_outcome, BlockingListener, ListenerBuilder, ListenerTfo, DEFAULT_QUEUE_LEN};
pub use mode::{BadMode, FastOpenMode, ModeBit, MODE_BITS};
pub use outcome::{AcceptOutcome, ClientMethod, ClientOutcome, FailReason, ServerTfo};
pub use pending::PendingConnect;
pub use socket_info::read_tcp_info;
pub use tcp_info::{HandshakeState, TcpInfo, TruncatedTcpInfo, TCPI_OPT_SYN_DATA, TCPI_OPT_TFO_CHILD};
#[cfg(feature = "tokio")]
pub use tokio_io::{TfoStream, TokioListener, READ_FIRST_GRACE};
