//! Printing what happened, for people and for machines (`--json`).

use fastopen::{ClientOutcome, FastOpenCounters};

use crate::echo::ConnectionLog;

/// One human line per served connection.
pub(crate) fn connection_line(log: &ConnectionLog) -> String {
    let mut line = format!("{}  {}  in {} B, out {} B", log.peer, log.outcome, log.bytes_in, log.bytes_out);
    if let Some(status) = log.http_status {
        line.push_str(&format!(", HTTP {status}"));
    }
    if let Some(err) = &log.error {
        line.push_str(&format!(", error: {err}"));
    }
    line
}

/// "TCPFastOpenActive +1, TCPFastOpenPassive +1", or "no change".
pub(crate) fn counter_delta(delta: &FastOpenCounters) -> String {
    let parts: Vec<String> = delta.nonzero().map(|(name, v)| format!("{name} +{v}")).collect();
    if parts.is_empty() {
        "no change".to_string()
    } else {
        parts.join(", ")
    }
}

/// The client outcome as JSON fields shared by `send` and `demo`.
pub(crate) fn outcome_json(outcome: &ClientOutcome) -> serde_json::Value {
    serde_json::json!({
        "tfo_used": outcome.tfo_used(),
        "method": outcome.method,
        "bytes_in_syn": outcome.bytes_in_syn,
        "syn_bytes_sent": outcome.syn_bytes_sent,
        "request_bytes": outcome.first_data_len,
        "fail_reason": outcome.fail_reason.map(|r| r.as_str()),
        "fail_explanation": outcome.fail_reason.map(|r| r.explain()),
        "connect_ms": ms(outcome.connect_time),
    })
}

/// Milliseconds with microsecond resolution.
pub(crate) fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
