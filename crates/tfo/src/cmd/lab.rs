//! `tfo lab`: run any program on either side of the emulated path.

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::output_file::OutputFile;
use anyhow::Context;
use fastopen_lab::netns::Netns;
use fastopen_lab::parse::parse_duration;
use fastopen_lab::topology::{CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6};
use fastopen_lab::{Lab, LabConfig};

use crate::child::KillOnDrop;
use crate::impairments::{delay_arg, split_rtt, Impairments, PerDirection};
use crate::interrupt;
use crate::report;
use fastopen_tools::lab_server::ns_counters;

/// Run programs (curl, nginx, your own service) across an emulated path.
///
/// Builds a client and a server network namespace joined by a userspace link
/// with the given round-trip time, loss and middleboxes, with
/// net.ipv4.tcp_fastopen set in both. Then:
///   --server CMD   starts CMD (a shell command) in the server namespace and
///                  waits until something listens there;
///   --client CMD   runs CMD in the client namespace; when the client commands
///                  are done, the lab stops and exits with the last one's status
///                  (128+N if a signal N killed it).
/// Without --client it prints how to enter the namespaces and waits for Ctrl-C.
///
/// Commands see TFOKIT_SERVER_IP / TFOKIT_CLIENT_IP (and _IP6) in their
/// environment. After the run it prints the link's counters and the
/// TCPFastOpen* counter changes of both namespaces.
///
/// Example (the walkthrough's curl, over 100 ms):
///   sudo tfo lab --rtt 100ms \
///     --server 'tfo serve $TFOKIT_SERVER_IP:8000 --http' \
///     --client 'curl -s --tcp-fastopen http://$TFOKIT_SERVER_IP:8000/ -o /dev/null -w "%{time_total}\n"' \
///     --client 'curl -s --tcp-fastopen http://$TFOKIT_SERVER_IP:8000/ -o /dev/null -w "%{time_total}\n"'
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Round-trip time of the path (half of it each way).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    rtt: Duration,
    /// Asymmetric one-way delays instead of --rtt: TO_SERVER/TO_CLIENT, e.g. 30ms/10ms.
    #[arg(long, value_parser = delay_arg, conflicts_with = "rtt")]
    delay: Option<PerDirection<Duration>>,
    /// net.ipv4.tcp_fastopen inside both namespaces.
    #[arg(long, default_value_t = 3)]
    tcp_fastopen: u32,
    /// MTU of the link.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u16).range(1280..))]
    mtu: u16,
    /// TSO/GSO across the link, for bulk transfers: the kernels pass 64 KiB
    /// packets, the link splits them into MTU segments (each delayed, lost
    /// and inspected alone) and coalesces them again. Captures on the lab's
    /// devices then show the large packets.
    #[arg(long)]
    offload: bool,
    /// Busy-poll the link for precise delays (costs a CPU while the lab runs).
    #[arg(long)]
    busy_poll: bool,
    /// A shell command to start in the server namespace (repeatable).
    #[arg(long, value_name = "CMD")]
    server: Vec<String>,
    /// A shell command to run in the client namespace (repeatable, in order).
    #[arg(long, value_name = "CMD")]
    client: Vec<String>,
    /// Save the packets as the endpoints sent them (pcap, raw IP) for Wireshark or `tfo trace`.
    #[arg(long, value_name = "FILE")]
    write: Option<std::path::PathBuf>,
    /// Save the packets as the link delivered them (after middleboxes); with
    /// --write, `tfo trace --read SENT --read DELIVERED` shows what changed on the way.
    #[arg(long, value_name = "FILE")]
    write_delivered: Option<std::path::PathBuf>,
    /// Print a JSON summary at the end.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    path: Impairments,
}

/// `tfo lab --json`. The field names are a contract (README).
#[derive(Debug, serde::Serialize)]
struct LabReport {
    rtt_ms: f64,
    /// The last client command's exit status.
    client_exit: i32,
    link: fastopen_lab::LinkCounters,
    client_counters_delta: fastopen::FastOpenCounters,
    server_counters_delta: fastopen::FastOpenCounters,
}

/// Writes the captured packets of one capture point as a pcap file.
fn write_capture(
    file: std::fs::File,
    packets: &[fastopen_lab::CapturedPacket],
    point: fastopen_lab::CapturePoint,
) -> anyhow::Result<usize> {
    let mut w =
        fastopen_wire::capture::CaptureWriter::new(std::io::BufWriter::new(file), fastopen_wire::LinkType::RawIp)?;
    let mut n = 0;
    // Monotonic time, shifted to the wall clock so that tools show real dates.
    let offset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(packets.last().map_or(Duration::ZERO, |p| p.time));
    for p in packets.iter().filter(|p| p.point == point) {
        w.write(offset + p.time, &p.bytes)?;
        n += 1;
    }
    std::io::Write::flush(&mut w.into_inner())?;
    Ok(n)
}

/// `sh -c CMD` inside `ns`. With `--json` its stdout goes to our stderr, so
/// that our stdout holds only the JSON summary.
/// `sh -c CMD` in `ns`. It dies with tfo lab, even a SIGKILLed one
/// (`setpriv --pdeathsig KILL`, util-linux: the kernel's PR_SET_PDEATHSIG,
/// kept across `ip netns exec` and the shell's exec of a lone command).
fn shell(ns: &Netns, cmd: &str, json: bool) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.args(["--pdeathsig", "KILL", "--", "ip", "netns", "exec", ns.name(), "sh"]);
    if json {
        if let Ok(fd) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() {
            c.stdout(Stdio::from(fd));
        }
    }
    c.args(["-c", cmd])
        .env("TFOKIT_SERVER_IP", SERVER_V4.to_string())
        .env("TFOKIT_CLIENT_IP", CLIENT_V4.to_string())
        .env("TFOKIT_SERVER_IP6", SERVER_V6.to_string())
        .env("TFOKIT_CLIENT_IP6", CLIENT_V6.to_string());
    c
}

/// `tfo lab-guard NS...` (hidden): see [`LabGuard`].
#[derive(Debug, clap::Args)]
pub(crate) struct GuardArgs {
    /// The lab's namespaces.
    namespaces: Vec<String>,
}

pub(crate) fn guard(args: GuardArgs) -> anyhow::Result<ExitCode> {
    fastopen_lab::netns::guard_until_owner_exits(&args.namespaces, std::io::stdin());
    Ok(ExitCode::SUCCESS)
}

/// A process (`tfo lab-guard`) that outlives a lab killed hard (`kill -9`)
/// and then kills what its commands left in its namespaces, grandchildren
/// included, and removes them. It waits on a pipe only the lab holds, in a
/// process group of its own (a terminal's Ctrl-C does not reach it).
struct LabGuard {
    owner: Option<std::process::ChildStdin>,
    child: std::process::Child,
}

impl LabGuard {
    fn start(lab: &Lab) -> anyhow::Result<LabGuard> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().context("finding tfo's own path for the lab's guard")?;
        let mut child = std::process::Command::new(exe)
            .args(["lab-guard", lab.client().name(), lab.server().name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the lab's guard")?;
        Ok(LabGuard { owner: child.stdin.take(), child })
    }
}

/// A lab and its guard, dropped in that order (the lab torn down first).
struct Guarded {
    lab: Lab,
    _guard: LabGuard,
}

impl std::ops::Deref for Guarded {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        // The lab is torn down by now: the guard finds nothing, and ends.
        drop(self.owner.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !fastopen_lab::netns::is_root() {
        anyhow::bail!("tfo lab needs root: it creates network namespaces and TUN devices. Run `sudo tfo lab ...`.");
    }
    let outputs = CaptureFiles::create(&args)?;
    interrupt::install_saying("the lab was torn down");
    let delay = args.delay.unwrap_or_else(|| split_rtt(args.rtt));
    let path = args.path.path(delay, args.busy_poll);
    let rtt = path.rtt();
    let lab = Lab::start(LabConfig { path, tcp_fastopen: args.tcp_fastopen, mtu: args.mtu, offload: args.offload })?;
    let guard = LabGuard::start(&lab)?;
    let lab = Guarded { lab, _guard: guard };
    let before = (ns_counters(lab.client())?, ns_counters(lab.server())?);
    lab.stats().set_capture(outputs.any());
    announce(&lab, &args, delay);
    let servers = start_servers(&lab, &args)?;
    let last_code = run_clients(&lab, &args)?;
    drop(servers);
    if let Some(failure) = lab.link_failure() {
        anyhow::bail!("{failure}; the commands' results above may be meaningless");
    }
    outputs.write(&lab, &args)?;
    let after = (ns_counters(lab.client())?, ns_counters(lab.server())?);
    let report = LabReport {
        rtt_ms: report::ms(rtt),
        client_exit: last_code,
        link: lab.counters(),
        client_counters_delta: &after.0 - &before.0,
        server_counters_delta: &after.1 - &before.1,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        print_summary(&report);
    }
    Ok(if args.client.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(u8::try_from(last_code).unwrap_or(1)) })
}

/// The --write and --write-delivered files, created before the run so that a
/// bad path fails at once, not after it.
struct CaptureFiles {
    sent: Option<OutputFile>,
    delivered: Option<OutputFile>,
}

impl CaptureFiles {
    fn create(args: &Args) -> anyhow::Result<CaptureFiles> {
        if let (Some(a), Some(b)) = (&args.write, &args.write_delivered) {
            if crate::output_file::same_file(a, b) {
                anyhow::bail!("--write and --write-delivered name the same file ({}): give two files", a.display());
            }
        }
        let create = |p: &Option<std::path::PathBuf>| p.as_deref().map(OutputFile::create).transpose();
        Ok(CaptureFiles { sent: create(&args.write)?, delivered: create(&args.write_delivered)? })
    }

    fn any(&self) -> bool {
        self.sent.is_some() || self.delivered.is_some()
    }

    /// Writes what the link captured, each capture point to its file.
    fn write(self, lab: &Lab, args: &Args) -> anyhow::Result<()> {
        if !self.any() {
            return Ok(());
        }
        let packets = lab.stats().take_capture();
        for (file, path, point) in [
            (self.sent, &args.write, fastopen_lab::CapturePoint::Sent),
            (self.delivered, &args.write_delivered, fastopen_lab::CapturePoint::Delivered),
        ] {
            if let (Some(mut file), Some(path)) = (file, path) {
                let n = write_capture(file.take_file(), &packets, point)
                    .with_context(|| format!("writing {}", path.display()))?;
                file.commit()?;
                errln!("wrote {n} packets ({point:?}) to {}", path.display());
                if n as u64 >= fastopen_lab::link::CAPTURE_LIMIT {
                    errln!(
                        "tfo lab: warning: the capture keeps {} packets per capture point; the link carried more ({} not kept in all)",
                        fastopen_lab::link::CAPTURE_LIMIT,
                        lab.stats().snapshot().capture_dropped
                    );
                }
            }
        }
        Ok(())
    }
}

/// "lab up: client ... <-- RTT ... --> server ...".
fn announce(lab: &Lab, args: &Args, delay: PerDirection<Duration>) {
    let rtt = delay.to_server + delay.to_client;
    let path = [
        format!("RTT {} ms ({} + {})", report::ms(rtt), report::ms(delay.to_server), report::ms(delay.to_client)),
        args.path.describe(),
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(", ");
    errln!(
        "lab up: client {CLIENT_V4} / {CLIENT_V6} (netns {})  <-- {path} -->  server {SERVER_V4} / {SERVER_V6} (netns {}); net.ipv4.tcp_fastopen={}",
        lab.client().name(),
        lab.server().name(),
        args.tcp_fastopen,
    );
}

/// Starts the --server commands and waits (10 s at most) until something listens.
fn start_servers(lab: &Lab, args: &Args) -> anyhow::Result<Vec<KillOnDrop>> {
    let mut servers = Vec::new();
    for cmd in &args.server {
        let child = shell(lab.server(), cmd, args.json)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        servers.push(KillOnDrop(child));
    }
    if args.server.is_empty() {
        return Ok(servers);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.server().has_listener() {
        interrupt::check()?;
        if let Some(status) = servers.iter_mut().find_map(|c| c.0.try_wait().ok().flatten()) {
            anyhow::bail!("a server command exited ({status}) before listening");
        }
        anyhow::ensure!(Instant::now() < deadline, "nothing listens in the server namespace after 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(servers)
}

/// Runs the --client commands in order and returns the last one's status
/// (128+N when signal N killed it); without any, waits for Ctrl-C.
fn run_clients(lab: &Lab, args: &Args) -> anyhow::Result<i32> {
    if args.client.is_empty() {
        errln!(
            "enter it: sudo ip netns exec {} sh   (or {}); Ctrl-C tears it down",
            lab.client().name(),
            lab.server().name()
        );
        while !interrupt::requested() {
            if let Some(failure) = lab.link_failure() {
                anyhow::bail!("{failure}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        return Ok(0);
    }
    let mut last_code = 0;
    for cmd in &args.client {
        interrupt::check()?;
        let child = shell(lab.client(), cmd, args.json).spawn().with_context(|| format!("running {cmd:?}"))?;
        // Waited for in slices, so that Ctrl-C, SIGTERM or SIGHUP ends the
        // lab at once (the client is stopped on the way out).
        let mut child = KillOnDrop(child);
        let s = loop {
            if let Some(status) = child.0.try_wait().with_context(|| format!("waiting for {cmd:?}"))? {
                break status;
            }
            interrupt::check()?;
            std::thread::sleep(Duration::from_millis(20));
        };
        last_code = s.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0));
        if !s.success() {
            errln!("client command {cmd:?} exited with {s}");
        }
    }
    Ok(last_code)
}

fn print_summary(r: &LabReport) {
    errln!("client TFO counters: {}", report::counter_delta(&r.client_counters_delta));
    errln!("server TFO counters: {}", report::counter_delta(&r.server_counters_delta));
    let link = &r.link;
    let unsent = match link.unsent_at_stop {
        0 => String::new(),
        n => format!(", {n} still on the link at teardown (delayed, never delivered)"),
    };
    errln!(
        "link: {} packets to the server, {} to the client; lost {}{unsent}, {}",
        link.to_server_packets,
        link.to_client_packets,
        link.lost,
        link.middleboxes.describe()
    );
}
