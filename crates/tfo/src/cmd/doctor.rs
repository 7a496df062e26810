//! `tfo doctor`: this network namespace's TFO state, explained; `--fix` turns it on.

use std::process::ExitCode;

use anyhow::Context;
use fastopen::host::{self, Advice, NamespaceKey, Permanence};
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
    key: KeyState,
    /// Whether this is the host's network namespace (null: cannot tell without root).
    initial_namespace: Option<bool>,
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

/// The namespace's key, as `--json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum KeyState {
    NotReadable,
    NotSet,
    Set,
    SetWithBackup,
    Unknown,
}

impl KeyState {
    fn explain(self) -> &'static str {
        match self {
            KeyState::NotSet => "none yet (the first TFO listener makes a random one)",
            KeyState::Set => "set",
            KeyState::SetWithBackup => "set, with a backup key (rotation in progress)",
            KeyState::NotReadable => "unknown (only root can read net.ipv4.tcp_fastopen_key)",
            KeyState::Unknown => "unknown",
        }
    }
}

fn examine(fixed_from: Option<u32>) -> anyhow::Result<Report> {
    let mode = host::read_mode().context("reading net.ipv4.tcp_fastopen (is /proc mounted?)")?;
    let blackhole = host::read_blackhole_timeout()?;
    let key = match host::read_key_state()? {
        NamespaceKey::NotReadable => KeyState::NotReadable,
        NamespaceKey::NotSet => KeyState::NotSet,
        NamespaceKey::Set { has_backup: false } => KeyState::Set,
        NamespaceKey::Set { has_backup: true } => KeyState::SetWithBackup,
        _ => KeyState::Unknown,
    };
    let counters = FastOpenCounters::read()?;
    let kernel = KernelFeatures::current().clone();
    let initial_namespace = host::in_initial_namespace();
    let advice = host::advise(mode, &counters, Permanence::of(initial_namespace)).iter().map(advice_text).collect();
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
        initial_namespace,
        counters,
        kernel,
        fixed_from,
        advice,
    })
}

/// The library's advice, with the commands of this tool where one does it.
fn advice_text(a: &Advice) -> String {
    match a {
        Advice::TurnOn { wanted, permanence } => format!(
            "turn TFO on for this boot: `tfo doctor --fix` (or `sysctl -w net.ipv4.tcp_fastopen={}`); to keep it: {}",
            wanted.0,
            permanence.how_to_keep(*wanted)
        ),
        Advice::ListenOverflow => {
            "TFO queue overflows seen (TCPFastOpenListenOverflow): raise the listener's queue length (tfo serve --queue N, TCP_FASTOPEN in your server)".into()
        }
        other => other.to_string(),
    }
}

fn fix() -> anyhow::Result<Option<u32>> {
    let mode = host::read_mode()?;
    let wanted = mode.with_client_and_server();
    if wanted == mode {
        return Ok(None);
    }
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "--fix needs root to write net.ipv4.tcp_fastopen (now {}); run `sudo tfo doctor --fix` or `sudo sysctl -w net.ipv4.tcp_fastopen={}`",
            mode.sysctl_value(),
            wanted.sysctl_value()
        );
    }
    host::write_mode(wanted)?;
    Ok(Some(mode.0))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn print_text(r: &Report) -> Result<(), crate::out::StdoutFailed> {
    let mode = FastOpenMode(r.tcp_fastopen);
    outln!("TCP Fast Open in this network namespace\n")?;
    if let Some(old) = r.fixed_from {
        outln!(
            "fixed: net.ipv4.tcp_fastopen {} -> {} for this boot",
            FastOpenMode(old).sysctl_value(),
            mode.sysctl_value()
        )?;
        outln!("       to keep it after reboot: {}\n", Permanence::of(r.initial_namespace).how_to_keep(mode))?;
    }
    print_bits(r, mode)?;
    print_switches(r)?;
    outln!("\ncounters (TcpExt, this namespace, since it was created):")?;
    for (name, value) in r.counters.iter() {
        outln!("  {name:<26} {value}")?;
    }
    outln!()?;
    if r.advice.is_empty() {
        outln!("verdict: TFO is on for clients and servers here.")?;
    }
    for a in &r.advice {
        outln!("- {a}")?;
    }
    Ok(())
}

/// The mode, bit by bit.
fn print_bits(r: &Report, mode: FastOpenMode) -> Result<(), crate::out::StdoutFailed> {
    outln!("net.ipv4.tcp_fastopen = {mode}")?;
    for b in &r.bits {
        outln!("  [{}] {:#06x} {:<21} {}", if b.set { "x" } else { " " }, b.value, b.name, b.meaning)?;
    }
    if r.unknown_bits != 0 {
        outln!("  [x] {:#06x} (unknown to tfo; current kernels ignore 0x100, 0x800, 0x1000)", r.unknown_bits)?;
    }
    outln!()?;
    Ok(())
}

/// Client and server TFO, blackhole detection, the key, the kernel.
fn print_switches(r: &Report) -> Result<(), crate::out::StdoutFailed> {
    let (client, server) = (
        "on   connections from here can carry data in the SYN",
        "on   listeners that set TCP_FASTOPEN accept data in the SYN",
    );
    outln!(
        "client TFO: {}",
        if r.client_tfo {
            client
        } else {
            "OFF  MSG_FASTOPEN and TCP_FASTOPEN_CONNECT fail; clients fall back to plain TCP"
        }
    )?;
    outln!("server TFO: {}", if r.server_tfo { server } else { "OFF  listeners ignore SYN data and give no cookies" })?;
    match r.blackhole_timeout_sec {
        Some(0) => outln!("blackhole detection: off (tcp_fastopen_blackhole_timeout_sec = 0)"),
        Some(s) => {
            outln!("blackhole detection: on, {s} s base timeout (client TFO pauses after SYNs with TFO go unanswered)")
        }
        None => outln!("blackhole detection: not in this kernel"),
    }?;
    outln!("cookie key: {}", r.key.explain())?;
    let k = &r.kernel;
    outln!(
        "kernel {}: TCP_FASTOPEN_CONNECT {}, per-listener keys {}, backup key {}, failure reasons {}, TFO-child flag {}",
        k.release,
        yes_no(k.fastopen_connect),
        yes_no(k.per_socket_key),
        yes_no(k.backup_key),
        yes_no(k.client_fail_reason),
        yes_no(k.tfo_child_flag)
    )?;
    Ok(())
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let fixed_from = if args.fix { fix()? } else { None };
    let report = examine(fixed_from)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_text(&report)?;
    }
    Ok(if report.client_tfo && report.server_tfo { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
