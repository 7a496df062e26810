//! The probe of `tfo probe`: three connections to one address (two with
//! TFO, one plain; or, for servers that speak first, two read-first ones
//! and a plain one), their outcomes, and the verdict on the server and the
//! path. [`pace`] runs many probes politely; [`fleet`] probes the backends
//! behind one address.

pub mod fleet;
pub mod pace;

use std::net::SocketAddr;
use std::time::Duration;

use fastopen::{diagnose_probe, Cancel, ClientMethod, Connector, ProbeAttempt, ProbeVerdict};
use serde::Serialize;

use crate::exchange::{exchange, ExchangeError, Limits, Until};
use crate::failure::{error_chain, Failure};
use crate::fields::{ms, OutcomeFields, TlsFields};
use crate::greeting::{read_greeting, Greeting};
use crate::tls_client::{self, TlsClient};

/// The verdict on one address: TFO's, or why it could not be probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diagnosis {
    Tfo(ProbeVerdict),
    /// Read first: `answers_in_syn_recv`, `no_cookie`, `cookie_refused`.
    ReadFirst(&'static str),
    /// TLS failed (a name that cannot be sent as SNI, or the handshake or
    /// certificate after TFO carried the ClientHello): `tls_failed`.
    TlsFailed,
    /// A connection could not be made or finished: `unresolved`, `refused`,
    /// `connect_timeout`, `closed_early`, ...
    Failed(Failure),
}

impl Diagnosis {
    /// The stable name (`--json`'s `diagnosis`).
    pub fn as_str(self) -> &'static str {
        match self {
            Diagnosis::Tfo(v) => v.as_str(),
            Diagnosis::ReadFirst(v) => v,
            Diagnosis::TlsFailed => "tls_failed",
            Diagnosis::Failed(f) => f.as_str(),
        }
    }
}

impl Serialize for Diagnosis {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One connection of the probe.
#[derive(Debug, Serialize)]
pub struct AttemptReport {
    pub kind: &'static str,
    #[serde(flatten)]
    pub outcome: OutcomeFields,
    /// Time to the first byte of the reply (None: no reply within the timeout).
    pub first_reply_ms: Option<f64>,
    /// With TLS: the handshake and the HTTPS answer.
    pub tls: Option<TlsFields>,
    /// The outcome in words, for the text report.
    #[serde(skip)]
    pub said: String,
}

/// One address probed (`tfo probe --json`: one per address; the field
/// names are a contract).
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    /// The target as given.
    pub target: String,
    /// The address probed (None: the target did not resolve).
    pub server: Option<SocketAddr>,
    pub tfo_works: bool,
    pub diagnosis: Diagnosis,
    pub explanation: String,
    pub saved_ms: Option<f64>,
    pub attempts: Vec<AttemptReport>,
}

/// One address to probe, and the target it came from.
#[derive(Debug, Clone)]
pub struct Job {
    /// The target as given.
    pub target: String,
    /// Its host name, if it is one (the HTTP Host and the TLS SNI).
    pub name: Option<String>,
    /// Whether the target named its port (else the Host header leaves it out).
    pub port_given: bool,
    /// The address, or why the target did not resolve.
    pub addr: Result<SocketAddr, String>,
}

/// TLS for the probe: the client and the name to ask for.
#[derive(Debug)]
pub struct ProbeTls {
    pub client: TlsClient,
    /// The SNI; default: the target's name.
    pub sni: Option<String>,
}

/// What every probe of a run shares.
#[derive(Debug)]
pub struct Probe {
    pub method: ClientMethod,
    /// Deadline of each connection (handshake and first reply byte).
    pub timeout: Duration,
    /// Send an HTTP GET instead of a short line.
    pub http: bool,
    pub tls: Option<ProbeTls>,
    /// Servers that speak first: connect read-first and time the greeting.
    pub read_first: bool,
    /// Stops every wait when cancelled.
    pub cancel: Option<Cancel>,
}

/// A connection of the probe that could not be made or finished.
#[derive(Debug)]
pub struct AttemptFailed {
    pub diagnosis: Diagnosis,
    /// The error and its causes.
    pub why: String,
}

impl From<ExchangeError> for AttemptFailed {
    fn from(e: ExchangeError) -> AttemptFailed {
        AttemptFailed { diagnosis: Diagnosis::Failed(e.failure()), why: error_chain(&e) }
    }
}

/// One connection: connect (the request in the SYN when TFO can), wait for
/// the first reply byte. A reply that does not come in time is no error: the
/// outcome is still known.
pub fn attempt(
    kind: &'static str,
    connector: &Connector,
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
    cancel: Option<Cancel>,
) -> Result<(AttemptReport, ProbeAttempt), ExchangeError> {
    let limits = Limits { token: cancel, ..Limits::new(timeout, Until::FirstByte) };
    let (outcome, first_reply) = match exchange(connector, addr, request, Until::FirstByte, &limits) {
        Ok(ex) => (ex.outcome, ex.first_byte),
        Err(ExchangeError::Timeout { outcome, .. }) => (*outcome, None),
        Err(e) => return Err(e),
    };
    let report = AttemptReport {
        kind,
        outcome: OutcomeFields::new(&outcome, request.len()),
        first_reply_ms: first_reply.map(ms),
        tls: None,
        said: outcome.to_string(),
    };
    Ok((report, ProbeAttempt::new(outcome, first_reply.is_some())))
}

impl Probe {
    /// The bytes a plain (or HTTP) probe of `job` at `addr` sends.
    pub fn request(&self, job: &Job, addr: SocketAddr) -> Vec<u8> {
        if !self.http {
            return b"tfo probe\n".to_vec();
        }
        let host = match &job.name {
            Some(name) if !job.port_given => name.clone(),
            Some(name) => format!("{name}:{}", addr.port()),
            None => addr.to_string(),
        };
        fastopen_wire::http::request_head("GET", "/", &host, "tfo-probe", &[("Connection", "close")]).into_bytes()
    }

    /// One connection, plain or TLS.
    fn attempt(
        &self,
        kind: &'static str,
        connector: &Connector,
        job: &Job,
        addr: SocketAddr,
    ) -> Result<(AttemptReport, ProbeAttempt), AttemptFailed> {
        let request = self.request(job, addr);
        let Some(tls) = &self.tls else {
            return attempt(kind, connector, addr, &request, self.timeout, self.cancel.clone())
                .map_err(AttemptFailed::from);
        };
        let name = tls_client::server_name(tls.sni.as_deref().or(job.name.as_deref()), addr)
            .map_err(|why| AttemptFailed { diagnosis: Diagnosis::TlsFailed, why })?;
        let http = self.http.then_some(&request[..]);
        // The TLS client carries its own cancellation (`TlsClient::cancel_on`).
        let x = tls
            .client
            .exchange(connector, addr, name, http, self.timeout)
            .map_err(|e| AttemptFailed::from(ExchangeError::from(e)))?;
        let report = AttemptReport {
            kind,
            outcome: OutcomeFields::new(&x.outcome, x.first_flight_bytes),
            first_reply_ms: x.first_byte.map(ms),
            tls: Some(TlsFields::from(&x)),
            said: x.outcome.to_string(),
        };
        Ok((report, ProbeAttempt::new(x.outcome, x.first_byte.is_some())))
    }

    /// The probe of one address: three connections and the verdict.
    pub fn address(&self, job: &Job) -> ProbeReport {
        let target = job.target.clone();
        let addr = match &job.addr {
            Ok(addr) => *addr,
            Err(why) => return failed(target, None, Diagnosis::Failed(Failure::Unresolved), why.clone(), Vec::new()),
        };
        if self.read_first {
            return self.read_first(target, addr);
        }
        let tfo = Connector::new().method(self.method);
        let plain = Connector::new().tfo(false);
        let mut attempts = Vec::new();
        let mut seen = Vec::new();
        for (kind, connector) in [("tfo_first", &tfo), ("tfo_second", &tfo), ("plain", &plain)] {
            match self.attempt(kind, connector, job, addr) {
                Ok((report, s)) => {
                    attempts.push(report);
                    seen.push(s);
                }
                Err(mut e) => {
                    if e.diagnosis == Diagnosis::Failed(Failure::ConnectTimeout) && kind == "tfo_second" {
                        e.why.push_str(
                            "; the first connection got through, and this SYN carried data: something may drop SYNs with data (with a --timeout over 1 s the kernel's retransmission without data shows it)",
                        );
                    }
                    return failed(target, Some(addr), e.diagnosis, e.why, attempts);
                }
            }
        }
        let verdict = diagnose_probe(&seen[0], &seen[1], &seen[2]);
        let tls_error = attempts.iter().find_map(|a| a.tls.as_ref()?.error.clone());
        let (diagnosis, explanation) = match tls_error {
            Some(e) if verdict == ProbeVerdict::Works => (
                Diagnosis::TlsFailed,
                format!("TFO carried the ClientHello in the SYN and the server answered, but {e}"),
            ),
            Some(e) => (Diagnosis::Tfo(verdict), format!("{}; and {e}", verdict.explain())),
            None => (Diagnosis::Tfo(verdict), verdict.explain().to_string()),
        };
        let saved_ms = match (attempts[2].first_reply_ms, attempts[1].first_reply_ms) {
            (Some(p), Some(t)) if verdict == ProbeVerdict::Works => Some(((p - t) * 1000.0).round() / 1000.0),
            _ => None,
        };
        ProbeReport {
            target,
            server: Some(addr),
            tfo_works: diagnosis == Diagnosis::Tfo(ProbeVerdict::Works),
            diagnosis,
            explanation,
            saved_ms,
            attempts,
        }
    }

    /// Read first: two read-first connections with TFO (the first gets the
    /// cookie, the second sends it without data) and a plain one, each timed
    /// to the greeting against its own RTT.
    fn read_first(&self, target: String, addr: SocketAddr) -> ProbeReport {
        let tfo = Connector::new();
        let plain = Connector::new().tfo(false);
        let mut attempts = Vec::new();
        let mut greetings = Vec::new();
        for (kind, connector) in [("read_first_1", &tfo), ("read_first_2", &tfo), ("plain", &plain)] {
            let limits = Limits { token: self.cancel.clone(), ..Limits::new(self.timeout, Until::FirstByte) };
            match read_greeting(connector, addr, &limits) {
                Ok(g) => {
                    let trips =
                        g.round_trips().map_or(String::new(), |n| format!(", greeting after {n:.2} round trips"));
                    attempts.push(AttemptReport {
                        kind,
                        outcome: OutcomeFields::new(&g.outcome, 0),
                        first_reply_ms: Some(ms(g.after)),
                        tls: None,
                        said: format!("{}{trips}", g.outcome),
                    });
                    greetings.push(g);
                }
                Err(e) => return failed(target, Some(addr), Diagnosis::Failed(e.failure()), error_chain(&e), attempts),
            }
        }
        let (second, plain) = (&greetings[1], &greetings[2]);
        let trips = |g: &Greeting| g.round_trips().map_or("?".to_string(), |n| format!("{n:.2}"));
        let (verdict, explanation) = match (second.outcome.cookie_only_syn, second.with_handshake()) {
            (true, Some(true)) => (
                "answers_in_syn_recv",
                format!(
                    "the server made the connection on the cookie SYN and greeted in SYN_RECV: its greeting came after {} round trips (plain TCP: {})",
                    trips(second),
                    trips(plain)
                ),
            ),
            (true, _) => (
                "cookie_refused",
                format!(
                    "the cookie rode in the SYN, but the greeting came after {} round trips: the server did not take it (a key rotation, its TFO queue full, or the option stripped on the way back)",
                    trips(second)
                ),
            ),
            (false, _) => (
                "no_cookie",
                "the server offered no cookie: its TFO is off (bit 0x2 of net.ipv4.tcp_fastopen, or TCP_FASTOPEN on its listener; 0x400 gives every listener TFO), or something on the path strips the option".to_string(),
            ),
        };
        let works = verdict == "answers_in_syn_recv";
        let saved_ms = works.then(|| ((plain.after.as_secs_f64() - second.after.as_secs_f64()) * 1e6).round() / 1e3);
        ProbeReport {
            target,
            server: Some(addr),
            tfo_works: works,
            diagnosis: Diagnosis::ReadFirst(verdict),
            explanation,
            saved_ms,
            attempts,
        }
    }
}

fn failed(
    target: String,
    server: Option<SocketAddr>,
    diagnosis: Diagnosis,
    explanation: String,
    attempts: Vec<AttemptReport>,
) -> ProbeReport {
    ProbeReport { target, server, tfo_works: false, diagnosis, explanation, saved_ms: None, attempts }
}

/// The end of a run over several addresses (`--json`: the last line, as `{"summary": ...}`).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub targets: usize,
    pub addresses: usize,
    pub works: usize,
    pub wall_ms: f64,
    /// Addresses per diagnosis, most common first.
    pub diagnoses: Vec<DiagnosisCount>,
}

/// One row of the summary table.
#[derive(Debug, Serialize)]
pub struct DiagnosisCount {
    pub diagnosis: &'static str,
    pub addresses: usize,
}

impl Summary {
    /// The summary of `reports` (each address's diagnosis and whether TFO works there).
    pub fn of(targets: usize, reports: &[(Diagnosis, bool)], wall: Duration) -> Summary {
        let mut counts: Vec<DiagnosisCount> = Vec::new();
        for (d, _) in reports {
            match counts.iter_mut().find(|c| c.diagnosis == d.as_str()) {
                Some(c) => c.addresses += 1,
                None => counts.push(DiagnosisCount { diagnosis: d.as_str(), addresses: 1 }),
            }
        }
        counts.sort_by(|a, b| b.addresses.cmp(&a.addresses).then(a.diagnosis.cmp(b.diagnosis)));
        Summary {
            targets,
            addresses: reports.len(),
            works: reports.iter().filter(|(_, works)| *works).count(),
            wall_ms: ms(wall),
            diagnoses: counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnoses_keep_their_names() {
        assert_eq!(serde_json::to_value(Diagnosis::TlsFailed).unwrap(), "tls_failed");
        assert_eq!(serde_json::to_value(Diagnosis::Failed(Failure::Unresolved)).unwrap(), "unresolved");
        assert_eq!(serde_json::to_value(Diagnosis::Failed(Failure::ClosedEarly)).unwrap(), "closed_early");
        assert_eq!(serde_json::to_value(Diagnosis::Tfo(ProbeVerdict::Works)).unwrap(), ProbeVerdict::Works.as_str());
        assert_eq!(serde_json::to_value(Diagnosis::ReadFirst("no_cookie")).unwrap(), "no_cookie");
    }

    #[test]
    fn the_summary_counts_most_common_first() {
        let works = Diagnosis::Tfo(ProbeVerdict::Works);
        let refused = Diagnosis::Failed(Failure::Refused);
        let s = Summary::of(2, &[(refused, false), (works, true), (refused, false)], Duration::from_millis(5));
        assert_eq!((s.addresses, s.works, s.wall_ms), (3, 1, 5.0));
        assert_eq!(s.diagnoses[0].diagnosis, "refused");
        assert_eq!(s.diagnoses[0].addresses, 2);
        assert_eq!(s.diagnoses[1].diagnosis, ProbeVerdict::Works.as_str());
    }

    #[test]
    fn the_http_request_names_the_host_as_given() {
        let probe = Probe {
            method: ClientMethod::SendTo,
            timeout: Duration::from_secs(1),
            http: true,
            tls: None,
            read_first: false,
            cancel: None,
        };
        let addr: SocketAddr = "192.0.2.1:8080".parse().unwrap();
        let job = |name: Option<&str>, port_given| Job {
            target: "t".into(),
            name: name.map(str::to_string),
            port_given,
            addr: Ok(addr),
        };
        let head = |j: &Job| String::from_utf8(probe.request(j, addr)).unwrap();
        assert!(head(&job(Some("example.test"), false)).contains("Host: example.test\r\n"));
        assert!(head(&job(Some("example.test"), true)).contains("Host: example.test:8080\r\n"));
        assert!(head(&job(None, true)).contains("Host: 192.0.2.1:8080\r\n"));
    }
}
