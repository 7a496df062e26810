//! Exit codes, and errors that carry one.

use std::fmt;
use std::process::ExitCode;

/// The thing checked failed (exit 1): not a bug, not bad usage; an answer.
#[derive(Debug)]
pub(crate) struct CheckFailed(pub(crate) String);

impl fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckFailed {}

/// Turns a command's result into the process exit code, printing the error.
/// A broken pipe (`tfo ... | head`) is not an error.
pub(crate) fn code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            let broken_pipe = err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            errln!("tfo: error: {err:#}");
            ExitCode::from(status_of(&err, crate::interrupt::requested()))
        }
    }
}

/// The exit status of a failed command: 130 interrupted (Ctrl-C, SIGTERM),
/// 1 the thing checked failed (or a connection did, or stdout), 2 usage or environment.
fn status_of(err: &anyhow::Error, interrupted: bool) -> u8 {
    if interrupted || err.chain().any(|c| c.is::<crate::interrupt::Interrupted>()) {
        130
    } else if err.chain().any(|c| c.is::<CheckFailed>() || c.is::<crate::out::StdoutFailed>() || is_network_failure(c))
    {
        1
    } else {
        2
    }
}

/// A connection that failed on the network (refused, reset, timed out) is
/// the thing checked failing, not an environment error.
fn is_network_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(e) = err.downcast_ref::<fastopen_tools::exchange::ExchangeError>() {
        return !matches!(e, fastopen_tools::exchange::ExchangeError::Cancelled(_));
    }
    match err.downcast_ref::<fastopen::Error>() {
        Some(
            fastopen::Error::Connect { .. } | fastopen::Error::ConnectTimeout { .. } | fastopen::Error::NotUsed(_),
        ) => true,
        _ => err.downcast_ref::<std::io::Error>().is_some_and(|e| {
            use std::io::ErrorKind::*;
            matches!(e.kind(), ConnectionRefused | ConnectionReset | ConnectionAborted | TimedOut | UnexpectedEof)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_status() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let connect = fastopen::Error::Connect { addr: "127.0.0.1:9".parse().unwrap(), source: refused };
        let cases: [(anyhow::Error, bool, u8); 7] = [
            (CheckFailed("TFO not used".into()).into(), false, 1),
            (anyhow::Error::new(connect).context("sending"), false, 1),
            (fastopen::Error::NotUsed(fastopen::FailReason::DataNotAcked).into(), false, 1),
            (std::io::Error::from(std::io::ErrorKind::TimedOut).into(), false, 1),
            (anyhow::anyhow!("bad flag"), false, 2),
            (std::io::Error::from(std::io::ErrorKind::PermissionDenied).into(), false, 2),
            (crate::interrupt::Interrupted.into(), false, 130),
        ];
        for (err, interrupted, want) in cases {
            assert_eq!(status_of(&err, interrupted), want, "{err:#}");
        }
        assert_eq!(status_of(&anyhow::anyhow!("anything"), true), 130, "after Ctrl-C every error is the interruption");
    }

    #[test]
    fn a_broken_pipe_is_success() {
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("printing");
        assert_eq!(format!("{:?}", code(Err(pipe))), format!("{:?}", ExitCode::SUCCESS));
    }
}
