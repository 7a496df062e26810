//! Client options that `tfo send` and `tfo probe` share.

use std::time::Duration;

use fastopen::ClientMethod;

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

/// `--timeout SECS`: a positive number of seconds (fractions allowed).
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{text:?} is not a positive number of seconds (e.g. 0.5, 10)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("0.5").unwrap(), Duration::from_millis(500));
        for bad in ["0", "-1", "nan", "inf", "soon", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }
}
