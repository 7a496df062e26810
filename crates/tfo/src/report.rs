//! Printing what happened, for people and for machines (`--json`).

use fastopen::FastOpenCounters;
use fastopen_wire::timeline::{Connection, Dir, TfoSeen};
use fastopen_wire::FastOpenForm;
use serde::Serialize;
use std::io::Write;

use fastopen_tools::echo::ConnectionLog;

/// One human line per served connection.
pub(crate) fn connection_line(log: &ConnectionLog) -> String {
    let mut line = format!("{}  {}  in {} B, out {} B", log.peer, log.outcome, log.bytes_in, log.bytes_out);
    if log.in_syn {
        let confirmed = match log.confirmed {
            Some(true) => "confirmed",
            Some(false) => "NOT confirmed",
            None => "confirmation unknown",
        };
        line.push_str(&format!(", {confirmed}, {}", if log.handled { "handled" } else { "NOT handled" }));
    }
    if let Some(tls) = &log.tls {
        line.push_str(&format!(
            ", {}{}",
            tls.version.unwrap_or("TLS unfinished"),
            if tls.resumed { " resumed" } else { "" }
        ));
        if tls.early_data_bytes > 0 {
            let what = match tls.early_data_policy {
                "handled_early" => "handled at once",
                "held_until_handshake" => "held until the handshake ended",
                "too_early" => "refused (too early)",
                "not_handled" => "NOT handled (the handshake never ended)",
                _ => "came after the handshake",
            };
            line.push_str(&format!(", early data {} B {what}", tls.early_data_bytes));
        }
    }
    if let Some(status) = log.http_status {
        line.push_str(&format!(", HTTP {status}"));
    }
    match log.greeting_in_syn_recv {
        Some(true) => line.push_str(", greeting sent in SYN_RECV (before the client's ACK: a round trip sooner)"),
        Some(false) => line.push_str(", greeting sent after the handshake"),
        None => {}
    }
    if let Some(err) = &log.error {
        line.push_str(&format!(", error: {err}"));
    }
    line
}

/// "TCPFastOpenActive +1, TCPFastOpenPassive +1", or "no change".
pub(crate) fn counter_delta(delta: &FastOpenCounters) -> String {
    counter_delta_over(delta, None)
}

/// [`counter_delta`], each change with its rate over `elapsed` when given: `NAME +N (R/s)`.
pub(crate) fn counter_delta_over(delta: &FastOpenCounters, elapsed: Option<std::time::Duration>) -> String {
    let rate = |v: u64| elapsed.map_or(String::new(), |e| format!(" ({:.1}/s)", v as f64 / e.as_secs_f64().max(1e-3)));
    let parts: Vec<String> = delta.nonzero().map(|(name, v)| format!("{name} +{v}{}", rate(v))).collect();
    if parts.is_empty() {
        "no change".to_string()
    } else {
        parts.join(", ")
    }
}

pub(crate) use fastopen_tools::fields::{ms, OutcomeFields};

/// A connection's handshake timeline and verdict, as `tfo trace` prints it.
pub(crate) fn print_connection(out: &mut impl Write, c: &Connection) -> std::io::Result<()> {
    writeln!(out, "{} -> {}: {}", c.client, c.server, c.verdict())?;
    print_events(out, c, "  ")?;
    if c.packets > c.events.len() as u64 {
        writeln!(out, "  ... {} more packets", c.packets - c.events.len() as u64)?;
    }
    if c.syn_retransmits > 0 {
        writeln!(out, "  SYN retransmitted {} time(s)", c.syn_retransmits)?;
    }
    if c.reset {
        writeln!(out, "  reset (RST seen)")?;
    }
    writeln!(out)
}

/// The timeline table of a connection, each line prefixed with `indent`.
/// Written by hand, not through `format!`: a large capture's timelines are
/// millions of lines (`scripts/trace-speed`).
pub(crate) fn print_events(out: &mut impl Write, c: &Connection, indent: &str) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(128);
    line.extend_from_slice(indent.as_bytes());
    line.extend_from_slice(EVENTS_HEADER.as_bytes());
    out.write_all(&line)?;
    let mut digits = itoa::Buffer::new();
    for e in &c.events {
        line.clear();
        line.extend_from_slice(indent.as_bytes());
        push_millis(&mut line, &mut digits, e.time);
        line.extend_from_slice(b"  ");
        left(&mut line, if e.dir == Dir::ToServer { ">" } else { "<" }, 3);
        line.push(b' ');
        left(&mut line, flag_names(e.flags.0), 8);
        line.push(b' ');
        right(&mut line, digits.format(e.seq), 10);
        line.push(b' ');
        right(&mut line, digits.format(e.ack), 10);
        line.push(b' ');
        right(&mut line, digits.format(e.len), 6);
        line.extend_from_slice(b"  ");
        if let Some(t) = &e.tfo {
            write!(line, "{t}")?;
        }
        if let Some(n) = e.note {
            write!(line, "  <- {n}")?;
        }
        if e.point > 0 {
            write!(line, " @{}", e.point)?;
        }
        line.push(b'\n');
        out.write_all(&line)?;
    }
    Ok(())
}

/// The timeline table's header line (after the indent): the columns'
/// names aligned as [`print_events`] aligns their values.
const EVENTS_HEADER: &str = " time (ms)  dir flags           seq        ack    len  TFO option\n";

/// `time` in milliseconds with 3 decimals, right-aligned in 10 columns (as
/// `{:>10.3}` of [`ms`] prints it).
fn push_millis(line: &mut Vec<u8>, digits: &mut itoa::Buffer, time: std::time::Duration) {
    let micros = (time.as_secs_f64() * 1e6).round() as u64;
    let (whole, frac) = (digits.format(micros / 1000), micros % 1000);
    line.resize(line.len() + 6usize.saturating_sub(whole.len()), b' ');
    line.extend_from_slice(whole.as_bytes());
    line.push(b'.');
    line.extend([frac / 100, frac / 10 % 10, frac % 10].map(|d| b'0' + d as u8));
}

/// `text` right-aligned in `width`, as `{:>width}` (ASCII text).
fn right(line: &mut Vec<u8>, text: &str, width: usize) {
    line.resize(line.len() + width.saturating_sub(text.len()), b' ');
    line.extend_from_slice(text.as_bytes());
}

/// `text` left-aligned in `width`, as `{:<width}` (ASCII text).
fn left(line: &mut Vec<u8>, text: &str, width: usize) {
    line.extend_from_slice(text.as_bytes());
    line.resize(line.len() + width.saturating_sub(text.len()), b' ');
}

/// The name of every flag combination ("SYN-ACK"), made once.
fn flag_names(flags: u8) -> &'static str {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    &NAMES.get_or_init(|| (0..=255u8).map(|f| fastopen_wire::TcpFlags(f).to_string()).collect())[usize::from(flags)]
}

/// A TFO option in `tfo trace --json`.
#[derive(Debug, Serialize)]
pub(crate) struct TfoReport {
    /// "request", "cookie" or "malformed".
    kind: &'static str,
    /// "rfc7413" (kind 34) or "experimental" (kind 254).
    form: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cookie: Option<String>,
}

impl From<&TfoSeen> for TfoReport {
    fn from(t: &TfoSeen) -> TfoReport {
        let form = match t.form() {
            FastOpenForm::Rfc7413 => "rfc7413",
            FastOpenForm::Experimental => "experimental",
        };
        let (kind, cookie) = match t {
            TfoSeen::Request(_) => ("request", None),
            TfoSeen::Cookie(_, c) => ("cookie", Some(c.to_string())),
            TfoSeen::Malformed(_, c) => ("malformed", Some(c.to_string())),
        };
        TfoReport { kind, form, cookie }
    }
}

/// One packet of a connection's timeline in `tfo trace --json`.
#[derive(Debug, Serialize)]
pub(crate) struct EventReport {
    time_ms: f64,
    point: u8,
    /// "to_server" or "to_client".
    dir: &'static str,
    flags_str: String,
    seq: u32,
    ack: u32,
    len: u32,
    tfo: Option<TfoReport>,
    note: Option<String>,
}

/// A connection in `tfo trace --json` (and `tfo demo --json`'s `wire`).
#[derive(Debug, Serialize)]
pub(crate) struct ConnectionReport {
    client: std::net::SocketAddr,
    server: std::net::SocketAddr,
    verdict: &'static str,
    explanation: String,
    bytes_in_syn: u32,
    cookie_received: Option<String>,
    syn_retransmits: u32,
    reset: bool,
    packets: u64,
    bytes_to_server: u64,
    bytes_to_client: u64,
    events: Vec<EventReport>,
}

impl From<&Connection> for ConnectionReport {
    fn from(c: &Connection) -> ConnectionReport {
        let v = c.verdict();
        let events = c
            .events
            .iter()
            .map(|e| EventReport {
                time_ms: ms(e.time),
                point: e.point,
                dir: if e.dir == Dir::ToServer { "to_server" } else { "to_client" },
                flags_str: e.flags.to_string(),
                seq: e.seq,
                ack: e.ack,
                len: e.len,
                tfo: e.tfo.as_ref().map(TfoReport::from),
                note: e.note.map(|n| n.to_string()),
            })
            .collect();
        ConnectionReport {
            client: c.client,
            server: c.server,
            verdict: v.as_str(),
            explanation: v.to_string(),
            bytes_in_syn: match v {
                fastopen_wire::timeline::Verdict::TfoUsed { bytes } => bytes,
                _ => 0,
            },
            cookie_received: c.cookie_received().map(|k| k.to_string()),
            syn_retransmits: c.syn_retransmits,
            reset: c.reset,
            packets: c.packets,
            bytes_to_server: c.bytes_to_server,
            bytes_to_client: c.bytes_to_client,
            events,
        }
    }
}

/// Where the lab's server says what went wrong (a failing accept, ...): stderr.
pub(crate) fn lab_server_notices() -> fastopen_tools::echo::Notices {
    std::sync::Arc::new(|line: String| errln!("tfo: the lab's server: {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written timeline columns print what `format!` would.
    #[test]
    fn timeline_columns_match_format() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut digits = itoa::Buffer::new();
        for i in 0..10_000u64 {
            // Nanoseconds from 0 to 13 days (times from the capture's start;
            // beyond 10^6 s the column is wider than 10).
            let ns = if i < 100 { i * 499_999 } else { next() % (1 << (20 + i % 31)) };
            let d = std::time::Duration::from_nanos(ns);
            let mut line = Vec::new();
            push_millis(&mut line, &mut digits, d);
            assert_eq!(String::from_utf8(line).unwrap(), format!("{:>10.3}", ms(d)), "{ns} ns");
        }
        let header = format!(
            "{:>10}  {:<3} {:<8} {:>10} {:>10} {:>6}  TFO option\n",
            "time (ms)", "dir", "flags", "seq", "ack", "len"
        );
        assert_eq!(EVENTS_HEADER, header);
        for text in ["", "1", "12345", "1234567890", "12345678901"] {
            let (mut r, mut l) = (Vec::new(), Vec::new());
            right(&mut r, text, 6);
            left(&mut l, text, 6);
            assert_eq!(String::from_utf8(r).unwrap(), format!("{text:>6}"));
            assert_eq!(String::from_utf8(l).unwrap(), format!("{text:<6}"));
        }
        assert_eq!(flag_names(0x12), "SYN-ACK");
    }

    /// The names scripts match on: serde's and `as_str` must agree, for every reason and verdict.
    #[test]
    fn every_reason_and_verdict_serializes_as_its_stable_name() {
        let mut names = std::collections::HashSet::new();
        for r in fastopen::FailReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str(), "{r:?}");
            assert!(names.insert(r.as_str()), "{} twice", r.as_str());
        }
        assert_eq!(names.len(), 8);
        for v in [
            fastopen::ProbeVerdict::Works,
            fastopen::ProbeVerdict::CachedCookieRefused,
            fastopen::ProbeVerdict::NoReply,
        ] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
    }
}
