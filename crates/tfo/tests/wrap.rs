//! `tfo wrap` and `tfo proxy` with real, unmodified programs (python3, curl,
//! nginx), each test in a private network namespace with tcp_fastopen=3. Every
//! outcome is checked twice: by tfo's report and by the kernel's counters.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{have_tool, in_netns, stderr, stdout, tfo, FastOpenCounters, Guard};

const BANNER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/banner.py");

fn counters() -> FastOpenCounters {
    FastOpenCounters::read().expect("TcpExt counters")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tfokit-wrap-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `tfo wrap --report FILE ARGS -- CMD...`: its output and the report's lines.
fn wrap(report: &std::path::Path, extra: &[&str], command: &[&str]) -> (Output, Vec<serde_json::Value>) {
    let out = tfo()
        .arg("wrap")
        .arg("--report")
        .arg(report)
        .args(extra)
        .arg("--")
        .args(command)
        .output()
        .expect("run tfo wrap");
    (out, report_lines(report))
}

fn report_lines(report: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(report)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Starts a server and waits until `port` accepts connections.
fn start(mut command: Command, port: u16) -> Guard {
    let child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start the server");
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server on port {port} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    guard
}

/// Stops a wrapped server with SIGTERM (tfo wrap passes it on) and returns its stderr.
fn stop(mut guard: Guard) -> (Option<i32>, String) {
    let pid = nix::unistd::Pid::from_raw(guard.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut err = String::new();
    if let Some(mut e) = guard.0.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).unwrap();
    }
    (guard.0.wait().unwrap().code(), err)
}

#[test]
fn python_client_and_python_http_server_both_wrapped() {
    if !have_tool("wrap_python", "python3") {
        return;
    }
    in_netns("wrap_python", 3, || {
        let dir = scratch("python");
        let server_report = dir.join("server.jsonl");
        let mut server = tfo();
        server.arg("wrap").arg("--report").arg(&server_report).args([
            "--",
            "python3",
            "-m",
            "http.server",
            "8123",
            "--bind",
            "127.0.0.1",
        ]);
        let server = start(server, 8123);
        let fetch = "import urllib.request; print(len(urllib.request.urlopen('http://127.0.0.1:8123/').read()))";
        // The start() probe connected without TFO; the first wrapped client asks for the cookie.
        let before = counters();
        let (first, lines) = wrap(&dir.join("c1.jsonl"), &[], &["python3", "-c", fetch]);
        assert!(first.status.success(), "{}", stderr(&first));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["fail_reason"], "cookie_unavailable", "{}", lines[0]);
        assert_eq!(lines[0]["process"], "python3");
        assert!(stderr(&first).contains("tfo wrap: 1 connection, 0 with data in the SYN; not: cookie_unavailable 1"));
        let (second, lines) = wrap(&dir.join("c2.jsonl"), &[], &["python3", "-c", fetch]);
        assert!(second.status.success(), "{}", stderr(&second));
        assert_eq!(stdout(&first), stdout(&second), "the same page both times");
        assert_eq!(
            (lines[0]["tfo_used"].as_bool(), lines[0]["role"].as_str()),
            (Some(true), Some("client")),
            "{}",
            lines[0]
        );
        assert_eq!(lines[0]["peer"], "127.0.0.1:8123");
        assert!(stderr(&second).contains("1 connection, 1 with data in the SYN"), "{}", stderr(&second));
        let d = &counters() - &before;
        assert_eq!((d.cookie_reqd, d.active, d.passive), (1, 1, 1), "{d:?}");

        let (code, err) = stop(server);
        assert_eq!(code, Some(128 + 15), "SIGTERM passed on, the status as a shell reports it: {err}");
        let served = report_lines(&server_report);
        let tfo_rows: Vec<_> = served.iter().filter(|l| l["tfo_used"] == true).collect();
        assert_eq!(tfo_rows.len(), 1, "{served:?}");
        assert_eq!(tfo_rows[0]["role"], "server");
        assert!(tfo_rows[0]["bytes_in_syn"].as_u64().unwrap() > 20, "the request rode in the SYN: {}", tfo_rows[0]);
        assert!(err.contains("with data in the SYN"), "{err}");
    });
}

#[test]
fn curl_without_its_tfo_flag_gets_tfo_and_its_peer_address() {
    if !have_tool("wrap_curl", "curl") || !have_tool("wrap_curl", "nginx") {
        return;
    }
    in_netns("wrap_curl", 3, || {
        let listen = ["127.0.0.1:8124 fastopen=256".to_string(), "[::1]:8124 fastopen=256".to_string()];
        let Some(_nginx) = fastopen_lab::testing::Nginx::start("wrap_curl", &listen, "", "hello from nginx\n") else {
            return;
        };
        let dir = scratch("curl");
        // curl connects non-blocking and asks getpeername() for %{remote_ip}:
        // both must look as they do without the wrap.
        let curl = ["curl", "-sS", "-w", " %{remote_ip}:%{remote_port}", "http://127.0.0.1:8124/"];
        let before = counters();
        for (i, want) in [(1, false), (2, true), (3, true)] {
            let (out, lines) = wrap(&dir.join(format!("{i}.jsonl")), &[], &curl);
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(stdout(&out), "hello from nginx\n 127.0.0.1:8124", "{}", stderr(&out));
            assert!(!stderr(&out).contains("getpeername"), "{}", stderr(&out));
            assert_eq!(lines[0]["tfo_used"].as_bool(), Some(want), "{}", lines[0]);
            assert_eq!(lines[0]["process"], "curl");
        }
        let d = &counters() - &before;
        assert_eq!((d.cookie_reqd, d.active, d.passive), (1, 2, 2), "{d:?}");
        // IPv6 alike: the cookie for ::1, then the request in the SYN.
        let curl6 = ["curl", "-sS", "-g", "-w", " %{remote_ip}", "http://[::1]:8124/"];
        for (i, want) in [(4, false), (5, true)] {
            let (out, lines) = wrap(&dir.join(format!("{i}.jsonl")), &[], &curl6);
            assert_eq!(stdout(&out), "hello from nginx\n ::1", "{}", stderr(&out));
            assert_eq!(
                (lines[0]["tfo_used"].as_bool(), lines[0]["peer"].as_str()),
                (Some(want), Some("[::1]:8124")),
                "{}",
                lines[0]
            );
        }
        // curl's own TFO (--tcp-fastopen) is left alone, and reported.
        let before = counters();
        let own = ["curl", "-sS", "--tcp-fastopen", "http://127.0.0.1:8124/"];
        let (out, lines) = wrap(&dir.join("own.jsonl"), &[], &own);
        assert_eq!(stdout(&out), "hello from nginx\n", "{}", stderr(&out));
        assert_eq!((lines.len(), lines[0]["tfo_used"].as_bool()), (1, Some(true)), "{lines:?}");
        assert_eq!((&counters() - &before).active, 1);
        // --exclude-ports leaves it alone: no TFO attempt at all.
        let before = counters();
        let (out, lines) = wrap(&dir.join("x.jsonl"), &["--exclude-ports", "8124"], &curl);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(lines.is_empty(), "{lines:?}");
        assert!(stderr(&out).contains("0 connections"), "{}", stderr(&out));
        let d = &counters() - &before;
        assert_eq!(d.active, 0, "{d:?}");
    });
}

#[test]
fn read_first_clients_get_the_banner_with_a_cookie_cached() {
    if !have_tool("wrap_banner", "python3") {
        return;
    }
    in_netns("wrap_banner", 3, || {
        let mut server = Command::new("python3");
        server.args([BANNER, "server", "2525", "100"]);
        let _server = start(server, 2525);
        let dir = scratch("banner");
        // The first connection caches the cookie (it reads first, so the SYN asks and carries nothing).
        let (out, lines) = wrap(&dir.join("0.jsonl"), &[], &["timeout", "10", "python3", BANNER, "blocking", "2525"]);
        assert_eq!(stdout(&out).trim(), "220 banner", "{}", stderr(&out));
        assert_eq!(lines[0]["fail_reason"], "cookie_unavailable");
        // Now connect() is deferred: each client must still read its banner, in a cookie SYN without data.
        // `shared`'s socket is closed three times (in a forked child, a dup, the parent): reported once.
        for (i, kind) in ["blocking", "asyncio", "select", "fork", "shared"].iter().enumerate() {
            let before = counters();
            let started = Instant::now();
            let (out, lines) =
                wrap(&dir.join(format!("{i}.jsonl")), &[], &["timeout", "10", "python3", BANNER, kind, "2525"]);
            assert!(started.elapsed() < Duration::from_secs(9), "{kind}: waited for its timeout");
            assert_eq!(stdout(&out).trim(), "220 banner", "{kind}: {}", stderr(&out));
            assert_eq!(lines.len(), 1, "{kind}: {lines:?}");
            assert_eq!(lines[0]["cookie_only_syn"], true, "{kind}: {}", lines[0]);
            assert!(
                stderr(&out).contains("1 read-first with the cookie: the greeting a round trip sooner"),
                "{kind}: {}",
                stderr(&out)
            );
            let d = &counters() - &before;
            // The server's kernel took the cookie SYN: a TFO connection (passive), without data (no active).
            assert_eq!((d.passive, d.active, d.cookie_reqd), (1, 0, 0), "{kind}: {d:?}");
        }
    });
}

#[test]
fn a_setuid_program_of_another_user_is_named_not_silently_unwrapped() {
    if !fastopen_lab::testing::root_or_skip("wrap_setuid") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("setuid");
    let program = dir.join("true");
    std::fs::copy("/bin/true", &program).unwrap();
    std::os::unix::fs::chown(&program, Some(65534), None).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = tfo().arg("wrap").arg("--").arg(&program).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "it still runs: {}", stderr(&out));
    assert!(stderr(&out).contains("is setuid or setgid: the loader ignores LD_PRELOAD"), "{}", stderr(&out));
    assert!(stderr(&out).contains("tfo proxy"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn usage_errors_and_exit_statuses() {
    let out = tfo().args(["wrap", "--", "no-such-command-tfokit"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no such command"), "{}", stderr(&out));
    let out = tfo().args(["wrap", "--ports", "80,eighty", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a port list"), "{}", stderr(&out));
    let out = tfo().args(["wrap"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = tfo().args(["wrap", "--quiet", "--", "sh", "-c", "exit 7"]).output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stderr(&out), "", "--quiet");
    let out = tfo().args(["wrap", "--", "sh", "-c", "kill -9 $$"]).output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 9));
    let out = tfo().args(["wrap", "--json", "--", "true"]).output().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!((summary["connections"].as_u64(), summary["shim_loaded"].as_bool()), (Some(0), Some(true)), "{summary}");
}

/// A running `tfo proxy --json` and its lines.
struct Proxy {
    _guard: Guard,
    lines: BufReader<std::process::ChildStdout>,
}

impl Proxy {
    fn start(listen: &str, upstream: &str, extra: &[&str]) -> Proxy {
        let mut child = tfo()
            .args(["proxy", listen, upstream, "--json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tfo proxy");
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let guard = Guard(child);
        let first = Proxy::read(&mut lines);
        assert_eq!(first["event"], "listening", "{first}");
        Proxy { _guard: guard, lines }
    }

    fn read(lines: &mut BufReader<std::process::ChildStdout>) -> serde_json::Value {
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }

    fn next(&mut self) -> serde_json::Value {
        Proxy::read(&mut self.lines)
    }
}

#[test]
fn plain_curl_through_the_proxy_to_nginx_fastopen() {
    if !have_tool("proxy_nginx", "curl") || !have_tool("proxy_nginx", "nginx") {
        return;
    }
    in_netns("proxy_nginx", 3, || {
        let listen = ["127.0.0.1:8125 fastopen=256".to_string()];
        let Some(_nginx) = fastopen_lab::testing::Nginx::start("proxy_nginx", &listen, "", "hello from nginx\n") else {
            return;
        };
        let mut proxy = Proxy::start("127.0.0.1:8080", "127.0.0.1:8125", &["--first-data-wait", "2s"]);
        // (A long wait: curl's request follows its handshake, however loaded the machine.)
        let curl = || Command::new("curl").args(["-sS", "http://127.0.0.1:8080/"]).output().unwrap();
        let first = curl();
        assert_eq!(stdout(&first), "hello from nginx\n", "{}", stderr(&first));
        let line = proxy.next();
        assert_eq!(line["upstream_fail_reason"], "cookie_unavailable", "{line}");
        let before = counters();
        for _ in 0..3 {
            assert_eq!(stdout(&curl()), "hello from nginx\n");
            let line = proxy.next();
            assert_eq!(
                (line["upstream_tfo_used"].as_bool(), line["client_tfo_used"].as_bool()),
                (Some(true), Some(false)),
                "{line}"
            );
            assert_eq!(line["end"], "closed");
            assert!(line["first_data"].as_u64().unwrap() > 20, "curl's request rode to nginx in the SYN: {line}");
        }
        let d = &counters() - &before;
        // Each request: one TFO connection proxy -> nginx (active and passive), curl -> proxy plain.
        assert_eq!((d.active, d.passive), (3, 3), "{d:?}");
    });
}

#[test]
fn a_banner_upstream_speaks_first_through_the_proxy() {
    if !have_tool("proxy_banner", "python3") {
        return;
    }
    in_netns("proxy_banner", 3, || {
        let mut server = Command::new("python3");
        server.args([BANNER, "server", "2526", "10"]);
        let _server = start(server, 2526);
        let mut proxy = Proxy::start("127.0.0.1:2527", "127.0.0.1:2526", &[]);
        for _ in 0..2 {
            let out = Command::new("timeout").args(["10", "python3", BANNER, "blocking", "2527"]).output().unwrap();
            assert_eq!(stdout(&out).trim(), "220 banner", "{}", stderr(&out));
            let line = proxy.next();
            assert_eq!((line["first_data"].as_u64(), line["end"].as_str()), (Some(0), Some("closed")), "{line}");
            assert_eq!(line["bytes_to_client"], 12, "{line}");
        }
    });
}

#[test]
fn past_max_connections_the_proxy_holds_new_ones_until_one_ends() {
    use std::io::{Read, Write};
    in_netns("proxy_limit", 3, || {
        let server = common::Server::start(&[]);
        let _proxy = Proxy::start("127.0.0.1:2528", &server.addr.to_string(), &["--max-connections", "1"]);
        let echo = |c: &mut std::net::TcpStream, what: &[u8]| {
            c.write_all(what).unwrap();
            let mut got = vec![0u8; what.len()];
            c.read_exact(&mut got).map(|()| got)
        };
        let mut first = std::net::TcpStream::connect("127.0.0.1:2528").unwrap();
        first.set_read_timeout(Some(Duration::from_secs(5))).unwrap(); // a failure, never a hang
        assert_eq!(echo(&mut first, b"one\n").unwrap(), b"one\n");
        let mut second = std::net::TcpStream::connect("127.0.0.1:2528").unwrap();
        second.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let held = echo(&mut second, b"two\n");
        assert!(held.is_err(), "the second connection waits while the first is open: {held:?}");
        drop(first);
        second.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = [0u8; 4];
        second.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"two\n", "served once the first ended");
    });
}
