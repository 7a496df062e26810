//! `tfo send`: a TFO client that prints the reply and says whether TFO was used.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fastopen::Connector;
use serde::Serialize;

use crate::client_opts::{parse_timeout, Method};
use crate::exit::CheckFailed;
use crate::report::OutcomeFields;
use crate::{addr, report};
use fastopen_tools::exchange::{exchange, ExchangeError, Limits, Until};

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
/// the reply. With --json, one JSON object on stdout; the reply is text when
/// it is UTF-8, else base64 ("reply_encoding" says which).
///
/// Limits: the request is at most 64 MiB (a bigger --file or stdin is an
/// error, nothing is sent), the reply at most 64 MiB. The reply is read while
/// the request is sent, and --timeout is a deadline for the whole exchange.
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
    #[arg(value_parser = addr::parse_peer)]
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
    /// Deadline for the whole exchange: connect, send, and the complete reply.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Duration,
    /// Print one JSON object: tfo_used, bytes_in_syn, fail_reason, connect_ms, total_ms, reply, ...
    #[arg(long)]
    json: bool,
    /// For servers that speak first (SMTP, FTP, SSH): read the greeting before
    /// sending anything, then send --data (if given) and read the reply. With a
    /// cookie cached the SYN carries it and no data, and a server with TFO
    /// greets one round trip sooner; the report says after how many round trips
    /// the greeting came, and whether the cookie was sent.
    #[arg(long, conflicts_with_all = ["file", "no_cookie", "method"])]
    read_first: bool,
}

/// `tfo send --read-first --json`. The field names are a contract (README).
#[derive(Debug, Serialize)]
struct ReadFirstReport {
    server: SocketAddr,
    #[serde(flatten)]
    outcome: OutcomeFields,
    /// The cookie rode in the SYN, without data.
    cookie_sent: bool,
    greeting_ms: f64,
    /// The connection's RTT as the kernel measured it.
    rtt_ms: Option<f64>,
    greeting_round_trips: Option<f64>,
    /// The greeting came with the handshake (under 1.5 round trips).
    greeting_with_handshake: Option<bool>,
    greeting: String,
    greeting_encoding: &'static str,
    /// After --data: the reply up to the server's close.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_encoding: Option<&'static str>,
}

/// `--read-first`: the greeting, then --data and its reply.
fn read_first(args: &Args) -> anyhow::Result<ExitCode> {
    let connector = Connector::new().tfo(!args.no_tfo).strict(args.strict);
    let started = std::time::Instant::now();
    let limits = crate::interrupt::limits(args.timeout, Until::FirstByte);
    let g = fastopen_tools::greeting::read_greeting(&connector, args.addr, &limits).map_err(|e| match e {
        fastopen_tools::greeting::GreetingError::Silent { .. } => anyhow::Error::new(CheckFailed(e.to_string())),
        e => anyhow::Error::new(e),
    })?;
    let reply = match &args.data {
        Some(data) => {
            let mut stream = &g.stream;
            stream.write_all(data.as_bytes()).context("sending --data")?;
            g.stream.shutdown(std::net::Shutdown::Write).context("sending --data")?;
            let left = args.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
            g.stream.set_read_timeout(Some(left)).context("setting the reply's deadline")?;
            let mut reply = Vec::new();
            (&g.stream).take(MAX_REPLY as u64).read_to_end(&mut reply).context("reading the reply")?;
            Some(reply)
        }
        None => None,
    };
    let rtt_ms = g.rtt.map(report::ms);
    if args.json {
        let (greeting, greeting_encoding) = reply_text(&g.text);
        let reply = reply.as_deref().map(reply_text);
        let r = ReadFirstReport {
            server: args.addr,
            outcome: OutcomeFields::new(&g.outcome, args.data.as_ref().map_or(0, String::len)),
            cookie_sent: g.outcome.cookie_only_syn,
            greeting_ms: report::ms(g.after),
            rtt_ms,
            greeting_round_trips: g.round_trips().map(|n| (n * 100.0).round() / 100.0),
            greeting_with_handshake: g.with_handshake(),
            greeting,
            greeting_encoding,
            reply_encoding: reply.as_ref().map(|r| r.1),
            reply: reply.map(|r| r.0),
        };
        outln!("{}", serde_json::to_string(&r)?)?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(&g.text)?;
        if let Some(reply) = &reply {
            out.write_all(reply)?;
        }
        out.flush()?;
        errln!("{}", g.outcome);
        let trips = g.round_trips().map_or(String::new(), |n| format!(" = {n:.2} round trips"));
        let rtt = rtt_ms.map_or(String::new(), |r| format!(" (RTT {r:.3} ms)"));
        let came = match g.with_handshake() {
            Some(true) => ": it came with the handshake (the server spoke in SYN_RECV)",
            Some(false) => ": after the handshake",
            None => "",
        };
        errln!("greeting after {:.3} ms{trips}{rtt}{came}", report::ms(g.after));
    }
    Ok(ExitCode::SUCCESS)
}

/// Largest request `tfo send` reads (from --data, --file or stdin).
const MAX_REQUEST: usize = 64 << 20;
/// Largest reply it keeps.
const MAX_REPLY: usize = 64 << 20;

/// `tfo send --json`: one object. The field names are a contract (README).
#[derive(Debug, Serialize)]
struct SendReport {
    server: SocketAddr,
    #[serde(flatten)]
    outcome: OutcomeFields,
    total_ms: f64,
    reply_bytes: usize,
    /// The reply as text when it is UTF-8, else base64 (see `reply_encoding`).
    reply: String,
    /// "utf8" or "base64".
    reply_encoding: &'static str,
}

/// `tfo send --json` when the exchange failed: the error, and what is known.
#[derive(Debug, Serialize)]
struct SendFailure {
    server: SocketAddr,
    error: String,
    /// A stable name: `refused`, `connect_timeout`, `timeout`, `closed_early`, `reset`, ...
    error_kind: &'static str,
    /// The TFO outcome, when the connection was made.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    outcome: Option<OutcomeFields>,
    reply_bytes: usize,
    reply: String,
    reply_encoding: &'static str,
}

/// The reply as JSON text: itself when it is UTF-8, else base64, and which.
pub(crate) fn reply_text(reply: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(reply) {
        Ok(text) => (text.to_string(), "utf8"),
        Err(_) => {
            use base64::Engine;
            (base64::engine::general_purpose::STANDARD.encode(reply), "base64")
        }
    }
}

fn read_data(args: &Args) -> anyhow::Result<Vec<u8>> {
    let too_large =
        |what: &str| anyhow::anyhow!("{what} is larger than {} MiB, the most tfo send sends", MAX_REQUEST >> 20);
    if let Some(d) = &args.data {
        return Ok(d.clone().into_bytes());
    }
    let (reader, what): (Box<dyn Read>, String) = match &args.file {
        Some(f) => (
            Box::new(std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?),
            f.display().to_string(),
        ),
        None => {
            if std::io::stdin().is_terminal() {
                anyhow::bail!("no data to send: give --data TEXT, --file FILE, or pipe it on stdin");
            }
            (Box::new(std::io::stdin()), "stdin".into())
        }
    };
    let mut buf = Vec::new();
    reader.take(MAX_REQUEST as u64 + 1).read_to_end(&mut buf).with_context(|| format!("reading {what}"))?;
    if buf.len() > MAX_REQUEST {
        return Err(too_large(&what));
    }
    Ok(buf)
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.read_first {
        return read_first(&args);
    }
    let data = read_data(&args)?;
    let timeout = args.timeout;
    let connector = Connector::new()
        .method(args.method.into())
        .tfo(!args.no_tfo)
        .strict(args.strict)
        .no_cookie(args.no_cookie)
        .connect_timeout(Some(timeout));
    let limits = Limits { max_reply: MAX_REPLY, ..crate::interrupt::limits(timeout, Until::Eof) };
    let ex = match exchange(&connector, args.addr, &data, Until::Eof, &limits) {
        Ok(ex) => ex,
        Err(e) => {
            if args.json {
                // The object still comes, with the error and what came of the reply.
                let (reply, reply_encoding) = reply_text(e.partial_reply());
                let failed = SendFailure {
                    server: args.addr,
                    error: fastopen_tools::failure::error_chain(&e),
                    error_kind: e.kind(),
                    outcome: e.outcome().map(|o| OutcomeFields::new(o, data.len())),
                    reply_bytes: e.partial_reply().len(),
                    reply,
                    reply_encoding,
                };
                outln!("{}", serde_json::to_string(&failed)?)?;
            }
            return Err(match e {
                ExchangeError::Timeout { .. } => CheckFailed(e.to_string()).into(),
                e => anyhow::Error::new(e),
            });
        }
    };
    if args.json {
        let (reply, reply_encoding) = reply_text(&ex.reply);
        let report = SendReport {
            server: args.addr,
            outcome: OutcomeFields::new(&ex.outcome, data.len()),
            total_ms: report::ms(ex.total),
            reply_bytes: ex.reply.len(),
            reply,
            reply_encoding,
        };
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(&ex.reply)?;
        out.flush()?;
        errln!("{}", ex.outcome);
        errln!(
            "connect {:.3} ms, request+reply {:.3} ms, {} bytes sent, {} bytes received",
            report::ms(ex.outcome.connect_time),
            report::ms(ex.total),
            data.len(),
            ex.reply.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
