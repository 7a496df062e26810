//! `tfo trace`: TFO on the wire, from a live capture or a capture file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use fastopen_lab::parse::parse_duration;
use fastopen_wire::capture::{CaptureReader, CaptureWriter, PcapChunks};
use fastopen_wire::timeline::{TfoSeen, Tracker};
use fastopen_wire::{LinkType, TcpPacket, WireError};
use serde::Serialize;

use crate::report::{ConnectionReport, TfoReport};

use crate::child::KillOnDrop;
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
/// Live capture runs tcpdump ($TFOKIT_TCPDUMP names another one).
///
/// Examples:
///   tfo trace -i lo --port 8000 --count 20 --write tfo.pcap
///   sudo tfo trace --lab client --duration 10s     # the client side of a running `tfo lab`
///   tfo trace --read curl_tfo.pcapng --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Capture files to read (pcap or pcapng; `-` is standard input); repeat
    /// for several capture points along one path (at most 4), merged by time.
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
    /// Only TCP port P (either side), live and in --read files.
    #[arg(long)]
    port: Option<u16>,
    /// Only host H (either side), live and in --read files.
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

/// Decoding statistics. `undecoded` says why frames were not read, by reason.
#[derive(Debug, Default, serde::Serialize)]
struct Stats {
    frames: u64,
    tcp: u64,
    not_tcp: u64,
    malformed: u64,
    unknown_link: u64,
    /// IP fragments (not reassembled: a fragmented SYN's options may be unseen).
    fragments: u64,
    /// TCP segments cut short by the capture's snap length (headers decoded).
    truncated: u64,
    /// Frames --write could not keep (another link type than the output's,
    /// or a time a pcap file cannot hold).
    not_written: u64,
    /// Frames left out by --port / --host.
    filtered: u64,
    /// Connections dropped from memory to bound it (verdicts still counted).
    connections_retired: u64,
    /// Packets past [`MAX_PACKETS_LISTED`], counted but not in `--json`'s list.
    packets_not_listed: u64,
    undecoded: std::collections::BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

/// Packets listed one by one in `--json` (the rest are counted).
const MAX_PACKETS_LISTED: usize = 200_000;

/// Capture points `tfo trace` tells apart (one per --read file).
const MAX_POINTS: usize = 4;

/// A frame's decodable link type, and the number the file gave (None: undeclared interface).
#[derive(Debug, Clone, Copy)]
struct Linked(Option<LinkType>, Option<u32>);

impl Linked {
    fn of(linktype: Option<u32>) -> Linked {
        Linked(linktype.and_then(LinkType::from_pcap), linktype)
    }
}

/// Everything a trace accumulates.
struct Trace {
    tracker: Tracker,
    stats: Stats,
    packets: Vec<PacketReport>,
    keep_packets: bool,
    writer: Option<(CaptureWriter<BufWriter<File>>, Option<LinkType>)>,
    /// The --write file until the first decodable frame says which link type to write.
    pending_output: Option<BufWriter<File>>,
    /// The --write file, put in place when the trace is over (the old one kept until then).
    output: Option<crate::output_file::OutputFile>,
    base: Option<Duration>,
    /// --port and --host.
    port: Option<u16>,
    host: Option<IpAddr>,
}

impl Trace {
    /// A trace as `args` asks (the --write file is created now).
    fn new(args: &Args) -> anyhow::Result<Trace> {
        let mut output = args.write.as_deref().map(crate::output_file::OutputFile::create).transpose()?;
        let pending_output = output.as_mut().map(|o| BufWriter::new(o.take_file()));
        Ok(Trace {
            tracker: if args.summary { Tracker::verdicts_only() } else { Tracker::new() },
            stats: Stats::default(),
            packets: Vec::new(),
            keep_packets: args.json && !args.summary,
            writer: None,
            pending_output,
            output,
            base: None,
            port: args.port,
            host: args.host,
        })
    }

    /// Keeps a frame for --write: the first decodable frame picks the output's link type.
    fn write(&mut self, timestamp: Duration, link: Linked, data: &[u8]) -> anyhow::Result<()> {
        if let Some(first_link) = link.0 {
            if let Some(out) = self.pending_output.take() {
                self.writer = Some((CaptureWriter::new(out, first_link)?, Some(first_link)));
            }
        }
        let writing = self.pending_output.is_some() || self.writer.is_some();
        // A pcap record holds seconds in 32 bits (until 2106).
        let representable = timestamp.as_secs() <= u64::from(u32::MAX);
        match &mut self.writer {
            Some((w, wlink)) if representable && (wlink.is_none() || *wlink == link.0) => w.write(timestamp, data)?,
            _ if writing => self.stats.not_written += 1,
            _ => {}
        }
        Ok(())
    }

    /// Whether a TCP packet passes --port / --host (always, without them).
    fn wanted(&self, p: &TcpPacket<'_>) -> bool {
        self.port.is_none_or(|port| p.src_port == port || p.dst_port == port)
            && self.host.is_none_or(|host| p.src == host || p.dst == host)
    }

    /// Flushes --write (an empty but valid capture when no frame was decodable).
    fn finish_output(&mut self) -> anyhow::Result<()> {
        if let Some(w) = self.pending_output.take() {
            self.writer = Some((CaptureWriter::new(w, LinkType::RawIp)?, None));
        }
        if let Some((w, _)) = self.writer.take() {
            w.into_inner().flush()?;
        }
        if let Some(output) = self.output.take() {
            output.commit()?;
        }
        Ok(())
    }

    /// Decodes one frame; `cut` says the capture kept less than was on the wire.
    fn frame(&mut self, point: u8, timestamp: Duration, link: Linked, data: &[u8], cut: bool) -> anyhow::Result<()> {
        // Parsed once, for the filter and for the tracker.
        let parsed = link.0.map(|l| TcpPacket::parse(l, data));
        if self.port.is_some() || self.host.is_some() {
            // Only TCP packets that match (as the live capture's tcpdump filter does).
            if !parsed.as_ref().and_then(|p| p.as_ref().ok()).is_some_and(|p| self.wanted(p)) {
                self.stats.filtered += 1;
                return Ok(());
            }
        }
        self.stats.frames += 1;
        if point == 0 {
            self.write(timestamp, link, data)?;
        }
        let Some(parsed) = parsed else {
            self.stats.unknown_link += 1;
            let why = match link.1 {
                Some(n) => format!("link type {n} is not one tfo trace decodes"),
                None => "packet on an interface the pcapng file never declared".to_string(),
            };
            *self.stats.undecoded.entry(why).or_insert(0) += 1;
            return Ok(());
        };
        match parsed {
            Ok(p) => {
                self.stats.tcp += 1;
                if p.truncated > 0 {
                    self.stats.truncated += 1;
                }
                self.tracker.push(timestamp, point, &p);
                if self.keep_packets {
                    let base = *self.base.get_or_insert(timestamp);
                    if self.packets.len() < MAX_PACKETS_LISTED {
                        self.packets.push(packet_report(self.stats.frames, point, timestamp.saturating_sub(base), &p));
                    } else {
                        self.stats.packets_not_listed += 1;
                    }
                }
            }
            Err(WireError::NotTcp | WireError::NotIp) => self.stats.not_tcp += 1,
            Err(WireError::Fragment) => {
                self.stats.fragments += 1;
                *self.stats.undecoded.entry("IP fragment (not reassembled)".into()).or_insert(0) += 1;
            }
            Err(e) => {
                self.stats.malformed += 1;
                let why = if cut {
                    "headers cut short by the capture's snap length (capture with -s 96 or more)"
                } else {
                    "malformed headers"
                };
                *self.stats.undecoded.entry(why.into()).or_insert(0) += 1;
                if self.stats.errors.len() < 10 {
                    self.stats.errors.push(format!("frame {}: {e}", self.stats.frames));
                }
            }
        }
        Ok(())
    }
}

/// One packet in `tfo trace --json`.
#[derive(Debug, Serialize)]
struct PacketReport {
    frame: u64,
    point: u8,
    time_ms: f64,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    flags: u8,
    flags_str: String,
    seq: u32,
    ack: u32,
    /// Payload length on the wire (captured or not).
    len: usize,
    tfo: Option<TfoReport>,
}

fn packet_report(frame: u64, point: u8, time: Duration, p: &TcpPacket<'_>) -> PacketReport {
    PacketReport {
        frame,
        point,
        time_ms: crate::report::ms(time),
        src: p.src,
        sport: p.src_port,
        dst: p.dst,
        dport: p.dst_port,
        flags: p.flags.0,
        flags_str: p.flags.to_string(),
        seq: p.seq,
        ack: p.ack,
        len: p.payload_len(),
        tfo: TfoSeen::of_packet(p).as_ref().map(TfoReport::from),
    }
}

/// `tfo trace --json`. The field names are a contract (README).
#[derive(Debug, Serialize)]
struct TraceReport<'a> {
    stats: &'a Stats,
    verdicts: std::collections::BTreeMap<&'static str, u64>,
    connections_total: usize,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<Vec<ConnectionReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    packets: Option<Vec<PacketReport>>,
}

/// A frame read from a capture: when, its link, its bytes, whether the
/// capture cut it short.
type Sink<'s> = dyn FnMut(Duration, Linked, &[u8], bool) -> anyhow::Result<()> + 's;

/// What a capture's reader found wrong (kept in [`Stats`] by the caller).
#[derive(Debug, Default)]
struct ReadProblems {
    malformed: u64,
    errors: Vec<String>,
}

/// The most of a pcapng file read (it is decoded whole in memory), and of all
/// frames held when several --read captures are merged by time.
const CAPTURE_IN_MEMORY_LIMIT: u64 = 1 << 30;

/// Opens a --read input: a file (a FIFO too, deaf to nobody: Ctrl-C ends the
/// wait for its writer), or standard input for `-`.
fn open_input(path: &std::path::Path) -> anyhow::Result<Box<dyn std::io::Read>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(interrupt::CancellableRead::new(std::io::stdin())));
    }
    let file = interrupt::open_for_reading(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(file))
}

/// Reads one capture (pcap in 4 MiB chunks, no copy of the whole file;
/// pcapng whole, up to [`CAPTURE_IN_MEMORY_LIMIT`]), handing each frame to `sink`.
fn read_capture(path: &std::path::Path, sink: &mut Sink<'_>) -> anyhow::Result<ReadProblems> {
    use std::io::Read;
    let mut input = open_input(path)?;
    let reading = || format!("reading {}", path.display());
    let mut buf = vec![0u8; 4 << 20];
    let mut filled = 0;
    while filled < 4 {
        let n = input.read(&mut buf[filled..]).with_context(reading)?;
        anyhow::ensure!(n > 0, "{} is not a capture file (too short)", path.display());
        filled += n;
    }
    if buf[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
        buf.truncate(filled);
        input.take(CAPTURE_IN_MEMORY_LIMIT.saturating_add(1)).read_to_end(&mut buf).with_context(reading)?;
        anyhow::ensure!(
            buf.len() as u64 <= CAPTURE_IN_MEMORY_LIMIT,
            "{} is a pcapng file larger than {} MiB, the most tfo trace reads into memory: convert it to pcap (editcap -F pcap), which is read in chunks",
            path.display(),
            CAPTURE_IN_MEMORY_LIMIT >> 20
        );
        read_pcapng(path, &buf, sink)
    } else {
        read_pcap_chunks(path, input, buf, filled, sink)
    }
}

fn not_capture(path: &std::path::Path) -> String {
    format!("{} is not a capture file (pcap or pcapng)", path.display())
}

/// A pcapng file, whole in memory.
fn read_pcapng(path: &std::path::Path, bytes: &[u8], sink: &mut Sink<'_>) -> anyhow::Result<ReadProblems> {
    let reader = CaptureReader::new(bytes).with_context(|| not_capture(path))?;
    let mut problems = ReadProblems::default();
    for frame in reader {
        match frame {
            Ok(f) => sink(f.timestamp, Linked::of(f.linktype), &f.data, f.orig_len as usize > f.data.len())?,
            Err(e) => {
                problems.malformed += 1;
                problems.errors.push(format!("{}: {e} (reading stopped there)", path.display()));
                break;
            }
        }
    }
    Ok(problems)
}

/// A pcap stream in 4 MiB chunks (no copy of the whole file); `buf` holds its
/// first `filled` bytes. A record is at most 256 KiB (the wire crate refuses
/// larger ones), so the buffer never grows.
fn read_pcap_chunks(
    path: &std::path::Path,
    mut input: Box<dyn std::io::Read>,
    mut buf: Vec<u8>,
    mut filled: usize,
    sink: &mut Sink<'_>,
) -> anyhow::Result<ReadProblems> {
    let mut chunks = PcapChunks::new();
    let mut problems = ReadProblems::default();
    loop {
        let mut result = Ok(());
        let fed = chunks.feed(&buf[..filled], |f| {
            if result.is_ok() {
                result = sink(f.timestamp, Linked::of(f.linktype), &f.data, f.orig_len as usize > f.data.len());
            }
        });
        result?;
        let used = match fed {
            Ok(used) => used,
            Err(e) if chunks.has_header() => {
                problems.malformed += 1;
                problems.errors.push(format!("{}: {e} (reading stopped there)", path.display()));
                return Ok(problems);
            }
            Err(e) => return Err(anyhow::Error::new(e).context(not_capture(path))),
        };
        buf.copy_within(used..filled, 0);
        filled -= used;
        let n = input.read(&mut buf[filled..]).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            if !chunks.has_header() {
                anyhow::bail!(not_capture(path));
            }
            if filled > 0 {
                problems.malformed += 1;
                problems.errors.push(format!("{}: the last {filled} bytes are a cut-off record", path.display()));
            }
            return Ok(problems);
        }
        filled += n;
    }
}

/// Reads every --read capture. One is decoded as it is read; several are
/// capture points along one path, merged by time (a packet seen at the
/// sender before the receiver, whatever the file order), within
/// [`CAPTURE_IN_MEMORY_LIMIT`] of frames held.
fn read_all(paths: &[PathBuf], trace: &mut Trace) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    if let [path] = paths {
        problems.push(read_capture(path, &mut |t, link, data, cut| trace.frame(0, t, link, data, cut))?);
    } else {
        struct Held {
            time: Duration,
            point: u8,
            link: Linked,
            cut: bool,
            data: Vec<u8>,
        }
        let mut held: Vec<Held> = Vec::new();
        let mut bytes = 0u64;
        for (point, path) in paths.iter().enumerate() {
            let point = point as u8;
            problems.push(read_capture(path, &mut |time, link, data, cut| {
                bytes = bytes.saturating_add(data.len() as u64 + 64);
                anyhow::ensure!(
                    bytes <= CAPTURE_IN_MEMORY_LIMIT,
                    "merging {} captures by time holds them in memory, and they exceed {} MiB: trace each one alone, or cut them (editcap -c)",
                    paths.len(),
                    CAPTURE_IN_MEMORY_LIMIT >> 20
                );
                held.push(Held { time, point, link, cut, data: data.to_vec() });
                Ok(())
            })?);
        }
        // Stable: frames with one timestamp keep their file's order, and the
        // earlier capture point comes first.
        held.sort_by_key(|h| (h.time, h.point));
        for h in held {
            trace.frame(h.point, h.time, h.link, &h.data, h.cut)?;
        }
    }
    for p in problems {
        trace.stats.malformed += p.malformed;
        trace.stats.errors.extend(p.errors);
    }
    Ok(())
}

/// Says on stderr, loudly, what could not be decoded and why.
fn warn_undecoded(s: &Stats) {
    for (why, n) in &s.undecoded {
        errln!("tfo trace: warning: {n} frame(s) not decoded: {why}");
    }
    if s.truncated > 0 {
        errln!(
            "tfo trace: note: {} segment(s) cut short by the capture's snap length; headers decoded, payload lengths taken from the IP header",
            s.truncated
        );
    }
    if s.not_written > 0 {
        errln!("tfo trace: warning: {} frame(s) of another link type were not written to --write", s.not_written);
    }
    for e in &s.errors {
        errln!("tfo trace: warning: {e}");
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

/// The tcpdump to run: $TFOKIT_TCPDUMP, or `tcpdump` from PATH.
fn tcpdump_program() -> String {
    std::env::var("TFOKIT_TCPDUMP").unwrap_or_else(|_| "tcpdump".into())
}

/// Whether `program` (a path, or a name on PATH or in /usr/sbin or /sbin) exists.
fn installed(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]).any(|dir| dir.join(program).is_file())
}

fn live(args: &Args, iface: &str, trace: &mut Trace) -> anyhow::Result<()> {
    let tcpdump = tcpdump_program();
    if !installed(&tcpdump) {
        anyhow::bail!(
            "live capture runs {tcpdump}, which is not installed: apt-get install tcpdump (or read a file with --read)"
        );
    }
    let mut cmd = match &args.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, &tcpdump]);
            c
        }
        None => Command::new(&tcpdump),
    };
    cmd.args(["-i", iface, "--immediate-mode", "-U", "-s", "262144", "-w", "-"]);
    if let Some(n) = args.count {
        cmd.args(["-c", &n.to_string()]);
    }
    cmd.arg(tcpdump_filter(args)).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().context(
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
    let link = Linked::of(Some(u32::from(reader.header().datalink)));
    errln!("capturing on {iface} ({}); Ctrl-C stops", tcpdump_filter(args));
    // Stop tcpdump (which flushes and closes the stream) at the deadline or on Ctrl-C.
    let deadline = args.duration.map(|d| Instant::now() + d);
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    // The watcher is stopped and joined before `child` is dropped (and
    // reaped), on every return: it can never signal a recycled pid.
    let watcher = StopWatcher::spawn(move |done| {
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            if interrupt::requested() || deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    while let Some(packet) = reader.next_packet() {
        match packet {
            Ok(p) => trace.frame(0, p.timestamp, link, &p.data, p.orig_len as usize > p.data.len())?,
            Err(e) => {
                errln!("tfo trace: reading tcpdump's stream: {e}");
                break;
            }
        }
    }
    drop(watcher);
    Ok(())
}

/// A thread told to stop, and joined, when this is dropped.
struct StopWatcher {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StopWatcher {
    fn spawn(body: impl FnOnce(&std::sync::atomic::AtomicBool) + Send + 'static) -> StopWatcher {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        StopWatcher { done, thread: Some(std::thread::spawn(move || body(&flag))) }
    }
}

impl Drop for StopWatcher {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let args = resolve_source(args)?;
    interrupt::install();
    let mut trace = Trace::new(&args)?;
    let started = Instant::now();
    match &args.interface {
        Some(iface) => live(&args, iface, &mut trace)?,
        None => read_all(&args.read, &mut trace)?,
    }
    let elapsed = started.elapsed();
    trace.finish_output()?;
    warn_undecoded(&trace.stats);
    print_report(&args, &mut trace, elapsed)?;
    let s = &trace.stats;
    let code = if s.tcp == 0 && s.malformed + s.unknown_link > 0 {
        errln!("tfo trace: nothing in the capture could be decoded (see the warnings above)");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    };
    // The process ends now: freeing a million-packet trace piece by piece (a
    // tenth of a large trace's time) would only delay the exit.
    std::mem::forget(trace);
    Ok(code)
}

/// Where packets come from: files, or live on an interface (the lab's, or `lo`
/// by default); refuses what cannot work.
fn resolve_source(mut args: Args) -> anyhow::Result<Args> {
    if let Some(side) = args.lab {
        args.netns = Some(lab_namespace(side)?);
        args.interface = Some(fastopen_lab::topology::LINK_DEVICE.to_string());
    }
    if args.read.is_empty() && args.interface.is_none() {
        args.interface = Some("lo".to_string());
    }
    if args.read.len() > MAX_POINTS {
        anyhow::bail!(
            "{} --read files given; tfo trace tells at most {MAX_POINTS} capture points apart",
            args.read.len()
        );
    }
    if let Some(out) = &args.write {
        if let Some(same) = args.read.iter().find(|r| crate::output_file::same_file(r, out)) {
            anyhow::bail!("--write {} would overwrite --read {}: write to another file", out.display(), same.display());
        }
    }
    Ok(args)
}

/// Prints the connections and totals (text or JSON) through a locked stdout:
/// a closed pipe (`| head`) is an error that ends the command quietly, never a panic.
/// Every connection's timeline, in order. A large capture has millions of
/// lines: batches of connections are formatted on every core at once, then
/// written in order (memory: one batch of text per core).
fn print_connections(out: &mut impl Write, connections: &[fastopen_wire::timeline::Connection]) -> std::io::Result<()> {
    const PER_THREAD: usize = 4096;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads == 1 || connections.len() <= PER_THREAD {
        return connections.iter().try_for_each(|c| crate::report::print_connection(out, c));
    }
    for batch in connections.chunks(PER_THREAD * threads) {
        let texts: Vec<std::io::Result<Vec<u8>>> = std::thread::scope(|scope| {
            let jobs: Vec<_> = batch
                .chunks(PER_THREAD)
                .map(|part| {
                    scope.spawn(move || {
                        let mut text = Vec::with_capacity(part.len() * 1024);
                        part.iter().try_for_each(|c| crate::report::print_connection(&mut text, c)).map(|()| text)
                    })
                })
                .collect();
            jobs.into_iter()
                .map(|j| j.join().unwrap_or_else(|_| Err(std::io::Error::other("a formatting thread panicked"))))
                .collect()
        });
        for text in texts {
            out.write_all(&text?)?;
        }
    }
    Ok(())
}

fn print_report(args: &Args, trace: &mut Trace, elapsed: Duration) -> anyhow::Result<()> {
    let verdicts = trace.tracker.verdicts();
    let total = trace.tracker.total_connections();
    trace.stats.connections_retired = trace.tracker.retired();
    let connections = trace.tracker.connections();
    // Buffered: stdout flushes each line, a write(2) per line of a million-packet timeline.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if args.json {
        let report = TraceReport {
            stats: &trace.stats,
            verdicts,
            connections_total: total as usize,
            seconds: elapsed.as_secs_f64(),
            connections: (!args.summary).then(|| connections.iter().map(ConnectionReport::from).collect()),
            packets: (!args.summary).then(|| std::mem::take(&mut trace.packets)),
        };
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        if !args.summary {
            print_connections(&mut out, connections)?;
        }
        let s = &trace.stats;
        writeln!(
            out,
            "{} frames, {} TCP, {} other, {} malformed, {} connections; verdicts: {}",
            s.frames,
            s.tcp,
            s.not_tcp + s.unknown_link,
            s.malformed,
            total,
            verdicts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        )?;
        if s.connections_retired > 0 {
            writeln!(
                out,
                "{} connections retired from memory (more than {} at once): their verdicts are counted above, their timelines not listed",
                s.connections_retired,
                fastopen_wire::timeline::MAX_CONNECTIONS
            )?;
        }
        if s.filtered > 0 {
            writeln!(out, "{} frames left out by --port/--host", s.filtered)?;
        }
        if !args.read.is_empty() {
            let rate = s.frames as f64 / elapsed.as_secs_f64().max(1e-9);
            writeln!(out, "decoded in {:.3} s: {rate:.0} packets/s", elapsed.as_secs_f64())?;
        }
        if let Some(p) = &args.write {
            writeln!(out, "written: {}", p.display())?;
        }
    }
    out.flush()?;
    Ok(())
}
