//! Client options that `tfo send` and `tfo probe` share.

use std::time::Duration;

use fastopen::ClientMethod;
use fastopen_lab::parse::parse_duration;

/// How to ask the kernel for TFO (`--method`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Method {
    /// `sendto(MSG_FASTOPEN)` with the data.
    Sendto,
    /// `TCP_FASTOPEN_CONNECT`, then connect and write (as curl does).
    Connect,
}

impl From<Method> for ClientMethod {
    fn from(m: Method) -> ClientMethod {
        match m {
            Method::Sendto => ClientMethod::SendTo,
            Method::Connect => ClientMethod::Connect,
        }
    }
}

/// `--timeout`: a duration with its unit (see [`parse_duration`]), from 1 ms to 1 day.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err(format!("{text:?} is too short for a timeout: the least is 1ms"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_timeout("10s").unwrap(), Duration::from_secs(10));
        assert!(parse_timeout("5").unwrap_err().contains("no unit"));
        assert!(parse_timeout("1e-10s").unwrap_err().contains("too short"));
        assert!(parse_timeout("86401s").unwrap_err().contains("longer than 1 day"));
        for bad in ["0", "-1s", "nan", "infs", "soon", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }
}

/// `--early-data`: what a server does with data that came before the
/// handshake was confirmed (in the SYN, or as TLS early data): it may be a
/// replay. The engine's `EarlyData`, as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EarlyDataArg {
    /// Hold unsafe requests until the handshake is confirmed; a replay never
    /// is, and is dropped unhandled.
    Wait,
    /// Refuse unsafe requests that are not confirmed yet (HTTP: 425 Too
    /// Early; raw echo: a reset).
    Reject,
    /// Handle everything at once (unsafe: a replay is handled twice).
    Allow,
}

impl From<EarlyDataArg> for fastopen_tools::echo::EarlyData {
    fn from(arg: EarlyDataArg) -> Self {
        use fastopen_tools::echo::EarlyData;
        match arg {
            EarlyDataArg::Wait => EarlyData::Wait,
            EarlyDataArg::Reject => EarlyData::Reject,
            EarlyDataArg::Allow => EarlyData::Allow,
        }
    }
}

/// The TLS client of `probe` and `load`: trusting `trust`, stopped by
/// Ctrl-C, and saying so when the system's store has no CA certificate
/// (the probe still runs: each certificate check then fails with a reason).
pub(crate) fn tls_client(
    trust: fastopen_tools::tls_client::Trust<'_>,
    alpn_http: bool,
) -> Result<fastopen_tools::tls_client::TlsClient, fastopen_tools::tls_client::TlsClientError> {
    let client = fastopen_tools::tls_client::TlsClient::new(trust, alpn_http)?;
    if client.trusts_nothing() {
        errln!(
            "tfo: no CA certificates found on this system (install ca-certificates), so no certificate will be trusted; give --ca FILE or --insecure"
        );
    }
    Ok(client.cancel_on(Some(crate::interrupt::token())))
}
