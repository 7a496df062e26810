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
            eprintln!("tfo: error: {err:#}");
            if crate::interrupt::requested() || err.chain().any(|c| c.is::<crate::interrupt::Interrupted>()) {
                ExitCode::from(130)
            } else if err.chain().any(|c| c.is::<CheckFailed>() || is_network_failure(c)) {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// A connection that failed on the network (refused, reset, timed out) is
/// the thing checked failing, not an environment error.
fn is_network_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(e) = err.downcast_ref::<crate::exchange::ExchangeError>() {
        return !matches!(e, crate::exchange::ExchangeError::Cancelled(_));
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
