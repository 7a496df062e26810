//! What hostile use and a code review found (issue 9): each test fails
//! without its fix. Through the real binary, in private namespaces.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

const KEY: &str = "00112233445566778899aabbccddeeff";

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_rotate_refuses_any_pid_but_its_own_server_and_then_changes_nothing() {
    in_netns("hardening_rotate_pid", 3, || {
        let dir = tempdir("rotate-pid");
        let key_file = dir.join("server.key");
        write_key(&key_file, KEY);
        let kf = key_file.to_str().unwrap();
        for pid in ["--pid=-1", "--pid=0"] {
            let o = run_tfo(&["key", "rotate", "--key-file", kf, pid]);
            assert_eq!(o.status.code(), Some(2), "{pid}: {}", stderr(&o));
        }
        // A live process that is not a tfo serve: refused, not signalled.
        let mut sleeper = Guard(Command::new("sleep").arg("30").spawn().unwrap());
        let o = run_tfo(&["key", "rotate", "--key-file", kf, "--pid", &sleeper.0.id().to_string()]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("is not a `tfo serve"), "{}", stderr(&o));
        assert!(sleeper.0.try_wait().unwrap().is_none(), "sleep was signalled");
        // A tfo serve with another key file: refused too.
        let other = dir.join("other.key");
        write_key(&other, KEY);
        let server = Server::start(&["--key-file", other.to_str().unwrap()]);
        let o = run_tfo(&["key", "rotate", "--key-file", kf, "--pid", &server.guard.0.id().to_string()]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("another key file"), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&key_file).unwrap(), KEY, "the key changed though rotation was refused");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn key_rotate_keeps_owner_and_group_mode_drops_others_keeps_neighbours_and_symlinks() {
    let dir = tempdir("rotate-file");
    std::fs::create_dir_all(dir.join("secret")).unwrap();
    let real = dir.join("secret/key");
    std::fs::write(&real, KEY).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.join("tfo.key");
    std::os::unix::fs::symlink("secret/key", &link).unwrap();
    let neighbour = dir.join("tfo.tmp");
    std::fs::write(&neighbour, "not ours").unwrap();
    let o = run_tfo(&["key", "rotate", "--key-file", link.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the symlink was replaced");
    assert_eq!(mode_of(&real), 0o640, "owner and group bits kept, others' dropped");
    assert!(std::fs::read_to_string(&real).unwrap().trim().ends_with(&format!(",{KEY}")));
    assert_eq!(std::fs::read_to_string(&neighbour).unwrap(), "not ours");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_warns_on_a_readable_key_and_never_prints_a_broken_one() {
    in_netns("hardening_key_files", 3, || {
        let dir = tempdir("serve-keys");
        let key_file = dir.join("open.key");
        std::fs::write(&key_file, KEY).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let server = Server::start(&["--key-file", key_file.to_str().unwrap()]);
        let err = server.stop_and_stderr();
        assert!(err.contains("readable by group or others") && err.contains("chmod 600"), "{err}");

        let broken = "0011223344556677SECRETaabbccddee";
        std::fs::write(&key_file, broken).unwrap();
        let o = run_tfo(&["serve", "127.0.0.1:0", "--key-file", key_file.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("open.key") && !stderr(&o).contains("SECRET"), "{}", stderr(&o));
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Waits for `child` at most `limit`; kills it and fails if it is still running.
fn wait_bounded(child: &mut std::process::Child, limit: std::time::Duration, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} still running after {limit:?}: it hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn output_bounded(mut child: std::process::Child, limit: std::time::Duration, what: &str) -> std::process::Output {
    use std::io::Read;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let _ = out.read_to_end(&mut o);
        o
    });
    let err_reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        e
    });
    let status = wait_bounded(&mut child, limit, what);
    std::process::Output { status, stdout: reader.join().unwrap(), stderr: err_reader.join().unwrap() }
}

fn spawn_tfo(args: &[&str]) -> std::process::Child {
    tfo().args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
}

#[test]
fn send_16_mb_to_an_echo_server_completes() {
    in_netns("hardening_send_large", 3, || {
        let server = Server::start(&[]);
        let dir = tempdir("send-large");
        let file = dir.join("16mb");
        std::fs::write(&file, vec![b'z'; 16 << 20]).unwrap();
        let child =
            spawn_tfo(&["send", &server.addr.to_string(), "--file", file.to_str().unwrap(), "--timeout", "60s"]);
        let o = output_bounded(child, std::time::Duration::from_secs(90), "tfo send of 16 MB");
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(o.stdout.len(), 16 << 20, "the whole echo came back");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn send_timeout_is_a_deadline_for_the_whole_exchange() {
    in_netns("hardening_send_drip", 3, || {
        // A server that sends one byte every 100 ms, forever.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            while std::io::Write::write_all(&mut s, b".").is_ok() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        let child = spawn_tfo(&["send", &addr, "--data", "hi", "--timeout", "1s"]);
        let o = output_bounded(child, std::time::Duration::from_secs(20), "tfo send against a dripping server");
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("no complete reply") && stderr(&o).contains("within 1.0 s"), "{}", stderr(&o));
    });
}

#[test]
fn send_input_is_bounded_and_binary_replies_are_base64() {
    // Nothing is sent: the input is refused before connecting.
    let child = spawn_tfo(&["send", "127.0.0.1:9", "--file", "/dev/zero"]);
    let o = output_bounded(child, std::time::Duration::from_secs(30), "tfo send --file /dev/zero");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("larger than 64 MiB"), "{}", stderr(&o));
    // File errors name the file.
    for args in [
        &["send", "127.0.0.1:9", "--file", "/nonexistent/request"][..],
        &["trace", "--read", "/nonexistent/request"][..],
        &["key", "cookie", "--key-file", "/nonexistent/request", "--client", "1.2.3.4", "--server", "5.6.7.8"][..],
    ] {
        let o = run_tfo(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("/nonexistent/request"), "{args:?}: {}", stderr(&o));
    }
    in_netns("hardening_send_binary", 3, || {
        let server = Server::start(&[]);
        let dir = tempdir("send-binary");
        let file = dir.join("bin");
        std::fs::write(&file, [0xff, 0xfe, 0x00, 0x41]).unwrap();
        let o = run_tfo(&["send", &server.addr.to_string(), "--file", file.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["reply_encoding"], "base64", "{v}");
        assert_eq!(v["reply"], "//4AQQ==", "{v}");
        assert_eq!(v["request_bytes"], 4);
        let o = run_tfo(&["send", &server.addr.to_string(), "--data", "plain text", "--json"]);
        assert_eq!(
            (json(&o)["reply"].clone(), json(&o)["reply_encoding"].clone()),
            ("plain text".into(), "utf8".into())
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn probe_does_not_call_a_silent_server_working_and_names_a_cached_cookie() {
    in_netns("hardening_probe", 3, || {
        // A TFO listener that accepts and never answers.
        let silent = fastopen::ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
        let addr = silent.local_addr().unwrap();
        let held = std::thread::spawn(move || (0..3).filter_map(|_| silent.accept().ok()).collect::<Vec<_>>());
        let o = run_tfo(&["probe", &addr.to_string(), "--timeout", "500ms", "--json"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["diagnosis"], "no_reply", "{v}");
        assert_eq!(v["tfo_works"], false);
        assert_eq!(held.join().unwrap().len(), 3, "all three connections were accepted");

        // A cookie from a TFO server on one port, then a non-TFO server on another port of the same IP.
        let tfo_server = Server::start(&[]);
        assert!(run_tfo(&["send", &tfo_server.addr.to_string(), "--data", "cookie please"]).status.success());
        let plain_server = Server::start(&["--queue", "0"]);
        let o = run_tfo(&["probe", &plain_server.addr.to_string(), "--json"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["diagnosis"], "cached_cookie_refused", "{v}");
        assert!(v["explanation"].as_str().unwrap().contains("per server IP, not per port"));
    });
}

#[test]
fn bench_with_requests_larger_than_the_windows_completes_and_a_total_loss_is_refused() {
    if !fastopen_lab::testing::root_or_skip("hardening_bench_large") {
        return;
    }
    let child = spawn_tfo(&["bench", "--rtt", "1ms", "--requests", "1", "--size", "10000000", "--json"]);
    let o = output_bounded(child, std::time::Duration::from_secs(120), "tfo bench --size 10000000");
    assert!(o.status.success(), "{}", stderr(&o));
    let r = &json(&o)["results"][0];
    assert_eq!((r["failed"].as_u64(), r["plain"]["n"].as_u64()), (Some(0), Some(1)), "{r}");

    // A path that loses every packet one way: nothing to measure, refused
    // up front (exit 2) rather than a table of empty rows that exits 0.
    let o = run_tfo(&["bench", "--rtt", "1ms", "--requests", "1", "--loss", "100%/0%", "--timeout", "1s", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to measure"), "{}", stderr(&o));
}

#[test]
fn bench_ends_on_ctrl_c_within_a_second_with_results_so_far_and_no_namespace() {
    if !fastopen_lab::testing::root_or_skip("hardening_bench_sigint") {
        return;
    }
    let mut child = spawn_tfo(&["bench", "--rtt", "200ms", "--requests", "1000", "--json"]);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Let it build its lab and measure a few requests.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let child_pid = child.id();
    let namespaces = || lab_namespaces_of(child_pid);
    assert_eq!(namespaces().len(), 2, "the bench's lab is up");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let sent = std::time::Instant::now();
    let status = wait_bounded(&mut child, std::time::Duration::from_secs(10), "tfo bench after SIGINT");
    let took = sent.elapsed();
    let o = output_bounded(child, std::time::Duration::from_secs(1), "reading its output");
    assert_eq!(status.code(), Some(130), "{}", stderr(&o));
    assert!(took < std::time::Duration::from_secs(2), "took {took:?} to stop (a hang check, not a benchmark)");
    let v = json(&o);
    assert_eq!(v["interrupted"], true);
    assert!(v["results"][0]["plain"]["n"].as_u64().unwrap() >= 1, "results so far are kept: {v}");
    assert!(namespaces().is_empty(), "left behind: {:?}", namespaces());
}

/// Connects, sends `request`, reads until EOF or `limit`; returns what came back.
fn raw_exchange(addr: std::net::SocketAddr, request: &[u8], limit: std::time::Duration) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn serve_closes_idle_connections_and_bounds_http_requests() {
    use std::io::{Read, Write};
    in_netns("hardening_serve_limits", 3, || {
        let limit = std::time::Duration::from_secs(20);
        let raw = Server::start(&["--idle-timeout", "300ms"]);
        let mut idle = std::net::TcpStream::connect(raw.addr).unwrap();
        idle.set_read_timeout(Some(limit)).unwrap();
        assert_eq!(idle.read(&mut [0u8; 8]).unwrap(), 0, "an idle connection is closed by the server");

        let mut http = Server::start(&["--http", "--request-timeout", "300ms", "--max-body", "1000"]);
        let half = raw_exchange(http.addr, b"GET / HTTP/1.1\r\nHost: x", limit);
        assert!(half.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&half));
        let big = raw_exchange(http.addr, b"POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n", limit);
        assert!(big.starts_with(b"HTTP/1.1 413"), "{}", String::from_utf8_lossy(&big));
        let twice =
            raw_exchange(http.addr, b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab", limit);
        assert!(twice.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&twice));

        // Expect: 100-continue is answered before the body is sent.
        let mut s = std::net::TcpStream::connect(http.addr).unwrap();
        s.set_read_timeout(Some(limit)).unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").unwrap();
        let mut first = [0u8; 25];
        s.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"hello").unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.starts_with(b"HTTP/1.1 200") && rest.ends_with(b"hello"), "{}", String::from_utf8_lossy(&rest));
        // Each worker logs its own connections: the lines may come in another order.
        let mut statuses: Vec<u64> = (0..4).map(|_| http.next_connection()["http_status"].as_u64().unwrap()).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400, 408, 413]);
    });
}

#[test]
fn serve_logs_how_far_a_reset_reply_got() {
    use std::io::{Read, Write};
    in_netns("hardening_serve_reset", 3, || {
        let mut server = Server::start(&["--http", "--max-body", "20000000"]);
        let body = vec![b'b'; 16 << 20];
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.connect(&server.addr.into()).unwrap();
        let mut s: std::net::TcpStream = s.into();
        write!(s, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
        s.write_all(&body).unwrap();
        let mut some = [0u8; 1024];
        s.read_exact(&mut some).unwrap();
        socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(s); // RST
        let log = server.next_connection();
        let out = log["bytes_out"].as_u64().unwrap();
        assert!((1024..(16 << 20)).contains(&out), "bytes_out {out} in {log}");
        assert!(log["error"].is_string(), "{log}");
    });
}

#[test]
fn serve_at_the_fd_limit_backs_off_and_logs_once_per_interval() {
    if !have_tool("hardening_serve_emfile", "prlimit") {
        return;
    }
    in_netns("hardening_serve_emfile", 3, || {
        let mut child = Command::new("prlimit")
            .args(["--nofile=32", "--", env!("CARGO_BIN_EXE_tfo"), "serve", "127.0.0.1:0", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut lines, &mut first).unwrap();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        let addr: std::net::SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
        let guard = Guard(child);
        // 60 idle clients: more than the server has descriptors for.
        let clients: Vec<_> = (0..60).filter_map(|_| std::net::TcpStream::connect(addr).ok()).collect();
        std::thread::sleep(std::time::Duration::from_secs(2));
        let mut guard = guard;
        let _ = guard.0.kill();
        let mut err = String::new();
        std::io::Read::read_to_string(guard.0.stderr.as_mut().unwrap(), &mut err).unwrap();
        let failures = err.lines().filter(|l| l.contains("accept failed")).count();
        assert!(
            (1..=2).contains(&failures),
            "{failures} accept-failure lines in 2 s:\n{}",
            &err[..err.len().min(2000)]
        );
        assert!(err.contains("Too many open files") && err.contains("ulimit -n"), "{err}");
        drop(clients);
    });
}

#[test]
fn doctor_takes_minus_one_and_keeps_fixes_inside_a_namespace() {
    in_netns("hardening_doctor", 1, || {
        let o = run_tfo(&["doctor", "--fix"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!stdout(&o).contains("tee /etc/sysctl.d"), "a namespace's fix must not touch the host: {}", stdout(&o));
        assert!(stdout(&o).contains("not the host's network namespace"), "{}", stdout(&o));
        fastopen_lab::netns::set_sysctl("net.ipv4.tcp_fastopen", "-1").unwrap();
        let o = run_tfo(&["doctor", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v = json(&o);
        assert_eq!((v["client_tfo"].clone(), v["server_tfo"].clone()), (true.into(), true.into()), "{v}");
        assert_eq!(v["initial_namespace"], false);
        let server = Server::start(&[]); // serve starts too
        drop(server);
        // -4: every bit but the client's. Shown and fixed as the kernel's int.
        fastopen_lab::netns::set_sysctl("net.ipv4.tcp_fastopen", "-4").unwrap();
        let o = run_tfo(&["doctor"]);
        assert!(stdout(&o).contains("-4 (0xfffffffc") && !stdout(&o).contains("4294967292"), "{}", stdout(&o));
        let o = run_tfo(&["doctor", "--fix"]);
        assert!(o.status.success(), "the advised value is one the kernel takes: {}", stderr(&o));
        assert!(stdout(&o).contains("fixed: net.ipv4.tcp_fastopen -4 -> -1"), "{}", stdout(&o));
        assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fastopen").unwrap().trim(), "-1");
    });
}

#[test]
fn messages_do_not_repeat_their_context_or_echo_huge_arguments() {
    let huge = "a".repeat(100_000); // near the kernel's limit on one argument
    for args in [vec!["probe", huge.as_str()], vec!["send", huge.as_str(), "--data", "x"]] {
        let o = run_tfo(&args);
        assert_eq!(o.status.code(), Some(2));
        assert!(o.stderr.len() < 2000, "{} bytes of error for a 100 kB argument", o.stderr.len());
    }
    for (target, want) in [("65536", "not a port"), ("::1", "[::1]:PORT")] {
        let o = run_tfo(&["probe", target]);
        assert_eq!(o.status.code(), Some(2), "{target}: usage");
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
    let o = run_tfo(&["probe", "[fe80::1%lo]:9", "--timeout", "1s"]);
    assert!(!stderr(&o).contains("not a target"), "a scoped address is a target: {}", stderr(&o));
    let o = run_tfo(&["send", "127.0.0.1:9", "--data", "x", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!((v["error_kind"].as_str(), v["reply_bytes"].as_u64()), (Some("refused"), Some(0)), "{v}");
}

#[test]
fn lab_exits_with_the_clients_status_and_checks_its_files_first() {
    if !fastopen_lab::testing::root_or_skip("hardening_lab_exit") {
        return;
    }
    let o = run_tfo(&["lab", "--rtt", "1ms", "--client", "exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let o = run_tfo(&["lab", "--rtt", "1ms", "--client", "sleep 30", "--write", "/nonexistent/x.pcap"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/x.pcap") && !stderr(&o).contains("lab up"), "{}", stderr(&o));
    let dir = tempdir("lab-same-file");
    let f = dir.join("x.pcap");
    let f = f.to_str().unwrap();
    let o = run_tfo(&["lab", "--rtt", "1ms", "--client", "true", "--write", f, "--write-delivered", f]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("same file"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn messages_say_each_cause_once_and_what_to_do() {
    in_netns("hardening_messages", 3, || {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let o = run_tfo(&["send", &closed.to_string(), "--data", "x"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert_eq!(stderr(&o).matches("Connection refused").count(), 1, "{}", stderr(&o));
        for cmd in [&["send", "127.0.0.1:0", "--data", "x"][..], &["probe", "0"][..]] {
            let o = run_tfo(cmd);
            assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", stderr(&o));
            assert!(stderr(&o).contains("port 0"), "{}", stderr(&o));
        }
        for (timeout, says) in [("1e-10s", "too short"), ("86401s", "longer than 1 day"), ("5", "no unit")] {
            let o = run_tfo(&["send", "8000", "--data", "x", "--timeout", timeout]);
            assert_eq!(o.status.code(), Some(2));
            assert!(stderr(&o).contains(says), "{timeout}: {}", stderr(&o));
        }
        let o = run_tfo(&["demo", "--rtt", "0"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("round trip above 0"), "{}", stderr(&o));
        let o = tfo()
            .args(["trace", "--netns", "nowhere", "--duration", "1s"])
            .env("TFOKIT_TCPDUMP", "/nonexistent/tcpdump")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("apt-get install tcpdump"), "{}", stderr(&o));
        // A user binding a port below 1024 is told why and what to do.
        let o = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_tfo"),
                "serve",
                "127.0.0.1:80",
            ])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("below 1024") && stderr(&o).contains("CAP_NET_BIND_SERVICE"), "{}", stderr(&o));
    });
}

#[test]
fn demo_ends_on_ctrl_c_and_leaves_no_namespace() {
    if !fastopen_lab::testing::root_or_skip("hardening_demo_sigint") {
        return;
    }
    let mut child = spawn_tfo(&["demo", "--rtt", "3s"]);
    let child_pid = child.id();
    let namespaces = || lab_namespaces_of(child_pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while namespaces().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the demo's lab never came up");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500)); // inside the first 6 s request
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_bounded(&mut child, std::time::Duration::from_secs(10), "tfo demo after SIGINT");
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(namespaces().is_empty(), "left behind: {:?}", namespaces());
}

#[test]
fn serve_gives_connections_in_progress_5_s_after_sigterm() {
    use std::io::{BufRead, Read, Write};
    in_netns("hardening_serve_drain", 3, || {
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
        // Opens a request and waits for 100 Continue: the server holds it in progress.
        let in_progress = |addr| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
            s.write_all(head).unwrap();
            let mut cont = [0u8; 25];
            s.read_exact(&mut cont).unwrap();
            s
        };
        let sigterm = |server: &Server| {
            let pid = nix::unistd::Pid::from_raw(server.guard.0.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        };
        // A request finished after SIGTERM still gets its reply, then the server exits 0.
        let mut server = Server::start(&["--http"]);
        let mut s = in_progress(server.addr);
        sigterm(&server);
        s.write_all(b"hello").unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        assert!(reply.ends_with(b"hello"), "{}", String::from_utf8_lossy(&reply));
        let status = wait_bounded(&mut server.guard.0, std::time::Duration::from_secs(10), "serve after SIGTERM");
        assert_eq!(status.code(), Some(0));
        // A request that never finishes holds the server 5 s, then is closed.
        let mut server = Server::start(&["--http"]);
        let _stuck = in_progress(server.addr);
        sigterm(&server);
        let signalled = std::time::Instant::now();
        let status = wait_bounded(&mut server.guard.0, std::time::Duration::from_secs(20), "serve draining");
        let held = signalled.elapsed();
        assert_eq!(status.code(), Some(0));
        assert!(held >= std::time::Duration::from_millis(4500), "stopped after {held:?}, before the 5 s drain");
        let mut err = String::new();
        for line in std::io::BufReader::new(server.guard.0.stderr.take().unwrap()).lines() {
            err.push_str(&line.unwrap());
        }
        assert!(err.contains("still open after 5 s; closing them"), "{err}");
    });
}

/// Whether a process runs whose command line starts with `marker` (not a
/// `tfo lab` whose arguments merely name it).
fn process_with(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let line = String::from_utf8_lossy(&c).replace('\0', " ");
            line.starts_with(marker) || (line.contains(marker) && !line.contains(" lab "))
        })
    })
}

fn wait_for(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what} not within {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn lab_ends_on_each_signal_while_its_client_runs_and_its_commands_die_with_it() {
    if !fastopen_lab::testing::root_or_skip("hardening_lab_signals") {
        return;
    }
    for signal in
        [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGHUP]
    {
        let marker = format!("sleep 27.{}", signal as i32);
        let mut child = spawn_tfo(&["lab", "--rtt", "1ms", "--client", &marker]);
        wait_for("the client command", std::time::Duration::from_secs(20), || process_with(&marker));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let sent = std::time::Instant::now();
        let status = wait_bounded(&mut child, std::time::Duration::from_secs(15), "tfo lab after a signal");
        assert!(sent.elapsed() < std::time::Duration::from_secs(5), "{signal}: waited for its client");
        assert_eq!(status.code(), Some(130), "{signal}");
        assert!(!process_with(&marker), "{signal}: the client command outlived the lab");
    }
    // kill -9: the server and client commands die with it (PR_SET_PDEATHSIG).
    let server = format!("{} serve 0.0.0.0:28128", env!("CARGO_BIN_EXE_tfo"));
    let (server_marker, client_marker) = ("serve 0.0.0.0:28128", "sleep 28.2");
    let mut child = spawn_tfo(&["lab", "--rtt", "1ms", "--server", &server, "--client", client_marker]);
    wait_for("the client command", std::time::Duration::from_secs(20), || process_with(client_marker));
    assert!(process_with(server_marker));
    child.kill().unwrap();
    let _ = child.wait();
    wait_for("the commands' death", std::time::Duration::from_secs(5), || {
        !process_with(client_marker) && !process_with(server_marker)
    });
    // Sweep what the SIGKILLed lab left (its namespaces).
    let _ = run_tfo(&["lab", "--rtt", "1ms", "--client", "true"]);
}

#[test]
fn a_running_lab_whose_lock_file_was_removed_is_not_torn_down_by_the_next() {
    if !fastopen_lab::testing::root_or_skip("hardening_lab_lock") {
        return;
    }
    let marker = "sleep 29.5";
    let mut first = spawn_tfo(&["lab", "--rtt", "1ms", "--client", marker]);
    wait_for("the first lab's client", std::time::Duration::from_secs(20), || process_with(marker));
    let first_pid = first.id();
    let spaces = lab_namespaces_of(first_pid);
    assert_eq!(spaces.len(), 2, "{spaces:?}");
    for entry in std::fs::read_dir(fastopen_lab::netns::LOCK_DIR).unwrap().filter_map(|e| e.ok()) {
        if entry.file_name().to_string_lossy().starts_with(&format!("tfokit-{first_pid}-")) {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    let o = run_tfo(&["lab", "--rtt", "1ms", "--client", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lab_namespaces_of(first_pid), spaces, "the second lab swept a live one");
    assert!(first.try_wait().unwrap().is_none() && process_with(marker), "the first lab's client was killed");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first_pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_bounded(&mut first, std::time::Duration::from_secs(15), "the first lab");
}

#[test]
fn probe_ends_on_sigterm_during_a_pending_connect() {
    in_netns("hardening_probe_sigterm", 3, || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rule = format!("-I INPUT -p tcp --dport {port} --syn -j DROP");
        assert!(std::process::Command::new("iptables").args(rule.split(' ')).status().unwrap().success());
        let mut child = spawn_tfo(&["probe", &format!("127.0.0.1:{port}"), "--timeout", "30s"]);
        std::thread::sleep(std::time::Duration::from_millis(700));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let sent = std::time::Instant::now();
        let status = wait_bounded(&mut child, std::time::Duration::from_secs(15), "tfo probe after SIGTERM");
        let o = output_bounded(child, std::time::Duration::from_secs(1), "its output");
        assert!(sent.elapsed() < std::time::Duration::from_secs(3), "waited for its connect timeout");
        assert_eq!(status.code(), Some(130), "{}", stderr(&o));
        assert!(!stderr(&o).contains("lab"), "probe has no lab: {}", stderr(&o));
    });
}

#[test]
fn serve_caps_connections_and_their_lifetime_and_answers_head_and_connect_right() {
    use std::io::{Read, Write};
    in_netns("hardening_serve_cap", 3, || {
        let limit = std::time::Duration::from_secs(20);
        let raw = Server::start(&["--workers", "1", "--max-connections", "2", "--max-lifetime", "1500ms"]);
        let connect = || {
            let s = std::net::TcpStream::connect(raw.addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_millis(400))).unwrap();
            s
        };
        let (mut a, mut b, mut c) = (connect(), connect(), connect());
        for (s, word) in [(&mut a, b"a"), (&mut b, b"b"), (&mut c, b"c")] {
            s.write_all(word).unwrap();
        }
        let mut one = [0u8; 1];
        assert_eq!((a.read(&mut one).unwrap(), one), (1, *b"a"));
        assert_eq!((b.read(&mut one).unwrap(), one), (1, *b"b"));
        assert!(c.read(&mut one).is_err(), "the third waits in the listen queue");
        drop(a);
        c.set_read_timeout(Some(limit)).unwrap();
        assert_eq!((c.read(&mut one).unwrap(), one), (1, *b"c"), "served once a slot is free");
        // A busy connection still ends at --max-lifetime.
        let started = std::time::Instant::now();
        b.set_read_timeout(Some(limit)).unwrap();
        loop {
            b.write_all(b"x").unwrap_or(());
            match b.read(&mut one) {
                Ok(0) | Err(_) => break,
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
            assert!(started.elapsed() < limit, "a busy connection outlived --max-lifetime");
        }
        let http = Server::start(&["--http"]);
        let head = raw_exchange(http.addr, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", limit);
        let text = String::from_utf8_lossy(&head);
        assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("\r\n\r\n"), "HEAD: a head, no body: {text}");
        let connect = raw_exchange(http.addr, b"CONNECT example.invalid:443 HTTP/1.1\r\n\r\n", limit);
        assert!(connect.starts_with(b"HTTP/1.1 405"), "{}", String::from_utf8_lossy(&connect));
        let plus = raw_exchange(http.addr, b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", limit);
        assert!(plus.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&plus));
        let _ = &mut c;
    });
}

#[test]
fn doctor_in_a_container_with_its_own_pid_and_net_namespaces_is_not_the_host() {
    if !fastopen_lab::testing::root_or_skip("hardening_doctor_container") {
        return;
    }
    // unshare: a new pid namespace (its own pid 1, which shares the new net namespace).
    let o = Command::new("unshare")
        .args(["--pid", "--net", "--fork", "--mount-proc", env!("CARGO_BIN_EXE_tfo"), "doctor", "--json"])
        .output()
        .expect("unshare (util-linux)");
    assert!(o.status.success() || o.status.code() == Some(1), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["initial_namespace"], false, "{v}");
    assert!(!stdout(&o).contains("tee /etc/sysctl.d"), "must not advise changing the host: {v}");
}
