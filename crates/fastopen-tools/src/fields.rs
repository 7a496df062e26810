//! The report fields the client engines share, as `--json` names them
//! (flattened into `tfo send`'s, `probe`'s, `demo`'s reports): a client
//! connection's TFO outcome and the TLS part of an exchange. The names are
//! a documented contract.

use std::time::Duration;

use fastopen::{ClientMethod, ClientOutcome, FailReason};
use serde::Serialize;

use crate::tls_client::TlsExchange;

/// Milliseconds with microsecond resolution.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A client outcome as report fields.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeFields {
    pub tfo_used: bool,
    pub method: Option<ClientMethod>,
    pub bytes_in_syn: usize,
    pub syn_bytes_sent: usize,
    /// The whole request (the outcome's `first_data_len` is the part offered to the SYN).
    pub request_bytes: usize,
    pub fail_reason: Option<FailReason>,
    pub fail_explanation: Option<&'static str>,
    pub connect_ms: f64,
    /// The SYN carried the cookie and no data (a read-first connect).
    pub cookie_only_syn: bool,
}

impl OutcomeFields {
    pub fn new(outcome: &ClientOutcome, request_bytes: usize) -> OutcomeFields {
        OutcomeFields {
            tfo_used: outcome.tfo_used(),
            method: outcome.method,
            bytes_in_syn: outcome.bytes_in_syn,
            syn_bytes_sent: outcome.syn_bytes_sent,
            request_bytes,
            fail_reason: outcome.fail_reason,
            fail_explanation: outcome.fail_reason.map(|r| r.explain()),
            connect_ms: ms(outcome.connect_time),
            cookie_only_syn: outcome.cookie_only_syn,
        }
    }
}

/// The TLS part of a client exchange.
#[derive(Debug, Clone, Serialize)]
pub struct TlsFields {
    pub client_hello_bytes: usize,
    pub resumed: bool,
    /// With early data asked for: `accepted`, `rejected`, `no_ticket`, `server_allows_none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_data: Option<&'static str>,
    pub version: Option<&'static str>,
    pub handshake_ms: Option<f64>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

impl From<&TlsExchange> for TlsFields {
    fn from(x: &TlsExchange) -> TlsFields {
        TlsFields {
            client_hello_bytes: x.client_hello_bytes,
            resumed: x.resumed,
            early_data: x.early_data,
            version: x.version,
            handshake_ms: x.handshake.map(ms),
            http_status: x.http_status,
            error: x.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_keep_microseconds() {
        assert_eq!(ms(Duration::from_nanos(1_234_567)), 1.235);
        assert_eq!(ms(Duration::ZERO), 0.0);
    }
}
