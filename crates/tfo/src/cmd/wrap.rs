//! `tfo wrap -- CMD`: runs an unmodified program with TFO through the preload
//! shim (crates/fastopen-preload, embedded: see `wrap_shim`), collects the
//! shim's records (one per connection) into `--report` JSON lines and a
//! summary, and exits as the program did.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use fastopen::sock_diag::Role;
use fastopen::wrap::{PortSet, Record, RecordFlags, RecordKind, WrapConfig, WrapSummary, CONFIG_ENV, RECORD_LEN};
use fastopen::FailReason;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use serde::Serialize;

use crate::{preload_reach, wrap_shim};

/// Run a program with TCP Fast Open, without changing it.
///
/// Loads a small library into CMD (LD_PRELOAD) that gives its TCP sockets TFO:
///   - connect() asks for TFO (TCP_FASTOPEN_CONNECT): with a cookie cached, the
///     program's first write rides in the SYN; the first connection to a server
///     asks for the cookie.
///   - listen() gets TCP_FASTOPEN with --queue.
///   - A program that reads before it writes (SMTP, SSH, FTP, IMAP, MySQL
///     clients) never hangs: its first read or wait for input sends the SYN
///     with the cookie and no data, so the server's greeting comes one round
///     trip sooner. getpeername() and a non-blocking connect behave as without
///     the wrap (curl's TFO broke on both). Programs that set TFO themselves
///     are left alone; UNIX and UDP sockets are never touched.
///   - Children (fork, exec) stay wrapped; the program's exit status is passed
///     through (128+N when signal N ended it).
///
/// At exit, one line on stderr: "tfo wrap: 4 connections, 3 with data in the
/// SYN; not: cookie_unavailable 1". --report FILE writes one JSON line per
/// connection at its close (role, local, peer, tfo_used, fail_reason,
/// bytes_in_syn, cookie_only_syn, pid, process, seen).
///
/// Needs glibc and a dynamically linked program: static binaries (Go),
/// programs making raw syscalls, musl programs, and setuid programs run by
/// another user never load the shim (tfo wrap says so); `tfo proxy` serves
/// those. The namespace's net.ipv4.tcp_fastopen must allow it: bit 0x1 for
/// clients (the default), 0x2 for servers (`tfo doctor` tells).
///
/// Exit: the program's status; 2 when tfo wrap cannot run it (no command, a
/// command not found, a bad port list).
///
/// Examples:
///   tfo wrap -- curl http://127.0.0.1:8080/
///   tfo wrap --no-client --report conns.jsonl -- python3 -m http.server 8080
///   tfo wrap --ports 25,587 -- ./smtp-client
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Only these ports (a client's destination port, a listener's own), e.g. 80,443,8000-8100.
    #[arg(long, value_name = "LIST", value_parser = parse_ports)]
    ports: Option<PortSet>,
    /// Never these ports, e.g. 22.
    #[arg(long, value_name = "LIST", value_parser = parse_ports)]
    exclude_ports: Option<PortSet>,
    /// Leave outgoing connections alone (TFO for listeners only).
    #[arg(long)]
    no_client: bool,
    /// Leave listeners alone (TFO for outgoing connections only).
    #[arg(long)]
    no_server: bool,
    /// TFO queue length of wrapped listeners (pending TFO connections; beyond it, plain handshakes).
    #[arg(long, value_name = "N", default_value_t = fastopen::DEFAULT_QUEUE_LEN)]
    queue: u32,
    /// Write one JSON line per connection to FILE, at its close.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// No summary line at exit.
    #[arg(long, conflicts_with = "json")]
    quiet: bool,
    /// The summary at exit as one JSON object (on stderr: stdout is the program's).
    #[arg(long)]
    json: bool,
    /// The program and its arguments (after --).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    command: Vec<OsString>,
}

fn parse_ports(text: &str) -> Result<PortSet, String> {
    PortSet::parse(text).map_err(|e| e.to_string())
}

/// One connection of `--report`. The field names are those of `tfo watch --json`.
#[derive(Debug, Serialize)]
struct ConnectionLine {
    role: Role,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    tfo_used: bool,
    fail_reason: Option<FailReason>,
    bytes_in_syn: Option<u64>,
    cookie_only_syn: bool,
    pid: u32,
    process: String,
    /// `closed` (reported at its close) or `exit` (still open when the process exited).
    seen: &'static str,
}

/// The summary with `--json`.
#[derive(Debug, Serialize)]
struct SummaryReport<'a> {
    #[serde(flatten)]
    summary: &'a WrapSummary,
    exit_status: i32,
    shim_loaded: bool,
}

/// Usage errors of `tfo wrap` (exit 2), said before anything runs.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let program = &args.command[0];
    let Some(path) = preload_reach::find(program) else {
        anyhow::bail!(Usage(format!(
            "cannot run `{}`: no such command (not a file, not in PATH)",
            program.to_string_lossy()
        )));
    };
    let obstacle = preload_reach::obstacle(&path);
    if let Some(why) = &obstacle {
        errln!("tfo wrap: {why}");
    }
    let mode = fastopen::host::read_mode().ok();
    warn_about_the_namespace(&args, mode);
    let shim = wrap_shim::install()?;
    let (reader, writer) = report_pipe()?;
    let config = WrapConfig {
        client: !args.no_client,
        server: !args.no_server,
        queue: args.queue,
        ports: args.ports.clone().unwrap_or_default(),
        exclude: args.exclude_ports.clone().unwrap_or_default(),
        report_fd: Some(writer.as_raw_fd()),
    };
    let report = match &args.report {
        Some(path) => Some(BufWriter::new(crate::output_file::OutputFile::in_place(path)?.take_file())),
        None => None,
    };
    let mut preload = shim.into_os_string();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|p| !p.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    let forwarder = SignalForwarder::start()?;
    let mut child = match Command::new(program)
        .args(&args.command[1..])
        .env("LD_PRELOAD", preload)
        .env(CONFIG_ENV, config.to_env())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => anyhow::bail!(Usage(format!("cannot run `{}`: {e}", program.to_string_lossy()))),
    };
    drop(writer); // the program's copies are the only writers now
    forwarder.forward_to(child.id());
    let done = Arc::new(AtomicBool::new(false));
    let collector = {
        let done = Arc::clone(&done);
        let client_tfo = mode.is_none_or(|m| m.client());
        std::thread::spawn(move || collect(reader, report, &done, client_tfo))
    };
    let status = child.wait().context("waiting for the program")?;
    done.store(true, Ordering::Release);
    drop(forwarder);
    let (summary, report_error) = collector.join().map_err(|_| anyhow::anyhow!("the report collector panicked"))?;
    let exit_status = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let shim_loaded = summary.processes > 0;
    if args.json {
        let line = serde_json::to_string(&SummaryReport { summary: &summary, exit_status, shim_loaded })?;
        errln!("{line}");
    } else if !args.quiet {
        errln!("tfo wrap: {summary}");
        warn_about_servers(&args, mode, &summary);
        if !shim_loaded && obstacle.is_none() {
            errln!(
                "tfo wrap: the shim did not load in `{}` (static, setuid, not glibc, or LD_PRELOAD removed from its environment): it ran without TFO; tfo proxy can serve it instead",
                program.to_string_lossy()
            );
        }
    }
    if let Some(e) = report_error {
        errln!("tfo wrap: the report could not be written: {e:#}");
    }
    Ok(ExitCode::from(u8::try_from(exit_status).unwrap_or(1)))
}

/// Says when the namespace's `net.ipv4.tcp_fastopen` keeps a side from using TFO.
fn warn_about_the_namespace(args: &Args, mode: Option<fastopen::FastOpenMode>) {
    let Some(mode) = mode else { return };
    if !args.no_client && !mode.client() {
        errln!("tfo wrap: net.ipv4.tcp_fastopen={} lacks the client bit (0x1): connections will not use TFO (`tfo doctor --fix` turns it on)", mode.sysctl_value());
    }
}

/// Says, at exit, when listeners served connections that could not use TFO
/// because the namespace lacks the server bit.
fn warn_about_servers(args: &Args, mode: Option<fastopen::FastOpenMode>, summary: &WrapSummary) {
    let Some(mode) = mode else { return };
    if !args.no_server && !mode.server() && summary.not.contains_key("regular_handshake") {
        errln!("tfo wrap: net.ipv4.tcp_fastopen={} lacks the server bit (0x2): listeners get TFO but the kernel will not use it (`tfo doctor --fix` turns it on)", mode.sysctl_value());
    }
}

/// The pipe records come through: the read end here, the write end for the
/// program (inherited: not close-on-exec; non-blocking, so a slow reader costs
/// records, counted, never the program's time), as large as the system allows.
fn report_pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating the report pipe")?;
    fcntl(writer.as_fd(), FcntlArg::F_SETFD(FdFlag::empty())).context("letting the program inherit the report pipe")?;
    fcntl(writer.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).context("making the report pipe non-blocking")?;
    let _ = fcntl(writer.as_fd(), FcntlArg::F_SETPIPE_SZ(1 << 20)); // best effort: the default holds 88 records
    Ok((reader, writer))
}

/// Reads records until the program has exited and the pipe is drained; writes
/// `--report` lines (each socket once: a socket closed by two processes after
/// a fork is reported by both, the first is kept); returns the summary.
fn collect(
    reader: OwnedFd,
    mut report: Option<BufWriter<File>>,
    done: &AtomicBool,
    client_tfo: bool,
) -> (WrapSummary, Option<anyhow::Error>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut summary = WrapSummary::default();
    let mut seen = HashSet::new();
    let mut error = None;
    let mut pending = Vec::with_capacity(64 * RECORD_LEN);
    let mut file = File::from(reader);
    let mut buf = vec![0u8; 64 * RECORD_LEN];
    loop {
        let finished = done.load(Ordering::Acquire);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(if finished { 0u16 } else { 100u16 })).unwrap_or(0);
        if ready == 0 {
            if finished {
                break; // the program exited and nothing more is there
            }
            continue;
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break, // every writer is gone
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        if n < buf.len() && !finished {
            // Let records gather in the pipe (it holds over a thousand): one
            // wake-up per batch, not per connection, on the program's CPUs.
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let whole = pending.len() / RECORD_LEN * RECORD_LEN;
        for chunk in pending[..whole].chunks_exact(RECORD_LEN) {
            let Ok(record) = Record::decode(chunk) else { continue };
            summary.lost_records += u64::from(record.head.dropped);
            if record.head.kind == RecordKind::Hello {
                summary.processes += 1;
                continue;
            }
            if record.head.inode != 0 && !seen.insert(record.head.inode) {
                continue;
            }
            let Some(outcome) = record.outcome(client_tfo) else { continue };
            summary.add(&outcome);
            if let (Some(out), None) = (report.as_mut(), error.as_ref()) {
                let line = ConnectionLine {
                    role: outcome.role,
                    local: record.local,
                    peer: record.peer,
                    tfo_used: outcome.tfo_used,
                    fail_reason: outcome.fail_reason,
                    bytes_in_syn: outcome.bytes_in_syn,
                    cookie_only_syn: outcome.cookie_only_syn,
                    pid: record.head.pid,
                    process: record.process(),
                    seen: if record.head.flags.has(RecordFlags::AT_EXIT) { "exit" } else { "closed" },
                };
                let written = serde_json::to_string(&line)
                    .map_err(anyhow::Error::from)
                    .and_then(|l| writeln!(out, "{l}").and_then(|()| out.flush()).map_err(anyhow::Error::from));
                error = written.err();
            }
        }
        pending.drain(..whole);
    }
    (summary, error)
}

/// SIGTERM and SIGHUP sent to `tfo wrap` go on to the program. SIGINT is
/// ignored here: Ctrl-C reaches the program from the terminal, and tfo wrap
/// stays to report how it ended. Stops when dropped.
struct SignalForwarder {
    child: Arc<std::sync::atomic::AtomicI32>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalForwarder {
    /// Catches the signals now (before the program starts).
    fn start() -> anyhow::Result<SignalForwarder> {
        use nix::sys::signal::Signal;
        use tokio::signal::unix::{signal, SignalKind};
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_io().build().context("starting the signal thread")?;
        let (mut term, mut hup, mut int) = runtime
            .block_on(async {
                Ok::<_, std::io::Error>((
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::hangup())?,
                    signal(SignalKind::interrupt())?,
                ))
            })
            .context("catching SIGTERM, SIGHUP and SIGINT")?;
        let child = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let target = Arc::clone(&child);
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                loop {
                    let forward = tokio::select! {
                        _ = term.recv() => Some(Signal::SIGTERM),
                        _ = hup.recv() => Some(Signal::SIGHUP),
                        _ = int.recv() => None,
                        _ = &mut stopped => return,
                    };
                    let pid = target.load(Ordering::Acquire);
                    if let (Some(sig), true) = (forward, pid > 0) {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
                    }
                }
            });
        });
        Ok(SignalForwarder { child, stop: Some(stop), thread: Some(thread) })
    }

    /// The program the signals go to.
    fn forward_to(&self, pid: u32) {
        self.child.store(i32::try_from(pid).unwrap_or(0), Ordering::Release);
    }
}

impl std::fmt::Debug for SignalForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalForwarder")
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn the_command_keeps_its_own_flags() {
        let cli = Cli::try_parse_from(["wrap", "--ports", "80,443", "--", "curl", "-s", "--tcp-nodelay", "http://x/"])
            .unwrap();
        assert_eq!(cli.args.command, ["curl", "-s", "--tcp-nodelay", "http://x/"]);
        assert!(cli.args.ports.unwrap().contains(443));
        assert!(Cli::try_parse_from(["wrap"]).is_err(), "a command is required");
        assert!(Cli::try_parse_from(["wrap", "--ports", "80,x", "--", "true"]).is_err());
    }
}
