//! The `tfo` command line through the real binary, inside private network namespaces.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};

use common::*;

#[test]
fn send_twice_cookie_then_data_in_syn_and_server_agrees() {
    in_netns("cli_send_twice", 3, || {
        let mut server = Server::start(&[]);
        let addr = server.addr.to_string();
        for method in ["sendto", "connect"] {
            let before = counters();
            let first = run_tfo(&["send", &addr, "--data", "hello", "--json", "--method", method]);
            assert!(first.status.success(), "{}", stderr(&first));
            let v = json(&first);
            // The cookie is per destination address, so only the first method's first send asks.
            if method == "sendto" {
                assert_eq!(v["fail_reason"], "cookie_unavailable", "{v}");
                assert_eq!(v["tfo_used"], false);
                assert_eq!(server.next_connection()["data_in_syn"], false);
            } else {
                assert_eq!(v["tfo_used"], true, "{v}");
                server.next_connection();
            }
            assert_eq!(v["reply"], "hello");
            for key in ["connect_ms", "total_ms", "bytes_in_syn"] {
                assert!(v[key].is_number(), "{key} in {v}");
            }
            let second = json(&run_tfo(&["send", &addr, "--data", "hello again", "--json", "--method", method]));
            assert_eq!(second["tfo_used"], true, "{second}");
            assert_eq!(second["bytes_in_syn"], 11);
            assert_eq!(second["fail_reason"], serde_json::Value::Null);
            assert_eq!(second["method"], method);
            let log = server.next_connection();
            assert_eq!(log["data_in_syn"], true, "{log}");
            assert_eq!(log["bytes_in_syn"], 11);
            let d = &counters() - &before;
            let expected_active = if method == "sendto" { 1 } else { 2 };
            assert_eq!((d.active, d.passive), (expected_active, expected_active), "{method}: {d:?}");
        }
    });
}

#[test]
fn send_human_output_puts_reply_on_stdout_and_outcome_on_stderr() {
    in_netns("cli_human", 3, || {
        let server = Server::start(&[]);
        let addr = server.addr.to_string();
        run_tfo(&["send", &addr, "--data", "x"]);
        let o = run_tfo(&["send", &addr, "--data", "the reply"]);
        assert!(o.status.success());
        assert_eq!(stdout(&o), "the reply");
        assert!(stderr(&o).contains("TFO used (sendto): 9 of 9 bytes rode in the SYN"), "{}", stderr(&o));
    });
}

#[test]
fn stdin_file_and_empty_data() {
    in_netns("cli_inputs", 3, || {
        let server = Server::start(&[]);
        let addr = server.addr.to_string();
        let mut child =
            tfo().args(["send", &addr, "--json"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"from stdin").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&child.wait_with_output().unwrap().stdout).unwrap();
        assert_eq!(v["reply"], "from stdin");

        let dir = tempdir("cli");
        let file = dir.join("req.bin");
        std::fs::write(&file, b"from a file").unwrap();
        let v = json(&run_tfo(&["send", &addr, "--file", file.to_str().unwrap(), "--json"]));
        assert_eq!(v["reply"], "from a file");
        assert_eq!(v["tfo_used"], true);

        let empty = tfo().args(["send", &addr, "--json"]).stdin(Stdio::null()).output().unwrap();
        let v = json(&empty);
        assert_eq!(v["fail_reason"], "no_data", "{v}");
        assert_eq!(v["reply_bytes"], 0);
    });
}

#[test]
fn data_larger_than_one_segment_is_complete() {
    in_netns("cli_large", 3, || {
        assert!(Command::new("ip").args(["link", "set", "lo", "mtu", "1500"]).status().unwrap().success());
        let server = Server::start(&[]);
        let addr = server.addr.to_string();
        let big: String = (0..20_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let dir = tempdir("cli");
        let file = dir.join("big.txt");
        std::fs::write(&file, &big).unwrap();
        run_tfo(&["send", &addr, "--data", "cookie please"]);
        for method in ["sendto", "connect"] {
            let v = json(&run_tfo(&["send", &addr, "--file", file.to_str().unwrap(), "--json", "--method", method]));
            assert_eq!(v["tfo_used"], true, "{v}");
            let in_syn = v["bytes_in_syn"].as_u64().unwrap();
            assert!(in_syn > 1000 && in_syn < 1500, "{method}: {in_syn} bytes in the SYN");
            assert_eq!(v["request_bytes"], 20_000);
            assert_eq!(v["reply"].as_str().unwrap(), big, "{method}: the reply must be the whole request");
        }
    });
}

#[test]
fn bad_addresses_are_usage_errors() {
    for bad in ["nonsense", "127.0.0.1", "127.0.0.1:70000", ""] {
        let o = run_tfo(&["send", bad, "--data", "x"]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("address") || stderr(&o).contains("port"), "{bad:?}: {}", stderr(&o));
    }
    let o = run_tfo(&["serve", "not:an:address"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run_tfo(&["send", "8000", "--data", "x", "--timeout", "-1"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn refused_and_reset_exit_1_with_the_cause() {
    in_netns("cli_refused", 3, || {
        let o = run_tfo(&["send", "127.0.0.1:9", "--data", "x"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
        // With --json the failure is an object on stdout too.
        let o = run_tfo(&["send", "127.0.0.1:9", "--data", "x", "--json"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let failed = json(&o);
        assert_eq!(failed["error_kind"], "refused", "{failed}");
        assert_eq!(failed["reply_bytes"], 0, "{failed}");

        // A server that resets every connection.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let resetter = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO)).unwrap();
        });
        let o = run_tfo(&["send", &addr, "--data", "x"]);
        resetter.join().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).to_lowercase().contains("reset"), "{}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"));
    });
}

#[test]
fn a_silent_server_is_a_timeout_with_a_clear_message() {
    in_netns("cli_silent", 3, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let holder = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let o = run_tfo(&["send", &addr, "--data", "anyone?", "--timeout", "300ms"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("no complete reply") && stderr(&o).contains("--timeout"), "{}", stderr(&o));
        drop(holder.join().unwrap());
    });
}

#[test]
fn port_in_use_names_the_address() {
    in_netns("cli_port_in_use", 3, || {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let o = run_tfo(&["serve", &addr]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains(&addr) && stderr(&o).contains("already in use"), "{}", stderr(&o));
    });
}

#[test]
fn server_tfo_off_warns_once_and_serves_plain() {
    in_netns("cli_server_off", 1, || {
        let mut server = Server::start(&[]);
        let addr = server.addr.to_string();
        for _ in 0..2 {
            let v = json(&run_tfo(&["send", &addr, "--data", "hi", "--json"]));
            assert_eq!(v["fail_reason"], "cookie_unavailable", "{v}");
            assert_eq!(v["reply"], "hi");
            assert_eq!(server.next_connection()["data_in_syn"], false);
        }
        let err = server.stop_and_stderr();
        assert_eq!(err.matches("TFO server mode is off").count(), 1, "{err}");
        assert!(err.contains("tfo doctor --fix"));
    });
}

/// `--no-log`: no line per connection (nothing after "listening" on
/// stdout), connections still served and counted in the summary at the end,
/// which agrees with the kernel's TCPFastOpenPassive.
#[test]
fn no_log_serves_without_a_line_per_connection() {
    in_netns("cli_no_log", 3, || {
        use std::io::Read;
        let mut server = Server::start(&["--no-log"]);
        let addr = server.addr.to_string();
        let fates: Vec<_> = (0..3).map(|_| json(&run_tfo(&["send", &addr, "--data", "quiet", "--json"]))).collect();
        assert!(fates.iter().all(|v| v["reply"] == "quiet"), "{fates:?}");
        assert_eq!(fates[0]["fail_reason"], "cookie_unavailable");
        assert!(fates[1..].iter().all(|v| v["tfo_used"] == true), "{fates:?}");
        let pid = nix::unistd::Pid::from_raw(server.guard.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let mut rest = String::new();
        server.lines.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "", "no connection lines");
        let err = server.stop_and_stderr();
        assert!(err.contains("3 connections, 2 with data in the SYN, 0 with errors"), "{err}");
        assert!(err.contains("TCPFastOpenPassive +2"), "{err}");
    });
}

#[test]
fn client_tfo_off_falls_back_and_strict_fails() {
    in_netns("cli_client_off", 2, || {
        let server = Server::start(&[]);
        let addr = server.addr.to_string();
        let v = json(&run_tfo(&["send", &addr, "--data", "hi", "--json"]));
        assert_eq!(v["fail_reason"], "client_disabled", "{v}");
        assert_eq!(v["reply"], "hi");
        let o = run_tfo(&["send", &addr, "--data", "hi", "--strict"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("client_disabled"), "{}", stderr(&o));
    });
}

#[test]
fn doctor_explains_and_fixes() {
    in_netns("cli_doctor", 1, || {
        let o = run_tfo(&["doctor", "--json"]);
        assert_eq!(o.status.code(), Some(1), "server TFO is off: the check fails");
        let v = json(&o);
        assert_eq!(
            (v["tcp_fastopen"].as_u64(), v["client_tfo"].as_bool(), v["server_tfo"].as_bool()),
            (Some(1), Some(true), Some(false))
        );
        assert_eq!(v["bits"].as_array().unwrap().len(), 5);
        assert!(v["advice"][0].as_str().unwrap().contains("tfo doctor --fix"));
        assert_eq!(v["counters"]["passive"], 0);

        let text = run_tfo(&["doctor"]);
        assert!(stdout(&text).contains("server TFO: OFF"), "{}", stdout(&text));

        let fixed = run_tfo(&["doctor", "--fix", "--json"]);
        assert_eq!(fixed.status.code(), Some(0), "{}", stderr(&fixed));
        let v = json(&fixed);
        assert_eq!((v["tcp_fastopen"].as_u64(), v["fixed_from"].as_u64()), (Some(3), Some(1)));
        assert_eq!(fastopen::host::read_mode().unwrap().0, 3, "the namespace itself changed");
        assert!(stdout(&run_tfo(&["doctor", "--fix"])).contains("verdict: TFO is on"));
    });
}

#[test]
fn doctor_fix_without_root_is_an_environment_error() {
    in_netns("cli_doctor_nonroot", 1, || {
        // Drop to nobody for the child: it cannot write the sysctl.
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_tfo"), "doctor", "--fix"])
            .output()
            .expect("setpriv (util-linux)");
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("needs root"), "{}", stderr(&o));
    });
}

#[test]
fn demo_runs_the_walkthrough_over_the_lab() {
    if !fastopen_lab::testing::root_or_skip("cli_demo") {
        return;
    }
    let child =
        tfo().args(["demo", "--json", "--rtt", "40ms"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let demo_pid = child.id();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["setting"], "lab");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["fail_reason"], "not_requested");
    assert_eq!(steps[1]["fail_reason"], "cookie_unavailable");
    assert_eq!(steps[1]["server_counters_delta"]["cookie_reqd"], 1);
    assert_eq!(steps[2]["tfo_used"], true);
    assert_eq!(steps[2]["server"]["data_in_syn"], true);
    assert_eq!(steps[2]["client_counters_delta"]["active"], 1);
    assert_eq!(steps[2]["server_counters_delta"]["passive"], 1);
    assert_eq!(steps[2]["status_line"], "HTTP/1.1 200 OK");
    // The path's delay is enforced: a plain request needs two round trips, TFO one.
    assert!(steps[0]["total_ms"].as_f64().unwrap() >= 80.0, "{}", steps[0]);
    assert!(steps[2]["total_ms"].as_f64().unwrap() >= 40.0, "{}", steps[2]);
    // Step 4: the replayed SYN is handled twice under allow, once under wait;
    // the server's kernel took both SYNs' data, and the wire shows the replay.
    let policies = v["replay"]["policies"].as_array().unwrap();
    let handled: Vec<_> = policies.iter().map(|p| (p["early_data"].clone(), p["handled"].clone())).collect();
    assert_eq!(handled, [("allow".into(), 2.into()), ("wait".into(), 1.into())], "{}", v["replay"]);
    for p in policies {
        assert_eq!(p["tfo_used"], true, "{p}");
        assert_eq!(p["server_counters_delta"]["passive"], 2, "{p}");
        let logs = p["server_logs"].as_array().unwrap();
        assert_eq!((logs[1]["in_syn"].clone(), logs[1]["confirmed"].clone()), (true.into(), false.into()), "{p}");
        let verdicts: Vec<_> = p["wire"].as_array().unwrap().iter().map(|c| c["verdict"].clone()).collect();
        assert_eq!(verdicts, ["tfo_used", "replayed_syn"], "{p}");
    }
    // The demo's namespaces are `tfokit-PID-...`: none of its own may be left.
    assert_eq!(lab_namespaces_of(demo_pid), Vec::<String>::new());
}

#[test]
fn demo_without_root_runs_the_loopback_part() {
    if !fastopen_lab::testing::root_or_skip("cli_demo_nonroot") {
        return;
    }
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_tfo"), "demo", "--json"])
        .output()
        .expect("setpriv (util-linux)");
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["setting"], "loopback");
    assert_eq!(v["steps"][2]["tfo_used"], true, "{v}");
}

#[test]
fn help_teaches() {
    let o = run_tfo(&["--help"]);
    for cmd in
        ["serve", "send", "doctor", "trace", "bench", "lab", "demo", "probe", "key", "watch", "load", "wrap", "proxy"]
    {
        assert!(stdout(&o).contains(cmd), "{cmd} missing from --help");
        let sub = run_tfo(&[cmd, "--help"]);
        assert!(sub.status.success() && stdout(&sub).len() > 300, "`tfo {cmd} --help` should teach");
    }
    let o = run_tfo(&["send", "--help"]);
    assert!(stdout(&o).contains("cookie_unavailable") && stdout(&o).contains("--method"));
}

#[test]
fn serve_rotates_keys_on_sighup_and_keeps_old_cookies_working() {
    in_netns("cli_sighup", 3, || {
        use std::io::BufRead;
        let dir = tempdir("cli");
        let key_file = dir.join("tfo.key");
        write_key(&key_file, "00112233-44556677-8899aabb-ccddeeff\n");
        let mut server = Server::start(&["--key-file", key_file.to_str().unwrap()]);
        let addr = server.addr.to_string();
        assert_eq!(json(&run_tfo(&["send", &addr, "--data", "a", "--json"]))["fail_reason"], "cookie_unavailable");
        assert_eq!(json(&run_tfo(&["send", &addr, "--data", "b", "--json"]))["tfo_used"], true);
        server.next_connection();
        server.next_connection();

        std::fs::write(&key_file, "ffeeddcc-bbaa9988-77665544-33221100\n").unwrap();
        let pid = nix::unistd::Pid::from_raw(server.guard.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        let mut err = std::io::BufReader::new(server.guard.0.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("keys reloaded") && line.contains("previous key kept as backup"), "{line}");

        let before = counters();
        let v = json(&run_tfo(&["send", &addr, "--data", "c", "--json"]));
        assert_eq!(v["tfo_used"], true, "the old cookie is accepted through the backup key: {v}");
        let d = &counters() - &before;
        assert_eq!((d.passive, d.passive_alt_key), (1, 1), "{d:?}");

        // A bad key file keeps the running keys.
        std::fs::write(&key_file, "not a key").unwrap();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        line.clear();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("key reload failed, keeping the old keys"), "{line}");
        assert_eq!(json(&run_tfo(&["send", &addr, "--data", "d", "--json"]))["tfo_used"], true);
    });
}

#[test]
fn tfo_key_rotate_keeps_a_running_server_accepting_old_cookies() {
    in_netns("cli_key_rotate", 3, || {
        let dir = tempdir("cli");
        let key_file = dir.join("rotate.key");
        let generated = run_tfo(&["key", "generate"]);
        assert!(generated.status.success());
        let first_key = stdout(&generated).trim().to_string();
        assert_eq!(first_key.len(), 32, "{first_key}");
        write_key(&key_file, &first_key);
        let mut server = Server::start(&["--key-file", key_file.to_str().unwrap()]);
        let addr = server.addr.to_string();
        run_tfo(&["send", &addr, "--data", "cookie"]);
        server.next_connection();

        // The cookie the kernel gave is the one `tfo key cookie` computes.
        let o = run_tfo(&[
            "key",
            "cookie",
            "--key-file",
            key_file.to_str().unwrap(),
            "--client",
            "127.0.0.1",
            "--server",
            "127.0.0.1",
        ]);
        let computed = stdout(&o).trim().to_string();
        let metrics = Command::new("ip").args(["tcp_metrics", "show"]).output().unwrap();
        assert!(stdout(&metrics).contains(&format!("fo_cookie {computed}")), "{computed} vs {}", stdout(&metrics));

        let pid = server.guard.0.id().to_string();
        let o = run_tfo(&["key", "rotate", "--key-file", key_file.to_str().unwrap(), "--pid", &pid]);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = std::fs::read_to_string(&key_file).unwrap();
        assert!(text.trim().ends_with(&format!(",{first_key}")), "old key kept as backup: {text}");
        // Wait for the reload (the server says so on stderr), then use the old cookie.
        let mut err = std::io::BufReader::new(server.guard.0.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(line.contains("keys reloaded"), "{line}");
        let before = counters();
        assert_eq!(json(&run_tfo(&["send", &addr, "--data", "old cookie", "--json"]))["tfo_used"], true);
        assert_eq!((&counters() - &before).passive_alt_key, 1);
    });
}

#[test]
fn serve_handles_many_concurrent_connections() {
    in_netns("cli_concurrent", 3, || {
        let mut server = Server::start(&[]);
        let addr = server.addr;
        run_tfo(&["send", &addr.to_string(), "--data", "cookie"]);
        server.next_connection();
        // 40 clients each get their echo while all 40 connections stay open: a
        // server that served one connection at a time would time out here.
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(40));
        let clients: Vec<_> = (0..40)
            .map(|i| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let request = format!("client {i:02}");
                    let (mut s, outcome) = fastopen::Connector::new().connect(addr, request.as_bytes()).unwrap();
                    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
                    let mut echo = vec![0u8; request.len()];
                    std::io::Read::read_exact(&mut s, &mut echo).expect("echo while other connections are open");
                    assert_eq!(echo, request.as_bytes());
                    barrier.wait();
                    s.shutdown(std::net::Shutdown::Both).unwrap();
                    outcome.tfo_used()
                })
            })
            .collect();
        let used = clients.into_iter().map(|c| c.join().unwrap()).filter(|u| *u).count();
        assert_eq!(used, 40, "every connection carried its request in the SYN");
        let in_syn = (0..40).filter(|_| server.next_connection()["data_in_syn"] == true).count();
        assert_eq!(in_syn, 40);
    });
}

/// The server's stderr, a line at a time, with a deadline per line.
fn stderr_lines(server: &mut Server) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let err = std::io::BufReader::new(server.guard.0.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn expect_line(lines: &std::sync::mpsc::Receiver<String>, wanted: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(wanted) => return line,
            Ok(_) => {}
            Err(_) => panic!("tfo serve did not say {wanted:?} within 5 s"),
        }
    }
}

/// `tfo serve --key-file` follows the file without a signal: a Kubernetes
/// Secret volume's symlink swap, a rename by `tfo key rotate`, and a file
/// that goes bad (the running keys stay). Each time the old cookie still
/// works, through the backup key (TCPFastOpenPassiveAltKey).
#[test]
fn serve_follows_its_key_file_through_symlink_swaps_and_renames() {
    in_netns("cli_key_follow", 3, || {
        use std::os::unix::fs::symlink;
        let dir = tempdir("key-follow");
        // The layout of a Secret volume: tfo.key -> ..data/tfo.key, ..data -> ..v1.
        std::fs::create_dir(dir.join("..v1")).unwrap();
        write_key(&dir.join("..v1/tfo.key"), "00112233-44556677-8899aabb-ccddeeff");
        symlink("..v1", dir.join("..data")).unwrap();
        symlink("..data/tfo.key", dir.join("tfo.key")).unwrap();
        let key_file = dir.join("tfo.key");
        let mut server = Server::start(&["--key-file", key_file.to_str().unwrap()]);
        let lines = stderr_lines(&mut server);
        let addr = server.addr.to_string();
        let send = |data: &str| json(&run_tfo(&["send", &addr, "--data", data, "--json"]));
        assert_eq!(send("cookie")["fail_reason"], "cookie_unavailable");

        // The swap: a new directory, then ..data renamed over (atomic).
        std::fs::create_dir(dir.join("..v2")).unwrap();
        write_key(&dir.join("..v2/tfo.key"), "ffeeddcc-bbaa9988-77665544-33221100");
        symlink("..v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        let line = expect_line(&lines, "keys reloaded");
        assert!(line.contains("the file changed") && line.contains("previous key kept as backup"), "{line}");
        let before = counters();
        assert_eq!(send("old cookie")["tfo_used"], true);
        assert_eq!((&counters() - &before).passive_alt_key, 1, "accepted through the backup key");

        // `tfo key rotate` replaces the symlink's target by rename.
        let o = run_tfo(&["key", "rotate", "--key-file", key_file.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        expect_line(&lines, "keys reloaded");
        let before = counters();
        assert_eq!(send("cookie of the last key")["tfo_used"], true);
        assert_eq!((&counters() - &before).passive_alt_key, 1);

        // A file that goes bad keeps the running keys, and says why.
        std::fs::write(dir.join("..v2/broken"), "not a key").unwrap();
        std::fs::rename(dir.join("..v2/broken"), dir.join("..v2/tfo.key")).unwrap();
        let line = expect_line(&lines, "key reload failed, keeping the old keys");
        assert!(!line.contains("not a key"), "the file's text is never printed: {line}");
        assert_eq!(send("still")["tfo_used"], true);
        let _ = std::fs::remove_dir_all(dir);
    });
}

fn derive(secret: &std::path::Path, at: u64) -> serde_json::Value {
    let at = at.to_string();
    let o =
        run_tfo(&["key", "derive", "--key-secret", secret.to_str().unwrap(), "--rotate", "1h", "--at", &at, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    json(&o)
}

/// Keys derived from one secret: the same in two processes, and on either
/// side of a period boundary each host's backup is the other's primary.
#[test]
fn derived_keys_agree_across_processes_and_a_period_boundary() {
    let dir = tempdir("derive");
    let secret = dir.join("fleet.secret");
    write_key(&secret, "a fleet secret of more than sixteen bytes\n");
    let boundary = 1_790_002_800; // a multiple of 3600
    let (behind, ahead) = (derive(&secret, boundary - 2), derive(&secret, boundary + 2));
    assert_eq!(derive(&secret, boundary - 2), behind, "another process derives the same keys");
    // A time past the schedule's arithmetic (the year 9999) is a usage error, not an earlier time.
    let o = run_tfo(&["key", "derive", "--key-secret", secret.to_str().unwrap(), "--at", "18446744073709551615"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("253402300799"), "{}", stderr(&o));
    assert_eq!(ahead["period"].as_u64().unwrap(), behind["period"].as_u64().unwrap() + 1);
    assert_eq!((&behind["backup"], &ahead["backup"]), (&ahead["primary"], &behind["primary"]));
    assert_eq!(behind["next_change_unix"], boundary as f64);
    // Another secret, other keys; a short one is refused without printing it.
    write_key(&secret, "another fleet secret, long enough");
    assert_ne!(derive(&secret, boundary + 2)["primary"], ahead["primary"]);
    write_key(&secret, "tiny");
    let o = run_tfo(&["key", "derive", "--key-secret", secret.to_str().unwrap()]);
    assert!(
        !o.status.success() && stderr(&o).contains("at least 16") && !stderr(&o).contains("tiny"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `tfo serve --key-secret` issues the cookie of the derived primary key, and
/// `tfo key apply` gives the namespace (so a server without a key of its own,
/// like nginx) the same keys: the cookie the kernel hands out is the same.
#[test]
fn serve_key_secret_and_key_apply_give_the_derived_cookie() {
    in_netns("cli_key_secret", 3, || {
        let dir = tempdir("key-secret");
        let secret = dir.join("fleet.secret");
        write_key(&secret, "a fleet secret of more than sixteen bytes");
        let s = secret.to_str().unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let keys = derive(&secret, now);
        let expected = stdout(&run_tfo(&[
            "key",
            "cookie",
            "--key",
            keys["primary"].as_str().unwrap(),
            "--client",
            "127.0.0.1",
            "--server",
            "127.0.0.1",
        ]))
        .trim()
        .to_string();
        let cached_cookie = || {
            let metrics = Command::new("ip").args(["tcp_metrics", "show", "127.0.0.1"]).output().unwrap();
            let text = stdout(&metrics);
            text.split("fo_cookie ").nth(1).map(|c| c.split_whitespace().next().unwrap().to_string())
        };
        let mut server = Server::start(&["--key-secret", s, "--rotate", "1h"]);
        run_tfo(&["send", &server.addr.to_string(), "--data", "cookie"]);
        server.next_connection();
        assert_eq!(cached_cookie().as_deref(), Some(&*expected), "tfo serve --key-secret");
        drop(server);

        let o = run_tfo(&["key", "apply", "--key-secret", s, "--rotate", "1h"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!stdout(&o).contains(keys["primary"].as_str().unwrap()), "apply never prints the keys");
        let sysctl = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fastopen_key").unwrap();
        let derived = derive(&secret, now);
        let sysctl_form = |k: &serde_json::Value| {
            let o = run_tfo(&["key", "derive", "--key-secret", s, "--at", &now.to_string(), "--sysctl", "--json"]);
            json(&o)[k.as_str().unwrap()].as_str().unwrap().to_string()
        };
        assert_eq!(sysctl.trim(), format!("{},{}", sysctl_form(&"primary".into()), sysctl_form(&"backup".into())));
        assert_eq!(derived["primary"], keys["primary"]);
        // A server without its own key now uses the namespace's: same cookie.
        Command::new("ip").args(["tcp_metrics", "flush", "all"]).status().unwrap();
        let mut plain = Server::start(&[]);
        run_tfo(&["send", &plain.addr.to_string(), "--data", "cookie"]);
        plain.next_connection();
        assert_eq!(cached_cookie().as_deref(), Some(&*expected), "the namespace's key after tfo key apply");
        let _ = std::fs::remove_dir_all(dir);
    });
}

/// A full stdout is exit 1 with a message, a closed one a quiet exit 0: never
/// a panic (one output path: `out::outln!`, `println!` denied in the CLI).
#[test]
fn a_full_or_closed_stdout_is_an_error_or_quiet_never_a_panic() {
    let commands: [&[&str]; 5] = [
        &["key", "generate"],
        &[
            "key",
            "cookie",
            "--key",
            "0123456789abcdef0123456789abcdef",
            "--client",
            "127.0.0.1",
            "--server",
            "127.0.0.1",
        ],
        &["doctor"],
        &["doctor", "--json"],
        &["wrap", "--", "true"],
    ];
    for args in commands {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let o = tfo().args(args).stdout(full).output().unwrap();
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if args[0] != "wrap" {
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains("writing to stdout"), "{args:?}: {err}");
        }
        // The reading end is closed before tfo starts, so its first write
        // meets EPIPE whatever the timing (a pipe closed after spawn could
        // already hold the whole output).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = tfo().args(args).stdout(writer).output().unwrap();
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
        assert_eq!(o.status.code(), Some(0), "{args:?}: a closed pipe ends quietly: {}", stderr(&o));
    }
}

/// A key anyone could guess (all zeros, one byte or a short pattern repeated)
/// is refused wherever a key enters, before anything changes: exit 2.
#[test]
fn guessable_keys_and_secrets_are_refused_everywhere() {
    in_netns("cli_weak_keys", 3, || {
        let dir = tempdir("weak-keys");
        let zero = dir.join("zero.key");
        write_key(&zero, "00000000000000000000000000000000\n");
        let pattern = dir.join("pattern.key");
        write_key(&pattern, "deadbeef-deadbeef-deadbeef-deadbeef\n");
        let secret = dir.join("weak.secret");
        write_key(&secret, "abababababababababababababababababab\n");
        let key_before = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fastopen_key").unwrap();
        let cases: Vec<Vec<String>> = vec![
            vec!["key".into(), "apply".into(), "--key-file".into(), zero.display().to_string()],
            vec!["key".into(), "apply".into(), "--key-file".into(), pattern.display().to_string()],
            vec!["key".into(), "rotate".into(), "--key-file".into(), zero.display().to_string()],
            vec!["serve".into(), "127.0.0.1:0".into(), "--key-file".into(), zero.display().to_string()],
            vec!["key".into(), "derive".into(), "--key-secret".into(), secret.display().to_string()],
            vec!["key".into(), "apply".into(), "--key-secret".into(), secret.display().to_string()],
        ];
        for args in cases {
            let o = tfo().args(&args).output().unwrap();
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
            assert!(stderr(&o).contains("anyone could guess"), "{args:?}: {}", stderr(&o));
        }
        assert_eq!(
            std::fs::read_to_string(&zero).unwrap(),
            "00000000000000000000000000000000\n",
            "rotate changed nothing"
        );
        assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fastopen_key").unwrap(), key_before);
    });
}

/// Output files (`trace --write`, `lab --write`, `bench --plot`) go through one
/// helper: a symlink planted by another user in a shared sticky directory is
/// refused, and the old file is kept until the new one is complete.
#[test]
fn output_files_refuse_planted_symlinks_and_keep_the_old_file_until_the_end() {
    if !fastopen_lab::testing::root_or_skip("cli_output_files") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let shared = tempdir("shared-sticky");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let precious = tempdir("precious").join("precious");
    std::fs::write(&precious, "root's file").unwrap();
    let planted = shared.join("out.pcap");
    std::os::unix::fs::symlink(&precious, &planted).unwrap();
    std::os::unix::fs::lchown(&planted, Some(65534), Some(65534)).unwrap();
    let o = run_tfo(&["trace", "--read", "/nonexistent.pcap", "--write", planted.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("symlink owned by another user"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "root's file");

    // A run that fails to read leaves the old output as it was.
    let keep = tempdir("keep").join("keep.pcap");
    std::fs::write(&keep, "an earlier capture").unwrap();
    let o = run_tfo(&["trace", "--read", "/nonexistent.pcap", "--write", keep.to_str().unwrap()]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "an earlier capture", "{}", stderr(&o));
    let leftovers = std::fs::read_dir(keep.parent().unwrap()).unwrap().count();
    assert_eq!(leftovers, 1, "no temporary file left behind");
}

/// Files a user names are read with a bound, and only when they are regular
/// files: a FIFO nobody writes to, /dev/zero or a huge file is refused at once.
#[test]
fn key_secret_and_target_files_are_read_bounded_and_never_block() {
    let dir = tempdir("bounded-reads");
    let fifo = dir.join("key.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let huge = dir.join("huge");
    std::fs::write(&huge, vec![b'#'; 40 << 20]).unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["key", "rotate", "--key-file", fifo.to_str().unwrap()], "not a regular file"),
        (
            &["key", "cookie", "--key-file", "/dev/zero", "--client", "127.0.0.1", "--server", "127.0.0.1"],
            "not a regular file",
        ),
        (&["key", "derive", "--key-secret", fifo.to_str().unwrap()], "not a regular file"),
        (&["key", "derive", "--key-secret", huge.to_str().unwrap()], "larger than 4096 bytes"),
        (&["probe", "--targets", huge.to_str().unwrap()], "larger than"),
        (&["probe", "--targets", fifo.to_str().unwrap()], "not a regular file"),
    ];
    for (args, want) in cases {
        let started = std::time::Instant::now();
        let o = run_tfo(args);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{args:?} blocked");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `key cookie --key -` reads the key from standard input (not visible in `ps`).
#[test]
fn key_cookie_reads_the_key_from_stdin() {
    use std::io::Write;
    let key = "0123456789abcdef0123456789abcdef";
    let by_arg = run_tfo(&["key", "cookie", "--key", key, "--client", "127.0.0.1", "--server", "127.0.0.1"]);
    let mut child = tfo()
        .args(["key", "cookie", "--key", "-", "--client", "127.0.0.1", "--server", "127.0.0.1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{key}\n").as_bytes()).unwrap();
    let by_stdin = child.wait_with_output().unwrap();
    assert!(by_stdin.status.success());
    assert_eq!(stdout(&by_stdin), stdout(&by_arg));
    assert_eq!(stdout(&by_arg).trim().len(), 16, "{}", stdout(&by_arg));
}

/// Without --key-file there is nothing to reload: SIGHUP does not end `tfo serve`.
#[test]
fn serve_without_a_key_file_survives_sighup() {
    in_netns("cli_sighup_no_key", 3, || {
        use std::io::BufRead;
        let mut server = Server::start(&[]);
        let pid = nix::unistd::Pid::from_raw(server.guard.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        let mut err = std::io::BufReader::new(server.guard.0.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("SIGHUP ignored"), "{line}");
        let addr = server.addr.to_string();
        assert!(run_tfo(&["send", &addr, "--data", "still here"]).status.success(), "still serving");
        assert!(server.guard.0.try_wait().unwrap().is_none());
    });
}

/// A port that no server listens on is a usage error, not a silent other port.
#[test]
fn load_refuses_ports_out_of_range_and_port_zero() {
    for target in ["http://127.0.0.1:65536/", "http://127.0.0.1:0/", "https://[::1]:99999/", "127.0.0.1:0"] {
        let o = run_tfo(&["load", target, "-n", "1"]);
        assert_eq!(o.status.code(), Some(2), "{target}: {}", stderr(&o));
        assert!(stderr(&o).contains("is not a server's port"), "{target}: {}", stderr(&o));
    }
}

/// `bench --plot` to a path that cannot be written fails before the bench runs.
#[test]
fn bench_plot_to_a_bad_path_fails_at_once() {
    if !fastopen_lab::testing::root_or_skip("cli_bench_plot") {
        return;
    }
    let started = std::time::Instant::now();
    let o = run_tfo(&["bench", "--rtt", "50ms", "--requests", "50", "--plot", "/nonexistent-dir/x.svg"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("nonexistent-dir"), "{}", stderr(&o));
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "it ran the bench first");
}

#[test]
fn completions_and_man_pages_come_from_the_same_definitions_as_help() {
    for (shell, marker) in [("bash", "_tfo()"), ("zsh", "#compdef tfo"), ("fish", "complete -c tfo")] {
        let o = run_tfo(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        assert!(script.contains(marker), "{shell}: {}", &script[..script.len().min(200)]);
        assert!(script.contains("read-first"), "{shell}: every flag is there");
    }
    assert_eq!(run_tfo(&["completions", "cmd.exe"]).status.code(), Some(2));
    let dir = tempdir("man");
    let o = run_tfo(&["man", "--out", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for sub in ["serve", "send", "trace", "wrap", "proxy", "probe", "watch"] {
        let page = std::fs::read_to_string(dir.join(format!("tfo-{sub}.1"))).unwrap();
        assert!(page.contains(&format!(".TH tfo-{sub} 1")), "tfo-{sub}.1: {}", &page[..page.len().min(120)]);
        assert!(page.contains(".SH NAME") && page.contains(".SH SYNOPSIS"), "tfo-{sub}.1");
    }
    assert!(std::fs::read_to_string(dir.join("tfo.1")).unwrap().contains(".SH SUBCOMMANDS"));
    assert!(!dir.join("tfo-lab-guard.1").exists(), "internal commands get no page");
    let _ = std::fs::remove_dir_all(&dir);
}

/// contrib/systemd/tfo-watch.service passes `systemd-analyze verify` (with
/// this build's tfo and its man pages), and runs `tfo watch` quietly.
#[test]
fn the_systemd_unit_verifies() {
    if !fastopen_lab::testing::have_tool("systemd_unit", "systemd-analyze") {
        return;
    }
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib/systemd/tfo-watch.service"))
        .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/tfo watch --quiet --prometheus"), "{unit}");
    assert!(unit.contains("DynamicUser=yes") && unit.contains("CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_PTRACE"));
    let dir = tempdir("systemd");
    std::fs::create_dir_all(dir.join("man/man1")).unwrap();
    assert!(run_tfo(&["man", "--out", dir.join("man/man1").to_str().unwrap()]).status.success());
    let here = dir.join("tfo-watch.service");
    std::fs::write(&here, unit.replace("/usr/local/bin/tfo", env!("CARGO_BIN_EXE_tfo"))).unwrap();
    let o = Command::new("systemd-analyze").arg("verify").arg(&here).env("MANPATH", dir.join("man")).output().unwrap();
    assert!(o.status.success() && o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
