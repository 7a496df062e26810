//! `tfo proxy LISTEN UPSTREAM`: a TCP relay with TFO on both legs, for
//! programs a preload cannot reach (static binaries, Go, setuid). The relay
//! itself is `fastopen_tools::proxy`; this module owns the flags, the accept loop with
//! its connection limit, and the log lines.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fastopen::{FailReason, ListenerBuilder};
use serde::Serialize;
use std::io::Write;

use crate::addr;
use crate::client_opts::parse_timeout;
use fastopen_tools::proxy::{relay, RelayConfig, RelayEnd, Relayed};

/// Relay TCP with TCP Fast Open on both legs, for programs tfo wrap cannot reach.
///
/// Listens on LISTEN with TFO and relays each connection to UPSTREAM, which it
/// reaches with TFO too: the client's first bytes (those in its SYN, or those
/// that come within --first-data-wait) ride in the SYN to the upstream. Only
/// bytes the client sent go there: if none come in time, the proxy connects
/// without data, so upstreams that speak first (SMTP, SSH, FTP) work.
///
/// Put it in front of a server that has no TFO (a static Go binary, a setuid
/// program) or behind a client that has none. Half-closes pass through both
/// ways; a connection with no byte either way for --idle-timeout is closed;
/// past --max-connections, new connections wait in the kernel's queue.
///
/// One line per connection at its end, with both legs' outcomes:
///   127.0.0.1:40112 -> 127.0.0.1:8080  client: data in SYN (78 bytes)  upstream: TFO used  up 78 B, down 853 B, 0.4 ms, closed
/// With --json, one JSON object per line ("event":"listening" first).
/// Ctrl-C or SIGTERM stops it (exit 0).
///
/// Examples:
///   tfo proxy 8080 127.0.0.1:8081
///   tfo proxy 0.0.0.0:2525 127.0.0.1:25 --first-data-wait 0ms --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Where to listen: PORT, IP:PORT or [IPv6]:PORT.
    #[arg(value_parser = addr::parse)]
    listen: SocketAddr,
    /// Where to relay to: IP:PORT (or PORT on 127.0.0.1).
    #[arg(value_parser = addr::parse_peer)]
    upstream: SocketAddr,
    /// How long to wait for the client's first bytes before connecting upstream without data.
    #[arg(long, value_name = "DURATION", default_value = "5ms", value_parser = parse_wait)]
    first_data_wait: Duration,
    /// At most this many connections at once; more wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Close a connection after this long without a byte either way.
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_timeout)]
    idle_timeout: Duration,
    /// Give up on the upstream's handshake after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    connect_timeout: Duration,
    /// TFO queue length of the listener.
    #[arg(long, value_name = "N", default_value_t = fastopen::DEFAULT_QUEUE_LEN)]
    queue: u32,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

fn parse_wait(text: &str) -> Result<Duration, String> {
    let d = fastopen_lab::parse::parse_duration(text).map_err(|e| e.to_string())?;
    if d > Duration::from_secs(10) {
        return Err(format!("{text:?} is too long to hold a connection before it reaches the upstream: at most 10s"));
    }
    Ok(d)
}

#[derive(Debug, Serialize)]
struct Listening {
    event: &'static str,
    addr: SocketAddr,
    upstream: SocketAddr,
    tfo_queue: u32,
    server_tfo: bool,
}

/// One relayed connection, as `--json` prints it.
#[derive(Debug, Serialize)]
struct ConnectionLine {
    event: &'static str,
    client: SocketAddr,
    upstream: SocketAddr,
    /// The client's SYN carried data (the client leg used TFO).
    client_tfo_used: bool,
    client_bytes_in_syn: Option<u64>,
    /// The upstream acknowledged the data in our SYN.
    upstream_tfo_used: Option<bool>,
    upstream_fail_reason: Option<FailReason>,
    first_data: usize,
    bytes_to_upstream: u64,
    bytes_to_client: u64,
    duration_ms: f64,
    end: RelayEnd,
}

impl ConnectionLine {
    fn of(r: &Relayed, upstream: SocketAddr) -> ConnectionLine {
        ConnectionLine {
            event: "connection",
            client: r.client,
            upstream,
            client_tfo_used: r.client_leg.data_in_syn,
            client_bytes_in_syn: r.client_leg.bytes_in_syn,
            upstream_tfo_used: r.upstream_leg.as_ref().map(|o| o.tfo_used()),
            upstream_fail_reason: r.upstream_leg.as_ref().and_then(|o| o.fail_reason),
            first_data: r.first_data,
            bytes_to_upstream: r.bytes_to_upstream,
            bytes_to_client: r.bytes_to_client,
            duration_ms: r.duration.as_secs_f64() * 1000.0,
            end: r.end.clone(),
        }
    }

    fn text(&self, r: &Relayed) -> String {
        let upstream = match &r.upstream_leg {
            Some(o) if o.tfo_used() => "TFO used".to_string(),
            Some(o) => format!("no TFO ({})", o.fail_reason.map_or("not_requested", |f| f.as_str())),
            None => "-".to_string(),
        };
        let end = match &self.end {
            RelayEnd::Closed => "closed".to_string(),
            RelayEnd::IdleTimeout => "idle timeout".to_string(),
            RelayEnd::ClientGone => "client left".to_string(),
            RelayEnd::UpstreamFailed(e) => format!("upstream failed: {e}"),
            RelayEnd::Error(e) => format!("error: {e}"),
        };
        format!(
            "{} -> {}  client: {}  upstream: {upstream}  up {} B, down {} B, {:.1} ms, {end}",
            self.client, self.upstream, r.client_leg, self.bytes_to_upstream, self.bytes_to_client, self.duration_ms
        )
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    let listener = ListenerBuilder::new(args.listen)
        .queue_len(args.queue)
        .bind_tokio()
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let mode = fastopen::host::read_mode().ok();
    let server_tfo = mode.is_some_and(|m| m.server());
    let first = if args.json {
        serde_json::to_string(&Listening {
            event: "listening",
            addr: local,
            upstream: args.upstream,
            tfo_queue: args.queue,
            server_tfo,
        })?
    } else {
        let warn = if server_tfo {
            ""
        } else {
            " (net.ipv4.tcp_fastopen lacks the server bit 0x2: clients' SYN data is refused; `tfo doctor --fix`)"
        };
        format!("relaying {local} -> {} with TFO on both legs{warn}; Ctrl-C stops", args.upstream)
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{first}")?;
        out.flush()?;
    }
    let config = Arc::new(RelayConfig {
        upstream: args.upstream,
        first_data_wait: args.first_data_wait,
        idle: args.idle_timeout,
        connect_timeout: args.connect_timeout,
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(args.max_connections as usize));
    // Lines are written by a thread of their own: a slow reader of stdout never
    // stalls a relay. It takes them in batches every 10 ms, so sending a line
    // never has to wake it (a wake-up per connection costs the relay more than the line).
    let (lines, receive) = std::sync::mpsc::channel::<String>();
    let printer = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        loop {
            std::thread::sleep(Duration::from_millis(10));
            let mut gone = false;
            loop {
                match receive.try_recv() {
                    Ok(line) => {
                        if out.write_all(line.as_bytes()).is_err() {
                            return; // stdout is gone (a closed pipe): relaying goes on
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        gone = true;
                        break;
                    }
                }
            }
            if out.flush().is_err() || gone {
                return;
            }
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.context("the connection limit")?,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        let (stream, client, outcome) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or memory: say so, wait a little, go on.
                    errln!("tfo proxy: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        let config = Arc::clone(&config);
        let lines = lines.clone();
        let json = args.json;
        tokio::spawn(async move {
            let relayed = relay(stream, client, outcome, &config).await;
            drop(permit);
            let line = ConnectionLine::of(&relayed, config.upstream);
            let text = if json { serde_json::to_string(&line).unwrap_or_default() } else { line.text(&relayed) };
            let _ = lines.send(format!("{text}\n"));
        });
    }
    drop(lines);
    // Lines of connections still open are not waited for; those sent get 200 ms to be written.
    for _ in 0..20 {
        if printer.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(ExitCode::SUCCESS)
}
