//! `tfo probe --fleet N`: many rounds against one address (a VIP), each with
//! a fresh cookie, to see whether the backends behind it agree on cookies.
//! The verdict is `fastopen::diagnose_fleet`'s; this module does the rounds.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use fastopen::{
    diagnose_fleet, Cancel, ClientMethod, Connector, CookieOrigins, FastOpenKey, FleetDiagnosis, FleetRound,
    FleetVerdict,
};
use serde::Serialize;

use crate::exchange::ExchangeError;
use crate::fields::OutcomeFields;

/// The pause between rounds: polite to the servers, and lets a balancer's
/// state settle.
const BETWEEN_ROUNDS: Duration = Duration::from_millis(20);

/// A fleet probe: the address, the rounds, what each round sends.
#[derive(Debug)]
pub struct FleetProbe {
    pub addr: SocketAddr,
    pub rounds: u32,
    pub method: ClientMethod,
    pub timeout: Duration,
    pub request: Vec<u8>,
    /// The servers' keys (primary, backup), to trace each cookie to what it
    /// was made for; empty: not traced.
    pub keys: Vec<FastOpenKey>,
    /// Server addresses a backend may see besides `addr`'s (behind DNAT).
    pub candidates: Vec<IpAddr>,
    pub cancel: Option<Cancel>,
}

/// Why the fleet probe stopped.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("no route to {server}")]
    NoRoute {
        server: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(
        "--fleet forgets this host's cached cookie for the address before each round, which needs root (CAP_NET_ADMIN)"
    )]
    Forget(#[source] fastopen::Error),
    #[error(transparent)]
    Cache(#[from] fastopen::Error),
    #[error(transparent)]
    Attempt(#[from] ExchangeError),
    #[error("cancelled")]
    Cancelled,
}

/// One round, as `--json` reports it.
#[derive(Debug, Serialize)]
pub struct RoundReport {
    pub cookie: Option<String>,
    pub cookie_after: Option<String>,
    #[serde(flatten)]
    pub syn_data: OutcomeFields,
}

/// A distinct cookie, as `--json` reports it.
#[derive(Debug, Serialize)]
pub struct CookieReport {
    pub cookie: String,
    pub rounds: usize,
    pub made_for: Option<IpAddr>,
    /// `primary` or `backup`: which key made it.
    pub made_with: Option<&'static str>,
}

/// `tfo probe --fleet --json` (the field names are a contract).
#[derive(Debug, Serialize)]
pub struct FleetReport {
    pub server: SocketAddr,
    pub client: IpAddr,
    pub rounds: usize,
    pub distinct_cookies: usize,
    pub accepted: usize,
    pub accepted_fraction: f64,
    pub verdict: FleetVerdict,
    pub explanation: &'static str,
    pub cookies: Vec<CookieReport>,
    pub per_round: Vec<RoundReport>,
}

fn hex(bytes: &[u8]) -> String {
    fastopen_wire::options::hex(bytes)
}

/// The address this host sends from to reach `server` (what the servers see,
/// unless something translates it). A UDP socket's connect sends nothing.
fn source_address(server: SocketAddr) -> Result<IpAddr, FleetError> {
    let no_route = |source| FleetError::NoRoute { server, source };
    let unspecified: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = std::net::UdpSocket::bind(unspecified).map_err(no_route)?;
    socket.connect(server).map_err(no_route)?;
    Ok(socket.local_addr().map_err(no_route)?.ip())
}

/// Runs the rounds (needs CAP_NET_ADMIN to forget the cached cookie) and
/// judges them.
pub fn run(probe: &FleetProbe) -> Result<FleetReport, FleetError> {
    let server_ip = probe.addr.ip();
    let client = source_address(probe.addr)?;
    let candidates: Vec<IpAddr> = std::iter::once(server_ip).chain(probe.candidates.iter().copied()).collect();
    let connector = Connector::new().method(probe.method);
    // The cookie cache, read and cleared through the library's netlink.
    let mut cache = fastopen::tcp_metrics::TcpMetrics::open()?;
    let attempt =
        |kind| super::attempt(kind, &connector, probe.addr, &probe.request, probe.timeout, probe.cancel.clone());
    let mut rounds = Vec::new();
    let mut per_round = Vec::new();
    for i in 0..probe.rounds {
        if probe.cancel.as_ref().is_some_and(Cancel::is_cancelled) {
            return Err(FleetError::Cancelled);
        }
        if i > 0 {
            std::thread::sleep(BETWEEN_ROUNDS);
        }
        cache.forget(server_ip).map_err(FleetError::Forget)?;
        attempt("cookie_request")?;
        let cookie = cache.cookie_for(server_ip)?;
        let (report, seen) = attempt("syn_data")?;
        let cookie_after = cache.cookie_for(server_ip)?;
        per_round.push(RoundReport {
            cookie: cookie.as_deref().map(hex),
            cookie_after: cookie_after.as_deref().map(hex),
            syn_data: report.outcome,
        });
        rounds.push(FleetRound { cookie, data_accepted: seen.outcome.tfo_used(), cookie_after });
    }
    let origins = CookieOrigins { keys: &probe.keys, client, candidates: &candidates };
    let diagnosis = diagnose_fleet(&rounds, (!probe.keys.is_empty()).then_some(&origins));
    Ok(report(probe.addr, client, &diagnosis, per_round))
}

fn report(server: SocketAddr, client: IpAddr, d: &FleetDiagnosis, per_round: Vec<RoundReport>) -> FleetReport {
    FleetReport {
        server,
        client,
        rounds: d.rounds,
        distinct_cookies: d.cookies.len(),
        accepted: d.accepted,
        accepted_fraction: if d.rounds == 0 { 0.0 } else { d.accepted as f64 / d.rounds as f64 },
        verdict: d.verdict,
        explanation: d.verdict.explain(),
        cookies: d
            .cookies
            .iter()
            .map(|c| CookieReport {
                cookie: hex(&c.cookie),
                rounds: c.rounds,
                made_for: c.made_for,
                made_with: c.made_with.map(|k| if k == 0 { "primary" } else { "backup" }),
            })
            .collect(),
        per_round,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_address_of_loopback_is_loopback() {
        let ip = source_address("127.0.0.1:9".parse().unwrap()).unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }
}
