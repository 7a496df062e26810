//! `tfo serve --tls-cert`: TLS over TFO with TLS 1.3 early data (0-RTT),
//! checked with a peer we did not write (openssl s_client: "Early data was
//! accepted"), with our own client (`tfo load --tls-early-data`), and with
//! the kernel's counters; the early-data policy applied to TLS early data as
//! it is to data in the SYN.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// A self-signed certificate and its key, as PEM files in `dir`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (crt, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    (crt, key)
}

/// `tfo serve` arguments for TLS with `crt` and `key`, one worker, and `extra`.
fn tls_args<'a>(crt: &'a Path, key: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--tls-cert", crt.to_str().unwrap(), "--tls-key", key.to_str().unwrap(), "--workers", "1"];
    args.extend_from_slice(extra);
    args
}

/// `openssl s_client` to `addr` with `args`, `stdin` as its input; all it printed.
fn s_client(addr: std::net::SocketAddr, args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect", &addr.to_string(), "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let o = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The session ticket of a first connection (a GET), saved for resumption.
fn first_session(addr: std::net::SocketAddr, dir: &Path) -> PathBuf {
    let sess = dir.join("session.pem");
    let out = s_client(addr, &["-sess_out", sess.to_str().unwrap()], b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.contains("HTTP/1.1 200 OK") && out.contains("TLSv1.3"), "{out}");
    assert!(std::fs::metadata(&sess).is_ok_and(|m| m.len() > 0), "no session saved: {out}");
    sess
}

#[test]
fn openssl_early_data_is_accepted_and_the_policy_applies_to_it() {
    in_netns("tls_serve_policy", 3, || {
        if !fastopen_lab::testing::have_tool("tls_serve_policy", "openssl") {
            return;
        }
        let dir = tempdir("tls_serve_policy");
        let (crt, key) = certificate(&dir);
        let mut server = Server::start(&tls_args(&crt, &key, &["--http", "--early-data", "reject"]));
        let sess = first_session(server.addr, &dir);
        let first = server.next_connection();
        assert_eq!(first["tls"]["version"], "TLSv1.3", "{first}");
        assert_eq!(first["tls"]["resumed"], false, "{first}");

        // TLS 1.2 too (no early data there).
        let out = s_client(server.addr, &["-tls1_2"], b"GET /old HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.contains("TLSv1.2") && out.contains("HTTP/1.1 200 OK"), "{out}");
        assert_eq!(server.next_connection()["tls"]["version"], "TLSv1.2");

        // A POST as early data, the handshake not over: 425 under reject.
        let early = dir.join("early.txt");
        std::fs::write(&early, "POST /order HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        let args = ["-sess_in", sess.to_str().unwrap(), "-early_data", early.to_str().unwrap()];
        let out = s_client(server.addr, &args, b"");
        assert!(out.contains("Early data was accepted"), "{out}");
        assert!(out.contains("HTTP/1.1 425 Too Early"), "{out}");
        let refused = server.next_connection();
        assert_eq!(refused["tls"]["resumed"], true, "{refused}");
        assert_eq!(refused["tls"]["early_data_policy"], "too_early", "{refused}");
        assert_eq!(refused["tls"]["early_data_bytes"], 54, "{refused}");
        assert_eq!(refused["http_status"], 425, "{refused}");
        assert_eq!(refused["handled"], false, "{refused}");

        // A GET as early data is safe: run at once, whatever the policy.
        let sess = first_session(server.addr, &dir);
        server.next_connection();
        std::fs::write(&early, "GET /page HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let out =
            s_client(server.addr, &["-sess_in", sess.to_str().unwrap(), "-early_data", early.to_str().unwrap()], b"");
        assert!(out.contains("Early data was accepted") && out.contains("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains("GET /page HTTP/1.1"), "the echo of the early request: {out}");
        let safe = server.next_connection();
        assert_eq!(safe["tls"]["early_data_policy"], "handled_early", "{safe}");
        assert_eq!(safe["handled"], true, "{safe}");
        drop(server);

        // Under wait, the POST is held until the handshake ends, then run.
        let mut server = Server::start(&tls_args(&crt, &key, &["--http", "--early-data", "wait"]));
        let sess = first_session(server.addr, &dir);
        server.next_connection();
        std::fs::write(&early, "POST /order HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        let out =
            s_client(server.addr, &["-sess_in", sess.to_str().unwrap(), "-early_data", early.to_str().unwrap()], b"");
        assert!(out.contains("Early data was accepted") && out.contains("HTTP/1.1 200 OK"), "{out}");
        let held = server.next_connection();
        assert_eq!(held["tls"]["early_data_policy"], "held_until_handshake", "{held}");
        assert_eq!(held["handled"], true, "{held}");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// `tfo load --tls-early-data` against `tfo serve --tls-cert`: after the
/// first connection every request rides in the SYN as early data with the
/// ClientHello; both sides and the kernel count the same.
#[test]
fn tfo_load_early_data_against_tfo_serve_both_sides_and_the_kernel_agree() {
    in_netns("tls_serve_load", 3, || {
        let dir = tempdir("tls_serve_load");
        let (crt, key) = certificate(&dir);
        let mut server = Server::start(&tls_args(&crt, &key, &["--http"]));
        let url = format!("https://localhost:{}/", server.addr.port());
        let before = counters();
        let o = tfo()
            .args(["load", &url, "--insecure", "--tls-early-data", "-n", "20", "-c", "1", "--json"])
            .output()
            .unwrap();
        let r: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
        assert_eq!(r["errors"], 0, "{r:#}");
        // Our server sends its tickets after the client's Finished, before it
        // closes: every connection after the first resumes with early data.
        assert_eq!(r["tls"]["early_data_not_sent"]["no_ticket"], 1, "{r:#}");
        assert_eq!(r["tls"]["early_data_sent"], 19, "{r:#}");
        assert_eq!(r["tls"]["early_data_accepted"], 19, "{r:#}");
        assert_eq!(r["tfo_used"], 19, "{r:#}");
        let logs: Vec<Value> = (0..20).map(|_| server.next_connection()).collect();
        let early: Vec<&Value> = logs.iter().filter(|l| l["tls"]["early_data_bytes"].as_u64() > Some(0)).collect();
        assert_eq!(early.len(), 19, "{logs:#?}");
        assert!(early.iter().all(|l| l["data_in_syn"] == true && l["tls"]["resumed"] == true), "{logs:#?}");
        let delta = &counters() - &before;
        assert_eq!((delta.active, delta.passive), (19, 19), "TCPFastOpenActive/Passive: the hello in the SYN");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn certificate_and_key_files_that_do_not_parse_are_usage_errors() {
    let dir = tempdir("tls_serve_bad_files");
    let (crt, key) = certificate(&dir);
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "-----BEGIN NOTHING-----\n").unwrap();
    for (cert, key, says) in [(&junk, &key, "holds no certificate"), (&crt, &junk, "holds no private key")] {
        let o = tfo()
            .args(["serve", "127.0.0.1:0", "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(says) && stderr(&o).contains("junk.pem"), "{}", stderr(&o));
        assert!(!stderr(&o).contains("PRIVATE KEY-----\n"), "the key is never printed");
    }
    let o = tfo().args(["serve", "127.0.0.1:0", "--tls-cert", crt.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "--tls-cert needs --tls-key: {}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tfo probe --tls --http --tls-early-data`: the first connection brings
/// the tickets, the second sends the ClientHello and the GET as early data
/// together in its SYN, and the server says it ran the request from early data.
#[test]
fn probe_with_early_data_puts_hello_and_request_in_one_syn() {
    in_netns("tls_serve_probe", 3, || {
        let dir = tempdir("tls_serve_probe");
        let (crt, key) = certificate(&dir);
        let mut server = Server::start(&tls_args(&crt, &key, &["--http"]));
        let o = tfo()
            .args(["probe", &server.addr.to_string(), "--tls", "--http", "--insecure", "--tls-early-data", "--json"])
            .output()
            .unwrap();
        let r: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
        assert_eq!(r["tfo_works"], true, "{r:#}");
        let attempts = r["attempts"].as_array().unwrap();
        assert_eq!(attempts[0]["tls"]["early_data"], "no_ticket", "{r:#}");
        let second = &attempts[1];
        assert_eq!(second["tls"]["early_data"], "accepted", "{r:#}");
        assert_eq!(second["tls"]["resumed"], true, "{r:#}");
        let hello = second["tls"]["client_hello_bytes"].as_u64().unwrap();
        let in_syn = second["bytes_in_syn"].as_u64().unwrap();
        assert!(in_syn > hello + 60, "the hello and the GET (as early data) in the SYN: {r:#}");
        assert_eq!(second["request_bytes"].as_u64(), Some(in_syn), "{r:#}");
        let logs: Vec<Value> = (0..3).map(|_| server.next_connection()).collect();
        assert_eq!(logs[1]["bytes_in_syn"].as_u64(), Some(in_syn), "{logs:#?}");
        assert_eq!(logs[1]["tls"]["early_data_policy"], "handled_early", "{logs:#?}");
        let _ = std::fs::remove_dir_all(&dir);
    });
}
