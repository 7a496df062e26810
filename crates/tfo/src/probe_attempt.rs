//! One connection of a probe (`tfo probe`, and each round of `--fleet`):
//! connect with the request in the SYN when it can, wait for the first reply
//! byte, and report it. Shared by both, so neither command imports the other.

use std::net::SocketAddr;
use std::time::Duration;

use fastopen::{Connector, ProbeAttempt};
use serde::Serialize;

use crate::report::TlsFields;
use crate::report::{self, OutcomeFields};
use fastopen_tools::exchange::{exchange, ExchangeError, Until};

/// One connection of the probe, as `--json` reports it.
#[derive(Debug, Serialize)]
pub(crate) struct AttemptReport {
    pub(crate) kind: &'static str,
    #[serde(flatten)]
    pub(crate) outcome: OutcomeFields,
    /// Time to the first byte of the reply (None: no reply within the timeout).
    pub(crate) first_reply_ms: Option<f64>,
    /// With --tls: the handshake and the HTTPS answer.
    pub(crate) tls: Option<TlsFields>,
    /// The outcome in words, for the text report.
    #[serde(skip)]
    pub(crate) said: String,
}

/// One connection: connect (request in the SYN if TFO), wait for the first reply byte.
pub(crate) fn attempt(
    kind: &'static str,
    connector: &Connector,
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<(AttemptReport, ProbeAttempt), ExchangeError> {
    let limits = crate::interrupt::limits(timeout, Until::FirstByte);
    let (outcome, first_reply) = match exchange(connector, addr, request, Until::FirstByte, &limits) {
        Ok(ex) => (ex.outcome, ex.first_byte),
        // Connected, but no reply in time: the outcome is still known.
        Err(ExchangeError::Timeout { outcome, .. }) => (*outcome, None),
        Err(e) => return Err(e),
    };
    let report = AttemptReport {
        kind,
        outcome: OutcomeFields::new(&outcome, request.len()),
        first_reply_ms: first_reply.map(report::ms),
        tls: None,
        said: outcome.to_string(),
    };
    Ok((report, ProbeAttempt::new(outcome, first_reply.is_some())))
}
