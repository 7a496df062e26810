//! `tfo probe` against real servers: names with several addresses (an
//! /etc/hosts of the test's own namespace), nginx over TLS with a private CA,
//! and 200 targets in one run, some broken each way. Each claim is checked
//! against the namespace's kernel counters or the kind of breakage built.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use fastopen::FastOpenCounters;
use fastopen_lab::netns::LoneNetns;
use fastopen_lab::testing::{root_or_skip, Nginx};
use serde_json::Value;

const TFO: &str = env!("CARGO_BIN_EXE_tfo");

/// `tfo ARGS` inside `ns` through `ip netns exec`, so it sees the
/// namespace's /etc/hosts.
fn probe_in(ns: &LoneNetns, args: &[&str]) -> Output {
    ns.command(TFO).arg("probe").args(args).output().expect("run tfo probe")
}

/// The JSON lines of a run: the reports, and the summary if there is one.
fn lines(o: &Output) -> (Vec<Value>, Option<Value>) {
    let mut reports = Vec::new();
    let mut summary = None;
    for line in stdout(o).lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}\n{}", stderr(o)));
        match v.get("summary") {
            Some(s) => summary = Some(s.clone()),
            None => reports.push(v),
        }
    }
    (reports, summary)
}

fn servers(reports: &[Value]) -> Vec<String> {
    let mut s: Vec<String> = reports.iter().map(|r| r["server"].as_str().unwrap_or("-").to_string()).collect();
    s.sort();
    s
}

fn counters_in(ns: &LoneNetns) -> FastOpenCounters {
    ns.run(counters).expect("enter the namespace")
}

#[test]
fn a_name_is_probed_at_every_address_each_with_its_verdict() {
    if !root_or_skip("probe_names") {
        return;
    }
    let mut ns = LoneNetns::create("names", 3).expect("namespace");
    ns.set_hosts("127.0.0.1 localhost\n::1 localhost\n127.0.0.1 dual.tfokit.test\n::1 dual.tfokit.test\n").unwrap();
    // One dual-stack server: [::] takes IPv4 connections too.
    let _server = ns.run(|| Server::start_on("[::]:7000", &[])).unwrap();

    let before = counters_in(&ns);
    let o = probe_in(&ns, &["dual.tfokit.test:7000", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let (reports, summary) = lines(&o);
    assert_eq!(servers(&reports), ["127.0.0.1:7000", "[::1]:7000"], "{reports:?}");
    for r in &reports {
        assert_eq!((r["target"].as_str(), r["diagnosis"].as_str()), (Some("dual.tfokit.test:7000"), Some("works")));
    }
    let summary = summary.expect("a summary line after several addresses");
    assert_eq!((summary["addresses"].as_u64(), summary["works"].as_u64()), (Some(2), Some(2)), "{summary}");
    // The kernel agrees: one cookie asked for and one SYN with data accepted, per address.
    let d = &counters_in(&ns) - &before;
    assert_eq!((d.cookie_reqd, d.passive, d.active), (2, 2, 2), "{d:?}");

    // One family: one address, one JSON object and no summary.
    for (flag, name, want) in
        [("-4", "dual.tfokit.test:7000", "127.0.0.1:7000"), ("-6", "localhost:7000", "[::1]:7000")]
    {
        let o = probe_in(&ns, &[name, flag, "--json"]);
        assert_eq!(o.status.code(), Some(0), "{flag}: {}", stderr(&o));
        let v = json(&o);
        assert_eq!((v["server"].as_str(), v["diagnosis"].as_str()), (Some(want), Some("works")), "{v}");
    }

    // The text report names the address it probed.
    let o = probe_in(&ns, &["dual.tfokit.test:7000", "-6"]);
    assert!(stdout(&o).starts_with("probing dual.tfokit.test:7000 at [::1]:7000 with TFO"), "{}", stdout(&o));

    // A name that does not resolve is a verdict of its own, not a crash.
    let o = probe_in(&ns, &["nowhere.tfokit.test:7000", "localhost:7000", "-4", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (reports, _) = lines(&o);
    let unresolved: Vec<&Value> = reports.iter().filter(|r| r["diagnosis"] == "unresolved").collect();
    assert_eq!(unresolved.len(), 1, "{reports:?}");
    assert!(unresolved[0]["explanation"].as_str().unwrap().contains("nowhere.tfokit.test"), "{reports:?}");
}

/// A CA and a certificate it signed for `name`, as PEM files in `dir`:
/// (ca.pem, cert.pem, key.pem).
fn private_ca(dir: &std::path::Path, name: &str) -> [std::path::PathBuf; 3] {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "tfokit test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let paths = [dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem")];
    std::fs::write(&paths[0], ca_cert.pem()).unwrap();
    std::fs::write(&paths[1], cert.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    paths
}

#[test]
fn tls_probe_of_nginx_with_ssl_fastopen_carries_the_client_hello_in_the_syn() {
    if !root_or_skip("probe_tls") {
        return;
    }
    let dir = tempdir("probe_tls");
    let [ca, cert, key] = private_ca(&dir, "tls.tfokit.test");
    let mut ns = LoneNetns::create("tls", 3).expect("namespace");
    ns.set_hosts("127.0.0.1 tls.tfokit.test\n::1 tls.tfokit.test\n").unwrap();
    let listen = ["127.0.0.1:443 ssl fastopen=256".to_string(), "[::1]:443 ssl fastopen=256".to_string()];
    let tls_conf = format!(
        "ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_certificate {};\n    ssl_certificate_key {};",
        cert.display(),
        key.display()
    );
    let started = ns.run(|| Nginx::start("probe_tls", &listen, &tls_conf, "hello over tls\n")).unwrap();
    let Some(_nginx) = started else { return };
    let ca = ca.to_str().unwrap();

    // By name, port 443 by default, HTTPS: every address works, the whole
    // ClientHello rode in the SYN, and the server's kernel took it.
    let before = counters_in(&ns);
    let o = probe_in(&ns, &["tls.tfokit.test", "--tls", "--http", "--ca", ca, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let d = &counters_in(&ns) - &before;
    let (reports, _) = lines(&o);
    assert_eq!(servers(&reports), ["127.0.0.1:443", "[::1]:443"]);
    for r in &reports {
        assert_eq!(r["diagnosis"], "works", "{r}");
        let second = &r["attempts"][1];
        let tls = &second["tls"];
        assert_eq!((tls["version"].as_str(), tls["http_status"].as_u64()), (Some("TLSv1.3"), Some(200)), "{r}");
        assert!(tls["client_hello_bytes"].as_u64().unwrap() > 100, "{r}");
        assert_eq!(second["bytes_in_syn"], tls["client_hello_bytes"], "the whole ClientHello in the SYN: {r}");
        assert_eq!(r["attempts"][2]["tfo_used"], false, "{r}");
    }
    assert_eq!((d.passive, d.active, d.cookie_reqd), (2, 2, 2), "{d:?}");

    // Without the CA: TFO carried the hello, TLS says why it stopped, and what to do.
    let o = probe_in(&ns, &["tls.tfokit.test", "-4", "--tls", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["diagnosis"], "tls_failed", "{v}");
    assert!(v["explanation"].as_str().unwrap().contains("--ca FILE"), "{v}");
    assert_eq!(v["attempts"][1]["tfo_used"], true, "{v}");

    // --insecure probes it anyway.
    let o = probe_in(&ns, &["tls.tfokit.test:443", "-4", "--tls", "--insecure", "--json"]);
    assert_eq!(json(&o)["diagnosis"], "works", "{}", stdout(&o));

    // By address, the SNI is the address, which the certificate is not for; --sni mends it.
    let o = probe_in(&ns, &["127.0.0.1", "--tls", "--ca", ca, "--json"]);
    let v = json(&o);
    assert_eq!(v["diagnosis"], "tls_failed", "{v}");
    assert!(v["explanation"].as_str().unwrap().contains("--sni"), "{v}");
    let o = probe_in(&ns, &["127.0.0.1", "--tls", "--ca", ca, "--sni", "tls.tfokit.test", "--json"]);
    assert_eq!(json(&o)["diagnosis"], "works", "{}", stdout(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TFO listener that accepts and never answers, until dropped.
struct Silent {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start(addr: &str) -> Silent {
        let listener = fastopen::ListenerBuilder::new(addr.parse().unwrap()).bind().unwrap().into_std();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Silent { stop, thread: Some(thread) }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `iptables ARGS` in the calling thread's namespace.
fn iptables(rule: &str) {
    let o = Command::new("iptables").args(rule.split(' ')).output().expect("iptables");
    assert!(o.status.success(), "iptables {rule}: {}", stderr(&o));
}

#[test]
fn two_hundred_targets_in_one_run_each_with_the_verdict_of_its_breakage() {
    if !have_tool("probe_200", "iptables") {
        return;
    }
    in_netns("probe_200", 3, || {
        // Client TFO must not pause itself after the silent servers' connections.
        fastopen_lab::netns::set_sysctl("net.ipv4.tcp_fastopen_blackhole_timeout_sec", "0").unwrap();
        let _works = Server::start_on("0.0.0.0:7001", &["--http"]);
        let _no_tfo = Server::start_on("0.0.0.0:7002", &["--http", "--queue", "0"]);
        let _silent = Silent::start("0.0.0.0:7003");
        // The path: strip the TFO option from SYNs to 127.0.3.0/24, drop SYNs
        // carrying data to 127.0.4.0/24 (a SYN without data is 80 bytes at most).
        iptables("-t mangle -A OUTPUT -d 127.0.3.0/24 -p tcp --syn -j TCPOPTSTRIP --strip-options 34");
        iptables("-A INPUT -d 127.0.4.0/24 -p tcp --syn -m length --length 100:65535 -j DROP");
        // With a timeout under the first retransmission (1 s), the probe says so.
        let o = run_tfo(&["probe", "127.0.4.200:7001", "--http", "--timeout", "700ms", "--json"]);
        let v = json(&o);
        assert_eq!(v["diagnosis"], "connect_timeout", "{v}");
        assert!(v["explanation"].as_str().unwrap().contains("drop SYNs with data"), "{v}");
        // (subnet, port, how many, the verdict each must get)
        let groups = [
            (1, 7001, 80, "works"),
            (2, 7002, 30, "no_cookie"),
            (3, 7001, 20, "no_cookie"),
            (4, 7001, 20, "syn_data_dropped"),
            (5, 7003, 20, "no_reply"),
            (6, 7009, 30, "refused"),
        ];
        let mut want = BTreeMap::new();
        let mut file = String::from("# 200 servers, some broken each way\n\n");
        for (subnet, port, n, verdict) in groups {
            for host in 1..=n {
                let target = format!("127.0.{subnet}.{host}:{port}");
                file.push_str(&format!("{target}  # {verdict}\n"));
                want.insert(target, verdict);
            }
        }
        assert_eq!(want.len(), 200);
        let dir = tempdir("probe_200");
        let path = dir.join("targets");
        std::fs::write(&path, file).unwrap();

        let started = Instant::now();
        let o = run_tfo(&[
            "probe",
            "--targets",
            path.to_str().unwrap(),
            "--http",
            "--timeout",
            "3s",
            "--concurrency",
            "32",
            "--rate",
            "200",
            "--json",
        ]);
        let wall = started.elapsed();
        eprintln!("probe_200: 200 targets probed in {:.1} s", wall.as_secs_f64());
        assert_eq!(o.status.code(), Some(1), "some are broken: {}", stderr(&o));
        let (reports, summary) = lines(&o);
        let got: BTreeMap<String, String> = reports
            .iter()
            .map(|r| (r["target"].as_str().unwrap().to_string(), r["diagnosis"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(got.len(), 200, "one line per target");
        let wrong: Vec<String> = want
            .iter()
            .filter(|(t, v)| got.get(*t).map(String::as_str) != Some(**v))
            .map(|(t, v)| format!("{t}: want {v}, got {:?}", got.get(t)))
            .collect();
        assert!(wrong.is_empty(), "{} wrong:\n{}", wrong.len(), wrong.join("\n"));
        let summary = summary.expect("summary");
        assert_eq!((summary["addresses"].as_u64(), summary["works"].as_u64()), (Some(200), Some(80)), "{summary}");
        let _ = std::fs::remove_dir_all(&dir);
    });
}
