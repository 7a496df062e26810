//! `tfo trace` against real TFO exchanges, checked packet by packet against
//! tshark's decoding of the same capture file.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

/// Captures, with `tfo trace -i lo`, a cookie request, a request in the SYN,
/// and a cookie sent to a listener without TFO (data not acked).
fn capture_three_exchanges(pcap: &std::path::Path) -> serde_json::Value {
    let server = Server::start(&[]);
    let plain = Server::start(&["--queue", "0"]); // a listener without TFO, same address
    let mut trace = Guard(
        tfo()
            .args(["trace", "-i", "lo", "--json", "--write", pcap.to_str().unwrap(), "--host", "127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(trace.0.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("capturing on lo"), "tfo trace did not start capturing: {line}");
    let a = server.addr.to_string();
    run_tfo(&["send", &a, "--data", "first"]);
    run_tfo(&["send", &a, "--data", "in the SYN"]);
    run_tfo(&["send", &plain.addr.to_string(), "--data", "refused data"]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(trace.0.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = std::mem::replace(&mut trace.0, Command::new("true").spawn().unwrap()).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    json(&out)
}

fn tshark_fields(pcap: &std::path::Path) -> Vec<Vec<String>> {
    let out = Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-T", "fields", "-E", "separator=|"])
        .args(["-e", "tcp.flags", "-e", "tcp.len", "-e", "tcp.options.tfo.request", "-e", "tcp.options.tfo.cookie"])
        .output()
        .expect("tshark");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().map(|l| l.split('|').map(str::to_string).collect()).collect()
}

#[test]
fn trace_matches_tshark_packet_by_packet() {
    if !have_tool("trace_tshark", "tshark") || !have_tool("trace_tshark", "tcpdump") {
        return;
    }
    in_netns("trace_tshark", 3, || {
        let dir = std::env::temp_dir().join(format!("tfo-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pcap = dir.join("tfo.pcap");
        let live = capture_three_exchanges(&pcap);
        let verdicts: Vec<&str> =
            live["connections"].as_array().unwrap().iter().map(|c| c["verdict"].as_str().unwrap()).collect();
        assert_eq!(verdicts, ["cookie_received", "tfo_used", "data_not_acked"], "{live}");
        assert_eq!(live["connections"][1]["bytes_in_syn"], 10);
        let cookie = live["connections"][0]["cookie_received"].as_str().unwrap().to_string();
        // The cookie on the wire is SipHash-2-4 of the addresses under this namespace's key.
        let key_text = std::fs::read_to_string(fastopen::host::KEY_PATH).unwrap();
        let (key, _) = fastopen::FastOpenKey::parse_pair(&key_text).unwrap();
        let lo = "127.0.0.1".parse().unwrap();
        let expected: String = key.cookie(lo, lo).unwrap().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(cookie, expected, "cookie on the wire vs SipHash(key, client, server)");

        // Read the written file back, and compare with tshark, packet by packet.
        let ours = json(&run_tfo(&["trace", "--read", pcap.to_str().unwrap(), "--json"]));
        let packets = ours["packets"].as_array().unwrap();
        let theirs = tshark_fields(&pcap);
        assert_eq!(packets.len(), theirs.len(), "packet count");
        assert!(packets.len() >= 20);
        let mut cookies_seen = 0;
        for (p, t) in packets.iter().zip(&theirs) {
            let flags = u8::from_str_radix(t[0].trim_start_matches("0x").trim_start_matches("0"), 16).unwrap_or(0);
            assert_eq!(p["flags"].as_u64().unwrap() as u8, flags, "frame {}: flags", p["frame"]);
            assert_eq!(p["len"].to_string(), t[1], "frame {}: tcp.len", p["frame"]);
            let request = p["tfo"]["kind"] == "request";
            assert_eq!(request, t[2] == "1", "frame {}: cookie request", p["frame"]);
            let ours_cookie = p["tfo"]["cookie"].as_str().unwrap_or("");
            assert_eq!(ours_cookie, t[3].replace(':', ""), "frame {}: cookie", p["frame"]);
            cookies_seen += usize::from(ours_cookie == cookie);
        }
        assert!(cookies_seen >= 3, "the cookie appears in the SYN-ACK and in two SYNs");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn hostile_and_truncated_files_do_not_panic() {
    let dir = std::env::temp_dir().join(format!("tfo-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pcap");
    std::fs::write(&junk, b"definitely not a capture").unwrap();
    let o = run_tfo(&["trace", "--read", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
    // A valid header, then a record that claims 1 GB.
    let mut bad = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 101, 0, 0, 0];
    bad.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0x40]);
    bad.extend_from_slice(&[0x45; 60]);
    let badf = dir.join("bad.pcap");
    std::fs::write(&badf, &bad).unwrap();
    let o = run_tfo(&["trace", "--read", badf.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1), "nothing decodable is a failure: {}", stderr(&o));
    assert!(stderr(&o).contains("1073741824 bytes"), "the record is refused, not buffered: {}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["stats"]["malformed"], 1, "{v}");
    let o = run_tfo(&["trace", "--read", dir.join("missing.pcap").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.pcap"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Captures with tcpdump (ARGS) while a cookie request and a request in the SYN run.
fn tcpdump_capture(pcap: &std::path::Path, args: &[&str]) {
    // Cold: forget cookies of earlier captures in this namespace.
    assert!(Command::new("ip").args(["tcp_metrics", "flush", "all"]).status().unwrap().success());
    let server = Server::start(&[]);
    let mut dump = Guard(
        Command::new("tcpdump")
            .args(args)
            .args([
                "-U",
                "--immediate-mode",
                "-w",
                pcap.to_str().unwrap(),
                "tcp",
                "port",
                &server.addr.port().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(dump.0.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("listening on") {
        let n = err.read_line(&mut said).unwrap();
        assert!(n > 0, "tcpdump did not start: {said}");
    }
    let a = server.addr.to_string();
    assert!(run_tfo(&["send", &a, "--data", "first"]).status.success());
    assert!(run_tfo(&["send", &a, "--data", &"x".repeat(300)]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(200));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(dump.0.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let _ = dump.0.wait();
}

#[test]
fn cooked_captures_and_snap_length_cuts_are_decoded() {
    if !have_tool("trace_cooked", "tcpdump") {
        return;
    }
    in_netns("trace_cooked", 3, || {
        let dir = tempdir("trace-cooked");
        for (name, args, truncated) in [
            ("any-sll2", &["-i", "any"][..], false),
            ("any-sll1", &["-i", "any", "-y", "LINUX_SLL"][..], false),
            ("lo-snap96", &["-i", "lo", "-s", "96"][..], true),
        ] {
            let pcap = dir.join(format!("{name}.pcap"));
            tcpdump_capture(&pcap, args);
            let o = run_tfo(&["trace", "--read", pcap.to_str().unwrap(), "--json"]);
            assert!(o.status.success(), "{name}: {}", stderr(&o));
            let v = json(&o);
            assert_eq!(v["stats"]["unknown_link"], 0, "{name}: {}", v["stats"]);
            assert_eq!(v["stats"]["malformed"], 0, "{name}: {}", v["stats"]);
            let verdicts: Vec<&str> =
                v["connections"].as_array().unwrap().iter().map(|c| c["verdict"].as_str().unwrap()).collect();
            assert_eq!(verdicts, ["cookie_received", "tfo_used"], "{name}");
            assert_eq!(v["connections"][1]["bytes_in_syn"], 300, "{name}: the SYN's length comes from its IP header");
            assert_eq!(v["stats"]["truncated"].as_u64().unwrap() > 0, truncated, "{name}: {}", v["stats"]);
        }
        // Cut inside the TCP options (-s 80 on lo): not decodable, and the reason is named.
        let pcap = dir.join("lo-snap80.pcap");
        tcpdump_capture(&pcap, &["-i", "lo", "-s", "80"]);
        let o = run_tfo(&["trace", "--read", pcap.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("cut short by the capture's snap length"), "{}", stderr(&o));
        let undecoded = json(&o)["stats"]["undecoded"].clone();
        assert!(undecoded.to_string().contains("snap length"), "{undecoded}");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn pcapng_without_if_tsresol_has_microsecond_times() {
    if !have_tool("trace_pcapng_time", "tcpdump") || !have_tool("trace_pcapng_time", "editcap") {
        return;
    }
    in_netns("trace_pcapng_time", 3, || {
        let dir = tempdir("trace-pcapng");
        let pcap = dir.join("lo.pcap");
        tcpdump_capture(&pcap, &["-i", "lo"]);
        let ng = dir.join("lo.pcapng");
        let o = Command::new("editcap")
            .args(["-F", "pcapng", pcap.to_str().unwrap(), ng.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let times = |f: &std::path::Path| -> Vec<f64> {
            let v = json(&run_tfo(&["trace", "--read", f.to_str().unwrap(), "--json"]));
            v["packets"].as_array().unwrap().iter().map(|p| p["time_ms"].as_f64().unwrap()).collect()
        };
        let (a, b) = (times(&pcap), times(&ng));
        assert!(a.len() >= 6 && a.last().unwrap() > &0.0, "{a:?}");
        assert_eq!(a, b, "pcapng times differ from the pcap's");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn files_that_are_not_captures_and_misused_paths_are_usage_errors() {
    let dir = tempdir("trace-misuse");
    let tiny = dir.join("tiny");
    std::fs::write(&tiny, b"hello").unwrap();
    let o = run_tfo(&["trace", "--read", tiny.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a capture file"), "{}", stderr(&o));

    let cap = dir.join("one.pcap");
    let mut w = fastopen_wire::capture::CaptureWriter::new(Vec::new(), fastopen_wire::LinkType::RawIp).unwrap();
    w.write(std::time::Duration::ZERO, &syn_packet(40000)).unwrap();
    std::fs::write(&cap, w.into_inner()).unwrap();
    let before = std::fs::read(&cap).unwrap();
    let o = run_tfo(&["trace", "--read", cap.to_str().unwrap(), "--write", cap.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(std::fs::read(&cap).unwrap(), before, "the capture being read was truncated");
    // A link type tfo trace does not decode is named, not counted silently.
    let mut other = std::fs::read(&cap).unwrap();
    let user0 = if other[0] == 0xa1 { 147u32.to_be_bytes() } else { 147u32.to_le_bytes() }; // by the file's magic
    other[20..24].copy_from_slice(&user0); // LINKTYPE_USER0
    let other_path = dir.join("user0.pcap");
    std::fs::write(&other_path, other).unwrap();
    let o = run_tfo(&["trace", "--read", other_path.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1), "nothing decodable: {}", stderr(&o));
    assert!(stderr(&o).contains("link type 147 is not one tfo trace decodes"), "{}", stderr(&o));
    assert_eq!(json(&o)["stats"]["undecoded"]["link type 147 is not one tfo trace decodes"], 1);
    let c = cap.to_str().unwrap();
    let o = run_tfo(&["trace", "--read", c, "--read", c, "--read", c, "--read", c, "--read", c]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("at most 4 capture points"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

fn syn_packet(port: u16) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64).tcp(port, 80, 1, 1000).syn();
    let mut v = Vec::new();
    b.write(&mut v, b"").unwrap();
    v
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let dir = tempdir("trace-pipe");
    let cap = dir.join("many.pcap");
    let mut w = fastopen_wire::capture::CaptureWriter::new(Vec::new(), fastopen_wire::LinkType::RawIp).unwrap();
    for port in 1000..6000 {
        w.write(std::time::Duration::ZERO, &syn_packet(port)).unwrap();
    }
    std::fs::write(&cap, w.into_inner()).unwrap();
    let mut child = tfo()
        .args(["trace", "--read", cap.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap(); // then the pipe closes
    let o = child.wait_with_output().unwrap();
    assert!(first.contains("->"), "{first}");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pcap of `frames` (time in µs, packet), raw IP.
fn pcap_of(frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut w = fastopen_wire::capture::CaptureWriter::new(Vec::new(), fastopen_wire::LinkType::RawIp).unwrap();
    for (us, p) in frames {
        w.write(std::time::Duration::from_micros(*us), p).unwrap();
    }
    w.into_inner()
}

fn tcp_packet(from_client: bool, flags: &str, seq: u32, ack: u32, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let (src, dst, sp, dp) = if from_client {
        ([198, 18, 0, 1], [198, 18, 0, 2], 40000, 80)
    } else {
        ([198, 18, 0, 2], [198, 18, 0, 1], 80, 40000)
    };
    let mut b = etherparse::PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, seq, 1000);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(ack);
    }
    let b = b.options_raw(options).unwrap();
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

#[test]
fn several_capture_points_are_merged_by_time_not_read_one_after_the_other() {
    let dir = tempdir("trace-merge");
    // A cookie request seen at the sender (point 0) and, later, at the
    // receiver with the option stripped (point 1); the SYN-ACK comes back
    // through both. Read in file order, the receiver's packets would come
    // after the sender's SYN-ACK and look like a replayed connection.
    let request = [34u8, 2, 1, 1]; // TFO option, empty: a cookie request
    let sent = pcap_of(&[
        (1_000, tcp_packet(true, "S", 100, 0, &request, b"")),
        (3_000, tcp_packet(false, "SA", 500, 101, &[], b"")),
        (3_100, tcp_packet(true, "A", 101, 501, &[], b"")),
    ]);
    let delivered = pcap_of(&[
        (2_000, tcp_packet(true, "S", 100, 0, &[1, 1, 1, 1], b"")),
        (2_100, tcp_packet(false, "SA", 500, 101, &[], b"")),
        (3_200, tcp_packet(true, "A", 101, 501, &[], b"")),
    ]);
    let (a, b) = (dir.join("sent.pcap"), dir.join("delivered.pcap"));
    std::fs::write(&a, sent).unwrap();
    std::fs::write(&b, delivered).unwrap();
    let o = run_tfo(&["trace", "-r", a.to_str().unwrap(), "-r", b.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["connections_total"], 1, "one connection seen at two points: {v}");
    assert_eq!(v["verdicts"]["option_stripped"], 1, "{v}");
    assert!(v["verdicts"].get("replayed_syn").is_none(), "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn port_and_host_filter_read_files_and_dash_is_standard_input() {
    let dir = tempdir("trace-filter");
    let mut other = tcp_packet(true, "S", 7, 0, &[], b"");
    other[23] ^= 1; // another destination port: 81 (checksums are not checked)
    let cap = pcap_of(&[(1, tcp_packet(true, "S", 100, 0, &[], b"")), (2, other)]);
    let path = dir.join("two.pcap");
    std::fs::write(&path, &cap).unwrap();
    let p = path.to_str().unwrap();
    let all = json(&run_tfo(&["trace", "-r", p, "--json"]));
    assert_eq!(all["connections_total"], 2, "{all}");
    let one = run_tfo(&["trace", "-r", p, "--json", "--port", "81"]);
    let one = json(&one);
    assert_eq!((one["connections_total"].as_u64(), one["stats"]["filtered"].as_u64()), (Some(1), Some(1)), "{one}");
    let none = json(&run_tfo(&["trace", "-r", p, "--json", "--host", "198.18.0.9"]));
    assert_eq!(none["connections_total"], 0, "{none}");
    // `-r -` reads standard input.
    let mut child =
        tfo().args(["trace", "-r", "-", "--json"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &cap).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(json(&o)["connections_total"], 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn write_keeps_frames_after_an_undecodable_first_one_and_keeps_old_output_on_bad_input() {
    let dir = tempdir("trace-write");
    let keep = dir.join("keep.pcap");
    std::fs::write(&keep, b"precious").unwrap();
    let o = run_tfo(&["trace", "-r", dir.join("nonexistent").to_str().unwrap(), "--write", keep.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&keep).unwrap(), b"precious", "an input that cannot be opened leaves --write alone");
    // A pcapng whose first packet is on a link tfo trace does not decode, then a good one.
    let cap = {
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
        let mut w = pcap_file::pcapng::PcapNgWriter::new(Vec::new()).unwrap();
        for linktype in [pcap_file::DataLink::USER0, pcap_file::DataLink::IPV4] {
            w.write_pcapng_block(InterfaceDescriptionBlock { linktype, snaplen: 0, options: vec![] }).unwrap();
        }
        let syn = tcp_packet(true, "S", 100, 0, &[], b"");
        for interface_id in [0u32, 1] {
            let epb = EnhancedPacketBlock {
                interface_id,
                timestamp: std::time::Duration::from_micros(1),
                original_len: syn.len() as u32,
                data: std::borrow::Cow::Owned(syn.clone()),
                options: vec![],
            };
            w.write_pcapng_block(epb).unwrap();
        }
        w.into_inner()
    };
    let input = dir.join("first-undeclared.pcapng");
    std::fs::write(&input, cap).unwrap();
    let out = dir.join("out.pcap");
    let o = run_tfo(&["trace", "-r", input.to_str().unwrap(), "--write", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let written = std::fs::read(&out).unwrap();
    let frames = fastopen_wire::capture::CaptureReader::new(&written).unwrap().count();
    assert_eq!(frames, 1, "the decodable frame is written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_fifo_without_a_writer_does_not_hold_ctrl_c() {
    let dir = tempdir("trace-fifo");
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut child = Guard(tfo().args(["trace", "-r", fifo.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.0.try_wait().unwrap().is_none(), "waits for a writer");
    let sent = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.0.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = sent + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "SIGINT did not end tfo trace on a FIFO");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A read-first client across the lab: `tfo trace` gives the second
/// connection the verdict `cookie_only_syn` with the greeting before the
/// client's ACK, and tshark sees in the same capture a SYN of length 0 with a
/// TFO cookie, answered by data that arrives within the handshake's round trip.
#[test]
fn a_cookie_only_syn_and_its_greeting_in_syn_recv_match_tshark() {
    if !fastopen_lab::testing::root_or_skip("trace_cookie_only")
        || !fastopen_lab::testing::have_tool("trace_cookie_only", "tshark")
    {
        return;
    }
    let dir = tempdir("trace-cookie-only");
    let pcap = dir.join("sent.pcap");
    let tfo_bin = env!("CARGO_BIN_EXE_tfo");
    let o = run_tfo(&[
        "lab",
        "--rtt",
        "100ms",
        "--write",
        pcap.to_str().unwrap(),
        "--server",
        &format!("{tfo_bin} serve 0.0.0.0:2525 --banner '220 hi'"),
        "--client",
        &format!("{tfo_bin} send --read-first 198.18.0.2:2525 && {tfo_bin} send --read-first 198.18.0.2:2525"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&run_tfo(&["trace", "-r", pcap.to_str().unwrap(), "--json"]));
    assert_eq!(v["verdicts"]["cookie_only_syn"], 1, "{v}");
    let conn = v["connections"].as_array().unwrap().iter().find(|c| c["verdict"] == "cookie_only_syn").unwrap();
    assert!(conn["explanation"].as_str().unwrap().contains("before the client's ACK"), "{conn}");
    // tshark: the SYNs, with their length and TFO option.
    let out = Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-Y", "tcp.flags.syn==1 && tcp.flags.ack==0"])
        .args(["-T", "fields", "-e", "tcp.len", "-e", "tcp.options.tfo.request", "-e", "tcp.options.tfo.cookie"])
        .output()
        .unwrap();
    let rows: Vec<Vec<String>> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').map(str::to_string).collect()).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0][0].as_str(), rows[0][1].as_str()), ("0", "1"), "first SYN: a cookie request: {rows:?}");
    assert_eq!(rows[1][0], "0", "second SYN: no data: {rows:?}");
    assert!(rows[1][2].len() >= 8, "second SYN: a cookie: {rows:?}");
    // tshark's times: the greeting within half a round trip of the SYN-ACK.
    let out = Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-Y", "tcp.stream==1 && (tcp.flags.syn==1 || tcp.len>0)"])
        .args([
            "-T",
            "fields",
            "-e",
            "frame.time_relative",
            "-e",
            "tcp.flags.syn",
            "-e",
            "tcp.flags.ack",
            "-e",
            "tcp.len",
        ])
        .output()
        .unwrap();
    let times: Vec<(f64, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].parse().unwrap(), format!("{}{}{}", f[1], f[2], if f[3] == "0" { "" } else { "+data" }))
        })
        .collect();
    let at = |what: &str| {
        times.iter().find(|(_, k)| k == what).map(|(t, _)| *t).unwrap_or_else(|| panic!("{what}: {times:?}"))
    };
    let (syn, synack, data) = (at("10"), at("11"), at("01+data"));
    assert!(data - synack < (synack - syn) / 2.0, "greeting {data} vs SYN-ACK {synack} (SYN {syn}): {times:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
