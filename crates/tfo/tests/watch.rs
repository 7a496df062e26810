//! `tfo watch` against programs nobody here wrote (curl, Python, nginx,
//! Prometheus) and plain sockets: every connection reported with its role
//! and outcome, short ones included, agreeing with the kernel's counters;
//! the cookie cache agreeing with `ip tcp_metrics`; the metrics as a real
//! Prometheus server scrapes them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const PYTHON_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.sendto(b"GET /py HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", socket.MSG_FASTOPEN, ("127.0.0.1", int(sys.argv[1])))
while s.recv(65536):
    pass
"#;

#[test]
fn watch_reports_every_connection_with_its_role_and_outcome() {
    if !have_tool("watch", "curl") || !have_tool("watch", "python3") {
        return;
    }
    in_netns("watch", 3, || {
        let server = Server::start(&["--http"]);
        let port = server.addr.port().to_string();
        let url = format!("http://{}/", server.addr);
        let mut watch = start_watch(&["--json", "--interval", "200ms", "--duration", "6s"]);
        let before = counters();
        let curl = |tfo: bool| curl(&url, tfo);
        curl(true); // cold: asks for a cookie
        curl(true); // warm: the request in the SYN
        curl(false); // plain
        let py = Command::new("python3").args(["-c", PYTHON_CLIENT, &port]).status().unwrap();
        assert!(py.success());
        // 50 connections of about a millisecond, closed between two reads.
        let short: Vec<u16> = (0..50)
            .map(|_| {
                let s = std::net::TcpStream::connect(server.addr).unwrap();
                let port = s.local_addr().unwrap().port();
                drop(s);
                port
            })
            .collect();
        // One that stays open across a read: its process is known.
        let held = std::net::TcpStream::connect(server.addr).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        // TFO off for clients in this namespace.
        fastopen_lab::netns::set_sysctl("net.ipv4.tcp_fastopen", "2").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        curl(true);
        let d = &counters() - &before;
        let held_port = held.local_addr().unwrap().port();
        let out = watch.0.wait_with_output_bounded();
        drop(held);
        let lines: Vec<serde_json::Value> =
            stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        let clients: Vec<&serde_json::Value> = lines.iter().filter(|l| l["role"] == "client").collect();
        let servers: Vec<&serde_json::Value> = lines.iter().filter(|l| l["role"] == "server").collect();
        assert_eq!(clients.len(), 56, "3 curl, python, 50 short, the held one, curl with TFO off: {lines:#?}");
        assert_eq!(servers.len(), 56, "{lines:#?}");
        let reason = |c: &serde_json::Value| c["fail_reason"].as_str().unwrap_or("tfo").to_string();
        let reasons: Vec<String> = clients.iter().map(|c| reason(c)).collect();
        let port_of =
            |c: &serde_json::Value| c["local"].as_str().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap();
        // curl cold, warm and plain, python with the cached cookie, curl with TFO off (the
        // order of lines may differ: a connection is reported when a read or its end shows it).
        let mut tools: Vec<String> = clients
            .iter()
            .filter(|c| !short.contains(&port_of(c)) && port_of(c) != held_port)
            .map(|c| reason(c))
            .collect();
        tools.sort();
        assert_eq!(tools, ["client_disabled", "cookie_unavailable", "not_requested", "tfo", "tfo"], "{clients:#?}");
        for port in &short {
            let line = clients.iter().find(|c| c["local"].as_str().unwrap().ends_with(&format!(":{port}")));
            assert!(line.is_some(), "the 1 ms connection from port {port} was missed");
        }
        let held_line =
            clients.iter().find(|c| c["local"].as_str().unwrap().ends_with(&format!(":{held_port}"))).unwrap();
        assert_eq!(held_line["pid"].as_u64(), Some(u64::from(std::process::id())), "{held_line}");
        assert_eq!(held_line["seen"], "open", "{held_line}");
        // The kernel agrees.
        let tfo_clients = clients.iter().filter(|c| c["tfo_used"] == true).count() as u64;
        let tfo_servers = servers.iter().filter(|c| c["tfo_used"] == true).count() as u64;
        let cookie_asks = reasons.iter().filter(|r| **r == "cookie_unavailable").count() as u64;
        assert_eq!((d.active, d.passive, d.cookie_reqd), (tfo_clients, tfo_servers, cookie_asks), "{d:?}");
        assert_eq!(tfo_clients, 2);
    });
}

/// A read-first client's cookie SYN without data: the server's row says so
/// (`cookie_only_syn`), and the kernel counts a passive TFO connection.
#[test]
fn watch_names_the_server_side_of_a_cookie_only_syn() {
    in_netns("watch_cookie_only", 3, || {
        let server = Server::start(&["--banner", "220 ready"]);
        let addr = server.addr.to_string();
        let mut watch = start_watch(&["--json", "--interval", "200ms", "--duration", "3s", "--role", "server"]);
        let before = counters();
        for _ in 0..2 {
            let o = run_tfo(&["send", "--read-first", &addr]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let d = &counters() - &before;
        let out = watch.0.wait_with_output_bounded();
        let rows = json_lines(&stdout(&out));
        let flags: Vec<bool> = rows.iter().map(|r| r["cookie_only_syn"].as_bool().unwrap()).collect();
        assert_eq!(flags.len(), 2, "{rows:#?}");
        assert_eq!(flags.iter().filter(|f| **f).count(), 1, "the second connection's SYN had the cookie: {rows:#?}");
        assert_eq!(d.passive, 1, "{d:?}");
    });
}

/// `tfo watch ARGS`, once it says it is watching.
fn start_watch(args: &[&str]) -> Guard {
    let mut watch = Guard(tfo().arg("watch").args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    // The backend's line, then "watching": from then on every connection counts.
    let mut stderr = BufReader::new(watch.0.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("watching") {
        let n = stderr.read_line(&mut said).unwrap();
        assert!(n > 0 && said.lines().count() < 5, "{said}");
    }
    watch
}

/// `curl URL`, with `--tcp-fastopen` if `tfo`; it must succeed.
fn curl(url: &str, tfo: bool) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-o", "/dev/null", "--max-time", "10"]);
    if tfo {
        c.arg("--tcp-fastopen");
    }
    assert!(c.arg(url).status().unwrap().success(), "curl {url}");
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn watch_sees_curl_against_nginx_and_the_cookie_cache_agrees_with_ip_tcp_metrics() {
    if !have_tool("watch_nginx", "curl") {
        return;
    }
    in_netns("watch_nginx", 3, || {
        let listen = ["127.0.0.1:8090 fastopen=256".to_string()];
        let Some(_nginx) = fastopen_lab::testing::Nginx::start("watch_nginx", &listen, "", "hello\n") else {
            return;
        };
        let url = "http://127.0.0.1:8090/";
        let mut watch = start_watch(&["--json", "--interval", "200ms", "--duration", "3s", "--port", "8090"]);
        let before = counters();
        curl(url, true); // cold: asks for a cookie
        curl(url, true); // warm: the request in the SYN
        curl(url, false); // plain
        let d = &counters() - &before;
        let lines = json_lines(&stdout(&watch.0.wait_with_output_bounded()));
        let outcomes = |role: &str| {
            let mut o: Vec<String> = lines
                .iter()
                .filter(|l| l["role"] == role)
                .map(|l| match (l["tfo_used"].as_bool().unwrap(), l["fail_reason"].as_str()) {
                    (true, _) => "tfo".to_string(),
                    (false, reason) => reason.unwrap_or("no_tfo").to_string(),
                })
                .collect();
            o.sort();
            o
        };
        assert_eq!(outcomes("client"), ["cookie_unavailable", "not_requested", "tfo"], "{lines:#?}");
        assert_eq!(outcomes("server"), ["no_tfo", "no_tfo", "tfo"], "{lines:#?}");
        assert_eq!((d.active, d.passive, d.cookie_reqd), (1, 1, 1), "the kernel agrees: {d:?}");

        // The cookie nginx gave is in the cache, as `ip tcp_metrics` shows it too.
        let cache = json_lines(&stdout(&run_tfo(&["watch", "--cookies", "--json"])));
        let entry = cache.iter().find(|e| e["peer"] == "127.0.0.1").unwrap_or_else(|| panic!("{cache:#?}"));
        let cookie = entry["cookie"].as_str().expect("a cookie").to_string();
        assert_eq!(cookie.len(), 16, "an 8-byte cookie: {entry}");
        assert_eq!((entry["data_in_syn"].as_bool(), entry["fail_reason"].as_str()), (Some(true), None), "{entry}");
        let ip = Command::new("ip").args(["tcp_metrics", "show", "127.0.0.1"]).output().unwrap();
        let ip = String::from_utf8_lossy(&ip.stdout);
        assert!(ip.contains(&format!("fo_cookie {cookie}")), "ip tcp_metrics: {ip}");
        let text = stdout(&run_tfo(&["watch", "--cookies"]));
        assert!(text.lines().any(|l| l.starts_with("127.0.0.1 ") && l.ends_with("data in the SYN")), "{text}");

        // Client TFO off: the cookie stays, but the next connection will not use it.
        fastopen_lab::netns::set_sysctl("net.ipv4.tcp_fastopen", "2").unwrap();
        let cache = json_lines(&stdout(&run_tfo(&["watch", "--cookies", "--json"])));
        let entry = cache.iter().find(|e| e["peer"] == "127.0.0.1").unwrap();
        assert_eq!(
            (entry["data_in_syn"].as_bool(), entry["fail_reason"].as_str()),
            (Some(false), Some("client_disabled"))
        );
        // And a destination never given a cookie.
        Command::new("ip").args(["tcp_metrics", "flush", "all"]).status().unwrap();
        fastopen_lab::netns::set_sysctl("net.ipv4.tcp_fastopen", "3").unwrap();
        curl(url, false);
        let cache = json_lines(&stdout(&run_tfo(&["watch", "--cookies", "--json"])));
        let entry = cache.iter().find(|e| e["peer"] == "127.0.0.1").unwrap_or_else(|| panic!("{cache:#?}"));
        assert_eq!((entry["cookie"].as_str(), entry["fail_reason"].as_str()), (None, Some("cookie_unavailable")));
    });
}

/// The exporter as a real Prometheus server sees it: the test starts
/// Debian's `prometheus` in the namespace, scraping `tfo watch --prometheus`
/// every 500 ms, and asks its HTTP API for the series.
#[test]
fn a_real_prometheus_scrapes_the_watch() {
    if !have_tool("watch_prometheus", "prometheus") || !have_tool("watch_prometheus", "curl") {
        return;
    }
    in_netns("watch_prometheus", 3, || {
        let server = Server::start(&["--http"]);
        let url = format!("http://{}/", server.addr);
        // Only the server's port: Prometheus's own connections are not counted.
        let port = server.addr.port().to_string();
        let _watch = start_watch(&[
            "--prometheus",
            "127.0.0.1:9477",
            "--port",
            &port,
            "--interval",
            "200ms",
            "--duration",
            "60s",
        ]);
        curl(&url, true); // cold
        curl(&url, true); // warm
        curl(&url, false); // plain
        let dir = tempdir("watch_prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n\
             scrape_configs:\n  - job_name: tfo\n    static_configs:\n      - targets: ['127.0.0.1:9477']\n",
        )
        .unwrap();
        let _prometheus = Guard(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .args(["--web.listen-address=127.0.0.1:9090", "--log.level=warn"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let query = |q: &str| -> Vec<serde_json::Value> {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "2", "http://127.0.0.1:9090/api/v1/query", "--data-urlencode"])
                .arg(format!("query={q}"))
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v["data"]["result"].as_array().cloned().unwrap_or_default()
        };
        let value = |r: &serde_json::Value| r["value"][1].as_str().unwrap_or("").parse::<f64>().unwrap_or(-1.0);
        // Two scrapes of the series, then their values.
        let deadline = std::time::Instant::now() + Duration::from_secs(45);
        loop {
            let scrapes = query("count_over_time(tfo_kernel_passive_total[1m])");
            if scrapes.first().map(value).is_some_and(|n| n >= 2.0) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "Prometheus never scraped the watch twice: {scrapes:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
        let one = |q: &str| query(q).first().map(value);
        assert_eq!(one("tfo_kernel_passive_total"), Some(1.0));
        assert_eq!(one("tfo_kernel_active_total"), Some(1.0));
        assert_eq!(one("tfo_kernel_cookie_reqd_total"), Some(1.0));
        assert_eq!(one("tfo_connections_total{role=\"client\",outcome=\"tfo\"}"), Some(1.0));
        // The series name the processes: curl (BPF, at connect) and the server (its listener's).
        assert_eq!(one("tfo_connections_total{role=\"client\",outcome=\"tfo\",process=\"curl\"}"), Some(1.0));
        assert_eq!(one("sum(tfo_connections_total{role=\"server\",process=\"tfo\"})"), Some(3.0));
        assert_eq!(one("tfo_connections_total{role=\"client\",outcome=\"cookie_unavailable\"}"), Some(1.0));
        assert_eq!(one("tfo_connections_total{role=\"client\",outcome=\"not_requested\"}"), Some(1.0));
        assert_eq!(one("tfo_connections_total{role=\"server\",outcome=\"tfo\"}"), Some(1.0));
        assert_eq!(one("tfo_connections_total{role=\"server\",outcome=\"no_tfo\"}"), Some(2.0));
        assert_eq!(one("tfo_cookie_cache_destinations"), Some(1.0));
        assert_eq!(one("up{job=\"tfo\"}"), Some(1.0));
        let _ = std::fs::remove_dir_all(&dir);
    });
}

trait WaitBounded {
    fn wait_with_output_bounded(&mut self) -> std::process::Output;
}

impl WaitBounded for std::process::Child {
    /// Waits for a child that ends on its own (`--duration`); kills it after 30 s.
    fn wait_with_output_bounded(&mut self) -> std::process::Output {
        use std::io::Read;
        let mut out = self.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut o = Vec::new();
            let _ = out.read_to_end(&mut o);
            o
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.kill();
                panic!("tfo watch did not stop after --duration");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        std::process::Output { status, stdout: reader.join().unwrap(), stderr: Vec::new() }
    }
}

/// Ctrl-C or SIGTERM ends `tfo watch` cleanly: exit 0, its summary, no
/// "Interrupted system call" (a signal during the wait for notifications).
#[test]
fn watch_ends_cleanly_on_sigint_and_sigterm() {
    in_netns("watch_signals", 3, || {
        for signal in [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM] {
            let mut watch = start_watch(&[]);
            std::thread::sleep(Duration::from_millis(300));
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(watch.0.id() as i32), signal).unwrap();
            let out = watch.0.wait_with_output_bounded();
            assert_eq!(out.status.code(), Some(0), "{signal}: {}", stderr(&out));
            assert!(!stderr(&out).contains("Interrupted system call"), "{signal}: {}", stderr(&out));
        }
    });
}

/// What the service files promise (contrib/systemd, contrib/kubernetes): `tfo
/// watch --quiet --prometheus` runs as an unprivileged user with only
/// CAP_NET_ADMIN and CAP_SYS_PTRACE, and serves its metrics.
#[test]
fn the_exporter_runs_with_the_two_capabilities_the_service_files_give_it() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib");
    let unit = std::fs::read_to_string(format!("{root}/systemd/tfo-watch.service")).unwrap();
    let daemonset = std::fs::read_to_string(format!("{root}/kubernetes/tfo-watch-daemonset.yaml")).unwrap();
    assert!(unit.contains("AmbientCapabilities=CAP_NET_ADMIN CAP_SYS_PTRACE"), "{unit}");
    assert!(daemonset.contains(r#"add: ["NET_ADMIN", "SYS_PTRACE"]"#) && daemonset.contains(r#"drop: ["ALL"]"#));
    assert!(daemonset.contains(r#"args: ["watch", "--quiet", "--prometheus", "0.0.0.0:9477"]"#));
    assert!(daemonset.contains("hostNetwork: true") && daemonset.contains("prometheus.io/scrape"));
    if !have_tool("exporter_caps", "setpriv") {
        return;
    }
    in_netns("exporter_caps", 3, || {
        let caps = "-all,+net_admin,+sys_ptrace";
        let mut watch = Guard(
            Command::new("setpriv")
                .args([
                    &format!("--bounding-set={caps}"),
                    &format!("--inh-caps={caps}"),
                    &format!("--ambient-caps={caps}"),
                ])
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_tfo"))
                .args(["watch", "--quiet", "--prometheus", "127.0.0.1:9477", "--duration", "5s"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // Without CAP_BPF the backend falls back to sock_diag, and says so first.
        let mut err = BufReader::new(watch.0.stderr.take().unwrap());
        let mut ready = String::new();
        while !ready.contains("metrics on") {
            assert!(err.read_line(&mut ready).unwrap() > 0 && ready.lines().count() < 5, "{ready}");
        }
        assert!(ready.contains("backend sock-diag"), "{ready}");
        let mut s = std::net::TcpStream::connect("127.0.0.1:9477").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut s, &mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200") && body.contains("tfo_"), "{body}");
        let out = watch.0.wait_with_output_bounded();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stdout(&out).is_empty(), "--quiet: no line per connection: {}", stdout(&out));
    });
}

/// Short connections, named whoever closes first: curl and python3 on the
/// client side (one of them resetting), nginx on the server side. The BPF
/// backend names every row; the sock_diag fallback names the server side by
/// its listener and cannot name a client gone before a read.
#[test]
fn watch_names_the_processes_of_short_connections_in_both_backends() {
    if !have_tool("watch_names", "curl") || !have_tool("watch_names", "python3") {
        return;
    }
    in_netns("watch_names", 3, || {
        let listen = ["127.0.0.1:8091 fastopen=256".to_string()];
        let Some(_nginx) = fastopen_lab::testing::Nginx::start("watch_names", &listen, "", "hello\n") else {
            return;
        };
        let reset = "import socket, struct\ns = socket.create_connection(('127.0.0.1', 8091))\n\
                     s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\ns.close()\n";
        for backend in ["bpf", "sock-diag"] {
            // No --port: the kernel clears an aborted socket's addresses before
            // its last notification (peer 0.0.0.0:0), so no port would match the
            // reset one. This namespace has no other connections.
            let mut watch = start_watch(&["--json", "--interval", "1s", "--duration", "2500ms", "--backend", backend]);
            curl("http://127.0.0.1:8091/", true);
            curl("http://127.0.0.1:8091/", false);
            assert!(Command::new("python3").args(["-c", reset]).status().unwrap().success());
            let out = watch.0.wait_with_output_bounded();
            let lines = json_lines(&stdout(&out));
            let rows = |role: &str| lines.iter().filter(|l| l["role"] == role).collect::<Vec<_>>();
            assert_eq!((rows("client").len(), rows("server").len()), (3, 3), "{backend}: {lines:#?}");
            for server in rows("server") {
                assert_eq!(server["process"], "nginx", "{backend}: {server}");
            }
            let mut clients: Vec<String> =
                rows("client").iter().map(|c| c["process"].as_str().unwrap_or("-").to_string()).collect();
            clients.sort();
            if backend == "bpf" {
                assert_eq!(clients, ["curl", "curl", "python3"], "{lines:#?}");
                assert!(rows("client").iter().all(|c| c["named_by"] == "bpf"), "{lines:#?}");
            } else {
                // Gone before a read: the fallback has no name for them.
                assert!(clients.iter().all(|c| c == "-"), "{lines:#?}");
            }
        }
    });
}

/// 5000 connections from `tfo load` against nginx: every one seen on both
/// sides, and every one named (the client by BPF, the server by its listener).
#[test]
fn watch_names_all_of_five_thousand_connections_with_bpf() {
    in_netns("watch_names_load", 3, || {
        let listen = ["127.0.0.1:8092 fastopen=256".to_string()];
        let Some(_nginx) = fastopen_lab::testing::Nginx::start("watch_names_load", &listen, "", "hello\n") else {
            return;
        };
        // Lines to a file: a pipe read only at the end would fill and stall it.
        let dir = tempdir("watch_names_load");
        let rows = dir.join("rows.jsonl");
        let mut watch = Guard(
            tfo()
                .args(["watch", "--json", "--interval", "1s", "--port", "8092", "--backend", "bpf"])
                .stdout(std::fs::File::create(&rows).unwrap())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut err = BufReader::new(watch.0.stderr.take().unwrap());
        let mut said = String::new();
        while !said.contains("watching") {
            assert!(err.read_line(&mut said).unwrap() > 0 && said.lines().count() < 5, "{said}");
        }
        let load = run_tfo(&["load", "http://127.0.0.1:8092/", "-n", "5000", "-c", "16", "--json"]);
        assert!(load.status.success(), "{}", stderr(&load));
        std::thread::sleep(std::time::Duration::from_millis(1500));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(watch.0.id() as i32), nix::sys::signal::Signal::SIGINT)
            .unwrap();
        assert_eq!(watch.0.wait().unwrap().code(), Some(0));
        let mut summary = String::new();
        std::io::Read::read_to_string(&mut err, &mut summary).unwrap();
        assert!(summary.contains("overflowed 0 times"), "{summary}");
        let lines = json_lines(&std::fs::read_to_string(&rows).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
        let named = |role: &str, name: &str| lines.iter().filter(|l| l["role"] == role && l["process"] == name).count();
        assert_eq!(named("client", "tfo"), 5000, "every client row named tfo");
        assert_eq!(named("server", "nginx"), 5000, "every server row named nginx");
    });
}
