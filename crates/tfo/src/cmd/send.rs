//! `tfo send`: a TFO client that prints the reply and says whether TFO was used.

use std::io::{IsTerminal, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use fastopen::{ClientOutcome, Connector};

use crate::client_opts::{parse_seconds, Method};
use crate::exit::CheckFailed;
use crate::{addr, report};

/// Send data with TCP Fast Open and say whether the data rode in the SYN.
///
/// Connects to ADDR with the data in the SYN when the kernel can (a cookie for
/// that server is cached), closes the sending side, prints the reply, then the
/// outcome: "TFO used: 9 of 9 bytes rode in the SYN", or why not
/// (cookie_unavailable on the first connection to a server, data_not_acked,
/// client_disabled, ...). The first connection to a server asks for a cookie;
/// run it twice to see data in the SYN.
///
/// The reply goes to stdout and the outcome to stderr, so `> file` keeps only
/// the reply. With --json, one JSON object on stdout.
///
/// Exit: 0 the exchange worked; 1 it failed (refused, reset, timeout), or TFO
/// was not used and --strict was given; 2 bad usage.
///
/// Examples:
///   tfo send 8000 --data hello
///   echo hello | tfo send 127.0.0.1:8000 --method connect --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Server address: PORT, IP:PORT or [IPv6]:PORT.
    #[arg(value_parser = addr::parse)]
    addr: SocketAddr,
    /// The data to send.
    #[arg(long, short, conflicts_with = "file")]
    data: Option<String>,
    /// Send the contents of this file.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// How to ask for TFO: sendto (MSG_FASTOPEN) or connect (TCP_FASTOPEN_CONNECT, as curl does).
    #[arg(long, value_enum, default_value_t = Method::Sendto)]
    method: Method,
    /// Plain TCP: connect, then write (to compare).
    #[arg(long)]
    no_tfo: bool,
    /// Fail (exit 1) if TFO was not used; a first-time cookie request is not a failure.
    #[arg(long)]
    strict: bool,
    /// Send SYN data without a cookie (TCP_FASTOPEN_NO_COOKIE; needs a no-cookie server).
    #[arg(long)]
    no_cookie: bool,
    /// Seconds to wait for the handshake and for the reply.
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = parse_seconds)]
    timeout: Duration,
    /// Print one JSON object: tfo_used, bytes_in_syn, fail_reason, connect_ms, total_ms, reply, ...
    #[arg(long)]
    json: bool,
}

/// The result of one exchange.
pub(crate) struct Exchange {
    pub(crate) outcome: ClientOutcome,
    pub(crate) reply: Vec<u8>,
    pub(crate) total: Duration,
}

/// Connects with `connector`, sends `data`, half-closes, reads the reply to EOF.
pub(crate) fn exchange(
    connector: &Connector,
    addr: SocketAddr,
    data: &[u8],
    timeout: Duration,
) -> anyhow::Result<Exchange> {
    let start = Instant::now();
    let (mut stream, outcome): (TcpStream, ClientOutcome) = connector.connect(addr, data)?;
    if let Err(e) = stream.shutdown(Shutdown::Write) {
        // The peer may have reset already; SO_ERROR then holds the real cause.
        let cause = stream.take_error().ok().flatten().unwrap_or(e);
        return Err(anyhow::Error::new(cause).context(format!("sending to {addr}")));
    }
    stream.set_read_timeout(Some(timeout))?;
    let mut reply = Vec::new();
    if let Err(e) = stream.read_to_end(&mut reply) {
        // A read timeout shows up as WouldBlock: say what it means.
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            return Err(CheckFailed(format!(
                "no complete reply from {addr} within {:.1} s ({} bytes received); the server is silent or gone (--timeout sets the wait)",
                timeout.as_secs_f64(),
                reply.len()
            ))
            .into());
        }
        return Err(anyhow::Error::new(e).context(format!("reading the reply from {addr}")));
    }
    Ok(Exchange { outcome, reply, total: start.elapsed() })
}

fn read_data(args: &Args) -> anyhow::Result<Vec<u8>> {
    if let Some(d) = &args.data {
        return Ok(d.clone().into_bytes());
    }
    if let Some(f) = &args.file {
        return std::fs::read(f).with_context(|| format!("reading {}", f.display()));
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        anyhow::bail!("no data to send: give --data TEXT, --file FILE, or pipe it on stdin");
    }
    let mut buf = Vec::new();
    stdin.lock().read_to_end(&mut buf).context("reading stdin")?;
    Ok(buf)
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let data = read_data(&args)?;
    let timeout = args.timeout;
    let connector = Connector::new()
        .method(args.method.into())
        .tfo(!args.no_tfo)
        .strict(args.strict)
        .no_cookie(args.no_cookie)
        .connect_timeout(Some(timeout));
    let ex = exchange(&connector, args.addr, &data, timeout)?;
    if args.json {
        let mut v = report::outcome_json(&ex.outcome);
        v["server"] = serde_json::json!(args.addr);
        v["total_ms"] = serde_json::json!(report::ms(ex.total));
        v["reply_bytes"] = serde_json::json!(ex.reply.len());
        v["reply"] = serde_json::json!(String::from_utf8_lossy(&ex.reply));
        println!("{v}");
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(&ex.reply)?;
        out.flush()?;
        eprintln!("{}", ex.outcome);
        eprintln!(
            "connect {:.3} ms, request+reply {:.3} ms, {} bytes sent, {} bytes received",
            report::ms(ex.outcome.connect_time),
            report::ms(ex.total),
            data.len(),
            ex.reply.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
