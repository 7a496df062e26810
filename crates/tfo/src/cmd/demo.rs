//! `tfo demo`: the classic TFO walkthrough, end to end, in one command.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fastopen::{Connector, FastOpenCounters, ListenerBuilder};
use serde_json::json;
use tokio::sync::mpsc;

use crate::cmd::send::exchange;
use crate::echo::{self, ConnectionLog, Protocol};
use crate::exit::CheckFailed;
use crate::report;

/// Run the TFO walkthrough end to end: server, plain request, cookie, data in SYN.
///
/// Inside a private network namespace (its own loopback, its own
/// net.ipv4.tcp_fastopen=3, its own cookie cache and counters; your host's
/// settings are not touched), it starts `tfo serve --http`, then makes:
///   1. a plain TCP request (no TFO),
///   2. a first TFO request: the SYN asks for a cookie, the SYN-ACK brings one,
///   3. a second TFO request: the HTTP request rides in the SYN.
///
/// For each it prints what the client and the server saw, the kernel's
/// TCPFastOpen* counter changes (the independent check), and the time.
///
/// Needs root (to create the namespace). Exit 1 if the third request did not
/// carry its data in the SYN.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// One step of the demo.
struct Step {
    title: &'static str,
    connector: Connector,
}

const REQUEST: &str = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: tfo-demo\r\nAccept: */*\r\n\r\n";

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !fastopen_lab::netns::is_root() {
        anyhow::bail!(
            "tfo demo needs root: it creates a private network namespace so that it can set \
             net.ipv4.tcp_fastopen=3 there without touching this host. Run `sudo tfo demo`."
        );
    }
    // On the main thread, before any other thread exists: everything started
    // from here on lives in the private namespace, which vanishes when we exit.
    fastopen_lab::netns::enter_private(3).context("creating the demo's network namespace")?;
    let addr: SocketAddr = "127.0.0.1:8000".parse()?;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let listener = runtime.block_on(async { ListenerBuilder::new(addr).bind_tokio() })?;
    let (tx, mut server_logs) = mpsc::unbounded_channel::<ConnectionLog>();
    let server =
        runtime.spawn(echo::serve(std::sync::Arc::new(listener), Protocol::Http, Some(3), std::future::pending(), tx));

    let steps = [
        Step { title: "plain TCP (no TFO)", connector: Connector::new().tfo(false) },
        Step { title: "TFO, first connection (asks for a cookie)", connector: Connector::new() },
        Step { title: "TFO, second connection (request in the SYN)", connector: Connector::new() },
    ];
    if !args.json {
        println!("tfo demo: a private network namespace with net.ipv4.tcp_fastopen=3; `tfo serve --http` on {addr}\n");
    }
    let mut results = Vec::new();
    let mut last_used = false;
    for (i, step) in steps.iter().enumerate() {
        let before = FastOpenCounters::read()?;
        let ex = exchange(&step.connector, addr, REQUEST.as_bytes(), Duration::from_secs(10))?;
        let log = server_logs.blocking_recv().context("the demo server stopped")?;
        let delta = &FastOpenCounters::read()? - &before;
        let status = String::from_utf8_lossy(ex.reply.split(|&b| b == b'\r').next().unwrap_or_default()).into_owned();
        last_used = ex.outcome.tfo_used();
        if args.json {
            let mut v = report::outcome_json(&ex.outcome);
            v["step"] = json!(i + 1);
            v["title"] = json!(step.title);
            v["total_ms"] = json!(report::ms(ex.total));
            v["status_line"] = json!(status);
            v["server"] = serde_json::to_value(&log)?;
            v["counters_delta"] = serde_json::to_value(&delta)?;
            results.push(v);
        } else {
            println!("{}. {}", i + 1, step.title);
            println!("   client:   {}", ex.outcome);
            println!("   server:   {}", log.outcome);
            println!("   kernel:   {}", report::counter_delta(&delta));
            println!(
                "   reply:    {status} ({} bytes), connect {:.3} ms, request+reply {:.3} ms\n",
                ex.reply.len(),
                report::ms(ex.outcome.connect_time),
                report::ms(ex.total)
            );
        }
    }
    runtime.block_on(server)??;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"namespace": "private", "server": addr, "steps": results}))?
        );
    } else {
        println!(
            "On loopback a round trip takes microseconds, so the times above are tiny; over a real path, \
             request 3 takes one round trip where request 1 takes two."
        );
    }
    if !last_used {
        return Err(CheckFailed("the second TFO request did not carry its data in the SYN".into()).into());
    }
    Ok(ExitCode::SUCCESS)
}
