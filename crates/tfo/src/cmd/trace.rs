//! `tfo trace`: TFO on the wire, from a live capture or a capture file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use fastopen_lab::parse::parse_duration;
use fastopen_wire::capture::{CaptureReader, CaptureWriter};
use fastopen_wire::timeline::{Connection, Dir, TfoSeen, Tracker};
use fastopen_wire::{FastOpenForm, LinkType, TcpPacket, WireError};
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
///   sudo tfo trace --netns tfokit-1234-0-client -i tfo0 --duration 10s
///   tfo trace --read curl_tfo.pcapng --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Capture files to read (pcap or pcapng); repeat for several capture points.
    #[arg(long, short, value_name = "FILE")]
    read: Vec<PathBuf>,
    /// Interface to capture on live (through tcpdump).
    #[arg(long, short, value_name = "IFACE", conflicts_with = "read")]
    interface: Option<String>,
    /// Capture inside this network namespace (`ip netns` name, e.g. a lab's).
    #[arg(long, value_name = "NAME", requires = "interface")]
    netns: Option<String>,
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

fn tfo_json(t: &TfoSeen) -> serde_json::Value {
    let form = match t.form() {
        FastOpenForm::Rfc7413 => "rfc7413",
        FastOpenForm::Experimental => "experimental",
    };
    match t {
        TfoSeen::Request(_) => json!({"kind": "request", "form": form}),
        TfoSeen::Cookie(_, c) => json!({"kind": "cookie", "form": form, "cookie": c.to_string()}),
        TfoSeen::Malformed(_, c) => json!({"kind": "malformed", "form": form, "cookie": c.to_string()}),
    }
}

fn packet_json(frame: u64, point: u8, time: Duration, p: &TcpPacket<'_>) -> serde_json::Value {
    let tfo = TfoSeen::of_packet(p).as_ref().map(tfo_json);
    json!({
        "frame": frame, "point": point, "time_ms": crate::report::ms(time),
        "src": p.src, "sport": p.src_port, "dst": p.dst, "dport": p.dst_port,
        "flags": p.flags.0, "flags_str": p.flags.to_string(), "seq": p.seq, "ack": p.ack,
        "len": p.payload.len(), "tfo": tfo,
    })
}

fn connection_json(c: &Connection) -> serde_json::Value {
    let v = c.verdict();
    let events: Vec<_> = c
        .events
        .iter()
        .map(|e| {
            json!({
                "time_ms": crate::report::ms(e.time), "point": e.point,
                "dir": if e.dir == Dir::ToServer { "to_server" } else { "to_client" },
                "flags_str": e.flags.to_string(), "seq": e.seq, "ack": e.ack, "len": e.len,
                "tfo": e.tfo.as_ref().map(tfo_json), "note": e.note.map(|n| n.to_string()),
            })
        })
        .collect();
    json!({
        "client": c.client, "server": c.server, "verdict": v.as_str(), "explanation": v.to_string(),
        "bytes_in_syn": match v {
            fastopen_wire::timeline::Verdict::TfoUsed { bytes } => bytes, _ => 0
        },
        "cookie_received": c.cookie_received().map(|k| k.to_string()),
        "syn_retransmits": c.syn_retransmits, "reset": c.reset, "packets": c.packets,
        "bytes_to_server": c.bytes_to_server, "bytes_to_client": c.bytes_to_client, "events": events,
    })
}

fn print_connection(c: &Connection) {
    println!("{} -> {}: {}", c.client, c.server, c.verdict());
    println!("  {:>10}  {:<3} {:<8} {:>10} {:>10} {:>6}  TFO option", "time (ms)", "dir", "flags", "seq", "ack", "len");
    for e in &c.events {
        let arrow = if e.dir == Dir::ToServer { ">" } else { "<" };
        let tfo = e.tfo.map(|t| t.to_string()).unwrap_or_default();
        let note = e.note.map(|n| format!("  <- {n}")).unwrap_or_default();
        let point = if e.point > 0 { format!(" @{}", e.point) } else { String::new() };
        println!(
            "  {:>10.3}  {:<3} {:<8} {:>10} {:>10} {:>6}  {tfo}{note}{point}",
            crate::report::ms(e.time),
            arrow,
            e.flags.to_string(),
            e.seq,
            e.ack,
            e.len
        );
    }
    if c.packets > c.events.len() as u64 {
        println!("  ... {} more packets", c.packets - c.events.len() as u64);
    }
    if c.syn_retransmits > 0 {
        println!("  SYN retransmitted {} time(s)", c.syn_retransmits);
    }
    if c.reset {
        println!("  reset (RST seen)");
    }
    println!();
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
    if args.read.is_empty() && args.interface.is_none() {
        anyhow::bail!("nothing to trace: give --read FILE, or -i IFACE for a live capture (e.g. -i lo --port 8000)");
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
        tracker: Tracker::new(),
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
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let reader =
                CaptureReader::new(&bytes).with_context(|| format!("{} is not a capture file", path.display()))?;
            if point == 0 {
                if let Some((w, _)) = pending_writer.take() {
                    let link = reader.pcap_link().unwrap_or(LinkType::Ethernet);
                    trace.writer = Some((CaptureWriter::new(w, link)?, Some(link)));
                }
            }
            for frame in reader {
                match frame {
                    Ok(f) => trace.frame(point.min(3) as u8, f.timestamp, f.link, &f.data)?,
                    Err(e) => {
                        trace.stats.malformed += 1;
                        trace.stats.errors.push(format!("{}: {e} (reading stopped there)", path.display()));
                        break;
                    }
                }
            }
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
            out["connections"] = connections.iter().map(connection_json).collect();
            out["packets"] = serde_json::Value::Array(std::mem::take(&mut trace.packets));
        }
        println!("{out}");
    } else {
        if !args.summary {
            for c in connections {
                print_connection(c);
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
