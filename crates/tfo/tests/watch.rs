//! `tfo watch` against programs nobody here wrote (curl, Python) and plain
//! sockets: every connection reported with its role and outcome, short ones
//! included, agreeing with the kernel's counters.

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
        let mut watch = Guard(
            tfo()
                .args(["watch", "--json", "--interval", "200ms", "--duration", "6s"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut ready = String::new();
        BufReader::new(watch.0.stderr.take().unwrap()).read_line(&mut ready).unwrap();
        assert!(ready.contains("watching"), "{ready}");
        let before = counters();
        let curl = |tfo: bool| {
            let mut c = Command::new("curl");
            c.args(["-sS", "-o", "/dev/null"]);
            if tfo {
                c.arg("--tcp-fastopen");
            }
            assert!(c.arg(&url).status().unwrap().success());
        };
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
