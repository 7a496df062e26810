//! `tfo`: the command-line tool. Parses, dispatches, maps errors to exit codes.
//!
//! Exit codes: 0 ok; 1 the thing checked failed (TFO not used with `--strict`,
//! TFO not enabled for `doctor`, a connection that failed); 2 usage or
//! environment error (bad arguments, missing privileges, port in use).
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod out;
mod addr;
mod child;
mod client_opts;
mod cmd;
mod exit;
mod impairments;
mod interrupt;
mod key_opts;
mod keywatch;
mod output_file;
mod plot;
mod preload_reach;
mod report;
mod target;
mod wrap_shim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// TCP Fast Open toolkit: serve and send with TFO, and see whether it was used.
///
/// TFO lets a client put its request in the SYN, so a short exchange takes one
/// round trip instead of two. Start with `tfo demo` (the whole story in one
/// command), `tfo doctor` (is TFO on here?), then `tfo serve` and `tfo send`.
#[derive(Debug, Parser)]
#[command(name = "tfo", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve(cmd::serve::Args),
    Send(cmd::send::Args),
    Doctor(cmd::doctor::Args),
    Trace(cmd::trace::Args),
    Bench(cmd::bench::Args),
    Lab(cmd::lab::Args),
    Demo(cmd::demo::Args),
    Probe(cmd::probe::Args),
    Key(cmd::key::Args),
    Watch(cmd::watch::Args),
    Load(cmd::load::Args),
    Wrap(cmd::wrap::Args),
    Proxy(cmd::proxy::Args),
    Completions(cmd::install::CompletionsArgs),
    Man(cmd::install::ManArgs),
    /// (internal) The guard `tfo lab` starts: cleans up after a lab killed hard.
    #[command(hide = true, name = "lab-guard")]
    LabGuard(cmd::lab::GuardArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Send(args) => cmd::send::run(args),
        Command::Doctor(args) => cmd::doctor::run(args),
        Command::Trace(args) => cmd::trace::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Lab(args) => cmd::lab::run(args),
        Command::Key(args) => cmd::key::run(args),
        Command::Probe(args) => cmd::probe::run(args),
        Command::Watch(args) => cmd::watch::run(args),
        Command::Load(args) => cmd::load::run(args),
        Command::Wrap(args) => cmd::wrap::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
        Command::LabGuard(args) => cmd::lab::guard(args),
        Command::Completions(args) => cmd::install::completions(args, <Cli as clap::CommandFactory>::command()),
        Command::Man(args) => cmd::install::man(args, <Cli as clap::CommandFactory>::command()),
    };
    exit::code(result)
}

/// Prints clap's message (help, version, or a usage error) with every line
/// cut to a readable length: a 1 MB argument is not echoed back whole.
fn usage_error(e: clap::Error) -> ExitCode {
    const MAX_LINE: usize = 300;
    let text = e.render().to_string();
    let lines: Vec<String> = text
        .lines()
        .map(|line| match line.chars().count() {
            n if n > MAX_LINE => format!("{}... ({n} characters)", line.chars().take(MAX_LINE).collect::<String>()),
            _ => line.to_string(),
        })
        .collect();
    let text = lines.join("\n");
    if e.use_stderr() {
        errln!("{text}");
    } else if out::text(&format!("{text}\n")).is_err() {
        return ExitCode::from(1);
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}
