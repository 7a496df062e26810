//! `tfo doctor`: this network namespace's TFO state, explained; `--fix` turns it on.

use std::process::ExitCode;

use anyhow::Context;
use fastopen::host::{self, NamespaceKey};
use fastopen::{FastOpenCounters, FastOpenMode, KernelFeatures, MODE_BITS};
use serde::Serialize;

/// Explain this host's TCP Fast Open state, and fix it.
///
/// Reads net.ipv4.tcp_fastopen and explains it bit by bit, says whether
/// client and server TFO will work, whether blackhole detection is on, whether
/// a cookie key is set, what the running kernel supports, and the TcpExt
/// TCPFastOpen* counters.
///
/// All of this is per network namespace: inside a container or `ip netns exec`
/// it is that namespace's state, not the host's.
///
/// --fix adds the client and server bits (value 3 from the default 1) for this
/// boot, and prints the line that makes it permanent. It needs root.
///
/// Exit: 0 client and server TFO are on; 1 one of them is off; 2 error.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Turn client and server TFO on (net.ipv4.tcp_fastopen |= 3); needs root.
    #[arg(long)]
    fix: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    tcp_fastopen: u32,
    bits: Vec<Bit>,
    unknown_bits: u32,
    client_tfo: bool,
    server_tfo: bool,
    blackhole_timeout_sec: Option<u64>,
    key: &'static str,
    counters: FastOpenCounters,
    kernel: KernelFeatures,
    #[serde(skip_serializing_if = "Option::is_none")]
    fixed_from: Option<u32>,
    advice: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Bit {
    value: u32,
    name: &'static str,
    set: bool,
    meaning: &'static str,
}

/// The sysctl.d line that keeps a mode after reboot.
fn permanent_line(mode: FastOpenMode) -> String {
    format!("echo 'net.ipv4.tcp_fastopen = {}' | sudo tee /etc/sysctl.d/60-tcp-fastopen.conf", mode.0)
}

fn examine(fixed_from: Option<u32>) -> anyhow::Result<Report> {
    let mode = host::read_mode().context("reading net.ipv4.tcp_fastopen (is /proc mounted?)")?;
    let blackhole = host::read_blackhole_timeout()?;
    let key = match host::read_key_state()? {
        NamespaceKey::NotReadable => "not_readable",
        NamespaceKey::NotSet => "not_set",
        NamespaceKey::Set { has_backup: false } => "set",
        NamespaceKey::Set { has_backup: true } => "set_with_backup",
        _ => "unknown",
    };
    let counters = FastOpenCounters::read()?;
    let kernel = KernelFeatures::current().clone();
    let mut advice = Vec::new();
    if !mode.client() || !mode.server() {
        advice.push(format!(
            "turn TFO on for this boot: `tfo doctor --fix` (or `sysctl -w net.ipv4.tcp_fastopen={}`); to keep it: {}",
            mode.with_client_and_server().0,
            permanent_line(mode.with_client_and_server())
        ));
    }
    if mode.server_all_listeners() && !mode.server() {
        advice.push("bit 0x400 (all listeners) does nothing without bit 0x2 (server)".into());
    }
    if mode.client_no_cookie() || mode.server_no_cookie() {
        advice.push("a no-cookie bit is set: SYN data is sent or accepted without the cookie check (only safe inside a trusted network)".into());
    }
    if counters.blackhole > 0 {
        advice.push(format!(
            "blackhole detection has disabled client TFO {} time(s) here: something on a path dropped TFO SYNs; writing net.ipv4.tcp_fastopen re-enables it",
            counters.blackhole
        ));
    }
    if counters.active_fail > counters.active && counters.active_fail > 0 {
        advice.push("more failed than successful TFO attempts (TCPFastOpenActiveFail): servers or paths here often reject SYN data".into());
    }
    if counters.listen_overflow > 0 {
        advice.push("TFO queue overflows seen (TCPFastOpenListenOverflow): raise the listener's queue length (tfo serve --queue)".into());
    }
    Ok(Report {
        tcp_fastopen: mode.0,
        bits: MODE_BITS
            .iter()
            .map(|b| Bit { value: b.value, name: b.name, set: mode.0 & b.value != 0, meaning: b.meaning })
            .collect(),
        unknown_bits: mode.unknown_bits(),
        client_tfo: mode.client(),
        server_tfo: mode.server(),
        blackhole_timeout_sec: blackhole,
        key,
        counters,
        kernel,
        fixed_from,
        advice,
    })
}

fn fix() -> anyhow::Result<Option<u32>> {
    let mode = host::read_mode()?;
    let wanted = mode.with_client_and_server();
    if wanted == mode {
        return Ok(None);
    }
    if !fastopen_lab::netns::is_root() {
        anyhow::bail!(
            "--fix needs root to write net.ipv4.tcp_fastopen (now {}); run `sudo tfo doctor --fix` or `sudo sysctl -w net.ipv4.tcp_fastopen={}`",
            mode.0,
            wanted.0
        );
    }
    host::write_mode(wanted).context("writing net.ipv4.tcp_fastopen")?;
    Ok(Some(mode.0))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn print_text(r: &Report) {
    let mode = FastOpenMode(r.tcp_fastopen);
    println!("TCP Fast Open in this network namespace\n");
    if let Some(old) = r.fixed_from {
        println!("fixed: net.ipv4.tcp_fastopen {old} -> {} for this boot", r.tcp_fastopen);
        println!("       to keep it after reboot: {}\n", permanent_line(mode));
    }
    println!("net.ipv4.tcp_fastopen = {mode}");
    for b in &r.bits {
        println!("  [{}] {:#06x} {:<21} {}", if b.set { "x" } else { " " }, b.value, b.name, b.meaning);
    }
    if r.unknown_bits != 0 {
        println!("  [x] {:#06x} (unknown to tfo; current kernels ignore 0x100, 0x800, 0x1000)", r.unknown_bits);
    }
    println!();
    println!(
        "client TFO: {}",
        if r.client_tfo {
            "on   connections from here can carry data in the SYN"
        } else {
            "OFF  MSG_FASTOPEN and TCP_FASTOPEN_CONNECT fail; clients fall back to plain TCP"
        }
    );
    println!(
        "server TFO: {}",
        if r.server_tfo {
            "on   listeners that set TCP_FASTOPEN accept data in the SYN"
        } else {
            "OFF  listeners ignore SYN data and give no cookies"
        }
    );
    match r.blackhole_timeout_sec {
        Some(0) => println!("blackhole detection: off (tcp_fastopen_blackhole_timeout_sec = 0)"),
        Some(s) => println!(
            "blackhole detection: on, {s} s base timeout (client TFO pauses after SYNs with TFO go unanswered)"
        ),
        None => println!("blackhole detection: not in this kernel"),
    }
    println!(
        "cookie key: {}",
        match r.key {
            "not_set" => "none yet (the first TFO listener makes a random one)",
            "set" => "set",
            "set_with_backup" => "set, with a backup key (rotation in progress)",
            "not_readable" => "unknown (only root can read net.ipv4.tcp_fastopen_key)",
            _ => "unknown",
        }
    );
    let k = &r.kernel;
    println!(
        "kernel {}: TCP_FASTOPEN_CONNECT {}, per-listener keys {}, backup key {}, failure reasons {}, TFO-child flag {}",
        k.release,
        yes_no(k.fastopen_connect),
        yes_no(k.per_socket_key),
        yes_no(k.backup_key),
        yes_no(k.client_fail_reason),
        yes_no(k.tfo_child_flag)
    );
    println!("\ncounters (TcpExt, this namespace, since it was created):");
    for (name, value) in r.counters.iter() {
        println!("  {name:<26} {value}");
    }
    println!();
    if r.advice.is_empty() {
        println!("verdict: TFO is on for clients and servers here.");
    } else {
        for a in &r.advice {
            println!("- {a}");
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let fixed_from = if args.fix { fix()? } else { None };
    let report = examine(fixed_from)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if report.client_tfo && report.server_tfo { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
