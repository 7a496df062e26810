//! `tfo trace`: TFO on the wire, from a live capture or a capture file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use fastopen_lab::parse::parse_duration;
use fastopen_wire::capture::{CaptureReader, CaptureWriter, PcapChunks};
use fastopen_wire::timeline::{TfoSeen, Tracker};
use fastopen_wire::{LinkType, TcpPacket, WireError};
use serde_json::json;

use crate::interrupt;

/// See TFO on the wire: cookie requests, cookies, data in the SYN, and its ack.
///
/// Reads packets from capture files (--read, pcap or pcapng, made by tcpdump,
/// tshark, Wireshark or tfo) or captures live (-i, through tcpdump), and prints
/// each connection's handshake timeline: time, direction, flags, relative
/// seq/ack, payload, the TFO option (cookie request, cookie=hex), and whether
/// the SYN-ACK acknowledged the SYN's data; then a verdict per connection
/// ("TFO used: 75 bytes in the SYN, acknowledged", "cookie requested, cookie
/// received", "cookie sent but data not acknowledged", "no TFO", ...).
///
/// Several --read files count as capture points along one path (say, both
/// ends): an option present in the first and missing in a later one is
/// reported as stripped on the way.
///
/// --write saves what was captured as pcap for Wireshark.
///
/// Examples:
///   tfo trace -i lo --port 8000 --count 20 --write tfo.pcap
///   sudo tfo trace --lab client --duration 10s     # the client side of a running `tfo lab`
///   tfo trace --read curl_tfo.pcapng --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Capture files to read (pcap or pcapng); repeat for several capture points.
    /// Without --read, tfo trace captures live.
    #[arg(long, short, value_name = "FILE")]
    read: Vec<PathBuf>,
    /// Interface to capture on live, through tcpdump (default: lo).
    #[arg(long, short, value_name = "IFACE", conflicts_with = "read")]
    interface: Option<String>,
    /// Capture inside this network namespace (`ip netns` name).
    #[arg(long, value_name = "NAME", conflicts_with = "read")]
    netns: Option<String>,
    /// Capture one side of a running lab (`tfo lab` or `tfo bench`): its link device there.
    #[arg(long, value_enum, value_name = "SIDE", conflicts_with_all = ["read", "netns", "interface"])]
    lab: Option<LabSide>,
    /// Only TCP port P (either side).
    #[arg(long)]
    port: Option<u16>,
    /// Only host H (either side).
    #[arg(long)]
    host: Option<IpAddr>,
    /// Stop after N packets (live).
    #[arg(long, short = 'c', value_name = "N")]
    count: Option<u64>,
    /// Stop after this long (live), e.g. 10s.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Save the packets as pcap.
    #[arg(long, short, value_name = "FILE")]
    write: Option<PathBuf>,
    /// JSON: every packet and every connection.
    #[arg(long)]
    json: bool,
    /// Only counts and verdict totals (for large files).
    #[arg(long)]
    summary: bool,
}

/// A side of the lab.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LabSide {
    Client,
    Server,
}

/// The namespace of the running lab's `side`, if exactly one lab runs.
fn lab_namespace(side: LabSide) -> anyhow::Result<String> {
    let suffix = match side {
        LabSide::Client => "client",
        LabSide::Server => "server",
    };
    let mut found = fastopen_lab::netns::running(suffix);
    match found.len() {
        0 => anyhow::bail!("no lab is running; start one with `sudo tfo lab` (it prints its namespaces)"),
        1 => Ok(found.remove(0)),
        _ => anyhow::bail!("several labs are running ({}); pick one with --netns NAME -i tfo0", found.join(", ")),
    }
}

/// Decoding statistics.
#[derive(Debug, Default, serde::Serialize)]
struct Stats {
    frames: u64,
    tcp: u64,
    not_tcp: u64,
    malformed: u64,
    unknown_link: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

/// Everything a trace accumulates.
struct Trace {
    tracker: Tracker,
    stats: Stats,
    packets: Vec<serde_json::Value>,
    keep_packets: bool,
    writer: Option<(CaptureWriter<BufWriter<File>>, Option<LinkType>)>,
    base: Option<Duration>,
}

impl Trace {
    fn frame(&mut self, point: u8, timestamp: Duration, link: Option<LinkType>, data: &[u8]) -> anyhow::Result<()> {
        self.stats.frames += 1;
        if let Some((w, wlink)) = &mut self.writer {
            if *wlink == link || wlink.is_none() {
                w.write(timestamp, data)?;
            }
        }
        let Some(link) = link else {
            self.stats.unknown_link += 1;
            return Ok(());
        };
        match TcpPacket::parse(link, data) {
            Ok(p) => {
                self.stats.tcp += 1;
                self.tracker.push(timestamp, point, &p);
                if self.keep_packets {
                    let base = *self.base.get_or_insert(timestamp);
                    self.packets.push(packet_json(self.stats.frames, point, timestamp.saturating_sub(base), &p));
                }
            }
            Err(WireError::NotTcp | WireError::NotIp) => self.stats.not_tcp += 1,
            Err(e) => {
                self.stats.malformed += 1;
                if self.stats.errors.len() < 10 {
                    self.stats.errors.push(format!("frame {}: {e}", self.stats.frames));
                }
            }
        }
        Ok(())
    }
}

fn packet_json(frame: u64, point: u8, time: Duration, p: &TcpPacket<'_>) -> serde_json::Value {
    let tfo = TfoSeen::of_packet(p).as_ref().map(crate::report::tfo_json);
    json!({
        "frame": frame, "point": point, "time_ms": crate::report::ms(time),
        "src": p.src, "sport": p.src_port, "dst": p.dst, "dport": p.dst_port,
        "flags": p.flags.0, "flags_str": p.flags.to_string(), "seq": p.seq, "ack": p.ack,
        "len": p.payload.len(), "tfo": tfo,
    })
}

/// Reads one capture file: pcap in 4 MiB chunks (no copy of the whole file),
/// pcapng whole.
fn read_file(
    path: &std::path::Path,
    point: u8,
    trace: &mut Trace,
    writer: Option<(BufWriter<File>, PathBuf)>,
) -> anyhow::Result<()> {
    use std::io::Read;
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut filled = 0;
    while filled < 4 {
        let n = file.read(&mut buf[filled..])?;
        anyhow::ensure!(n > 0, "{} is not a capture file (too short)", path.display());
        filled += n;
    }
    let not_capture = || format!("{} is not a capture file (pcap or pcapng)", path.display());
    if buf[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut bytes = buf[..filled].to_vec();
        file.read_to_end(&mut bytes)?;
        let reader = CaptureReader::new(&bytes).with_context(not_capture)?;
        if let Some((w, _)) = writer {
            trace.writer = Some((CaptureWriter::new(w, LinkType::Ethernet)?, Some(LinkType::Ethernet)));
        }
        for frame in reader {
            match frame {
                Ok(f) => trace.frame(point, f.timestamp, f.link, &f.data)?,
                Err(e) => {
                    trace.stats.malformed += 1;
                    trace.stats.errors.push(format!("{}: {e} (reading stopped there)", path.display()));
                    break;
                }
            }
        }
        return Ok(());
    }
    if let Some((w, _)) = writer {
        let link = pcap_file::pcap::PcapParser::new(&buf[..filled])
            .ok()
            .and_then(|(_, p)| LinkType::from_pcap(u32::from(p.header().datalink)))
            .unwrap_or(LinkType::Ethernet);
        trace.writer = Some((CaptureWriter::new(w, link)?, Some(link)));
    }
    let mut chunks = PcapChunks::new();
    loop {
        let mut result = Ok(());
        let used = chunks
            .feed(&buf[..filled], |f| {
                if result.is_ok() {
                    result = trace.frame(point, f.timestamp, f.link, &f.data);
                }
            })
            .with_context(not_capture)?;
        result?;
        buf.copy_within(used..filled, 0);
        filled -= used;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0); // a record larger than the buffer
        }
        let n = file.read(&mut buf[filled..])?;
        if n == 0 {
            if filled > 0 {
                trace.stats.malformed += 1;
                trace.stats.errors.push(format!("{}: the last {filled} bytes are a cut-off record", path.display()));
            }
            return Ok(());
        }
        filled += n;
    }
}

fn tcpdump_filter(args: &Args) -> String {
    let mut parts = vec!["tcp".to_string()];
    if let Some(p) = args.port {
        parts.push(format!("port {p}"));
    }
    if let Some(h) = args.host {
        parts.push(format!("host {h}"));
    }
    parts.join(" and ")
}

struct Tcpdump(Child);

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn live(args: &Args, iface: &str, trace: &mut Trace) -> anyhow::Result<()> {
    let mut cmd = match &args.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "tcpdump"]);
            c
        }
        None => Command::new("tcpdump"),
    };
    cmd.args(["-i", iface, "--immediate-mode", "-U", "-s", "262144", "-w", "-"]);
    if let Some(n) = args.count {
        cmd.args(["-c", &n.to_string()]);
    }
    cmd.arg(tcpdump_filter(args)).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = Tcpdump(cmd.spawn().context(
        "live capture runs tcpdump, which did not start: install it (apt-get install tcpdump), or read a file with --read",
    )?);
    let stdout = child.0.stdout.take().context("tcpdump stdout")?;
    // Keep reading tcpdump's stderr: closing it would kill tcpdump (SIGPIPE).
    let mut stderr = child.0.stderr.take().context("tcpdump stderr")?;
    let stderr_text = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let mut reader = match pcap_file::pcap::PcapReader::new(stdout) {
        Ok(r) => r,
        Err(e) => {
            let _ = child.0.wait();
            let text = stderr_text.join().unwrap_or_default();
            anyhow::bail!("tcpdump gave no capture ({e}): {}", text.trim());
        }
    };
    let link = LinkType::from_pcap(u32::from(reader.header().datalink));
    if let Some((_, wlink)) = &mut trace.writer {
        *wlink = link;
    }
    eprintln!("capturing on {iface} ({}); Ctrl-C stops", tcpdump_filter(args));
    // Stop tcpdump (which flushes and closes the stream) at the deadline or on Ctrl-C.
    let deadline = args.duration.map(|d| Instant::now() + d);
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher_done = done.clone();
    std::thread::spawn(move || {
        while !watcher_done.load(std::sync::atomic::Ordering::Relaxed) {
            if interrupt::requested() || deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    while let Some(packet) = reader.next_packet() {
        match packet {
            Ok(p) => trace.frame(0, p.timestamp, link, &p.data)?,
            Err(e) => {
                eprintln!("tfo trace: reading tcpdump's stream: {e}");
                break;
            }
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut args = args;
    if let Some(side) = args.lab {
        args.netns = Some(lab_namespace(side)?);
        args.interface = Some(fastopen_lab::topology::LINK_DEVICE.to_string());
    }
    if args.read.is_empty() && args.interface.is_none() {
        args.interface = Some("lo".to_string());
    }
    interrupt::install();
    let writer = match &args.write {
        Some(path) => {
            let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
            Some((BufWriter::new(f), path.clone()))
        }
        None => None,
    };
    let mut trace = Trace {
        tracker: if args.summary { Tracker::verdicts_only() } else { Tracker::new() },
        stats: Stats::default(),
        packets: Vec::new(),
        keep_packets: args.json && !args.summary,
        writer: None,
        base: None,
    };
    let started = Instant::now();
    let mut pending_writer = writer;
    if let Some(iface) = &args.interface {
        if let Some((w, _)) = pending_writer.take() {
            // The link type is known once tcpdump answers; start with Ethernet and fix in live().
            trace.writer = Some((CaptureWriter::new(w, LinkType::Ethernet)?, None));
        }
        live(&args, iface, &mut trace)?;
    } else {
        for (point, path) in args.read.iter().enumerate() {
            let point = point.min(3) as u8;
            let first = point == 0;
            read_file(path, point, &mut trace, if first { pending_writer.take() } else { None })?;
        }
    }
    let elapsed = started.elapsed();
    if let Some((w, _)) = trace.writer.take() {
        w.into_inner().flush()?;
    }
    let connections = trace.tracker.connections();
    let mut verdicts = std::collections::BTreeMap::new();
    for c in connections {
        *verdicts.entry(c.verdict().as_str()).or_insert(0u64) += 1;
    }
    if args.json {
        let mut out = json!({
            "stats": trace.stats, "verdicts": verdicts, "connections_total": connections.len(),
            "seconds": elapsed.as_secs_f64(),
        });
        if !args.summary {
            out["connections"] = connections.iter().map(crate::report::connection_json).collect();
            out["packets"] = serde_json::Value::Array(std::mem::take(&mut trace.packets));
        }
        println!("{out}");
    } else {
        if !args.summary {
            for c in connections {
                crate::report::print_connection(c);
            }
        }
        let s = &trace.stats;
        println!(
            "{} frames, {} TCP, {} other, {} malformed, {} connections; verdicts: {}",
            s.frames,
            s.tcp,
            s.not_tcp + s.unknown_link,
            s.malformed,
            connections.len(),
            verdicts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        );
        if !args.read.is_empty() {
            println!(
                "decoded in {:.3} s: {:.0} packets/s",
                elapsed.as_secs_f64(),
                s.frames as f64 / elapsed.as_secs_f64().max(1e-9)
            );
        }
        for e in &s.errors {
            println!("warning: {e}");
        }
        if let Some(p) = &args.write {
            println!("written: {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
