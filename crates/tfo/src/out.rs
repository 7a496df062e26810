//! The CLI's one way to print. `outln!` writes a line to stdout and returns
//! an error the caller passes up with `?`: a closed pipe (`tfo ... | head`)
//! ends the command quietly (exit 0), any other failure (`> /dev/full`) is
//! exit 1 with a message. `errln!` writes to stderr and ignores failure
//! (there is nowhere left to report it). `println!` and `eprintln!` panic on
//! such errors: clippy's `print_stdout` and `print_stderr` deny them here.

use std::fmt;
use std::io::{self, Write};

/// Writing to stdout failed.
#[derive(Debug, thiserror::Error)]
#[error("writing to stdout")]
pub(crate) struct StdoutFailed(#[source] pub(crate) io::Error);

/// One line to stdout.
pub(crate) fn line(args: fmt::Arguments<'_>) -> Result<(), StdoutFailed> {
    let mut out = io::stdout().lock();
    out.write_fmt(args).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()).map_err(StdoutFailed)
}

/// Text to stdout, as it is (no newline added).
pub(crate) fn text(text: &str) -> Result<(), StdoutFailed> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(StdoutFailed)
}

/// One line to stderr; a failure is ignored.
pub(crate) fn err_line(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// Text from elsewhere (a process name, a peer's bytes) made safe for a
/// terminal: control characters (newlines, escape sequences) are shown
/// escaped, so nobody can forge lines or colours in the operator's terminal.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect(),
    )
}

/// A user's argument quoted in a message: printable, and at most 80
/// characters (a 1 MB argument is not echoed back whole).
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    let shown: String = text.chars().take(MAX).collect();
    let quoted = format!("{:?}", printable(&shown));
    match text.chars().count() {
        n if n > MAX => format!("{quoted}... ({n} characters)"),
        _ => quoted,
    }
}

/// `println!` that returns its failure: `outln!(...)?`.
macro_rules! outln {
    () => { $crate::out::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::out::line(format_args!($($arg)*)) };
}

/// `eprintln!` that cannot panic.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::err_line(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_arguments_are_cut_in_messages() {
        assert_eq!(super::shorten("a:b"), "\"a:b\"");
        let long = "x".repeat(1 << 20);
        let shown = super::shorten(&long);
        assert!(shown.len() < 120 && shown.ends_with("(1048576 characters)"), "{shown}");
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(super::printable("nginx"), "nginx");
        assert_eq!(super::printable("x\nserver FAKE\u{1b}[31m"), "x\\nserver FAKE\\u{1b}[31m");
    }
}
