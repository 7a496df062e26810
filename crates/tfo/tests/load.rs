//! `tfo load` against `tfo serve` (raw and HTTP) and nginx (HTTP and HTTPS):
//! every request answered and checked, the requests that rode in the SYN
//! counted as the kernel counts them, open and closed loops bounded, and
//! failures reported by kind.

mod common;

use serde_json::Value;

use common::*;

fn load(args: &[&str]) -> (Option<i32>, Value) {
    let o = tfo().arg("load").args(args).arg("--json").output().unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&o), stderr(&o)));
    (o.status.code(), v)
}

/// `kind`'s entry of `by_kind`.
fn kind<'a>(report: &'a Value, kind: &str) -> &'a Value {
    report["by_kind"].as_array().unwrap().iter().find(|k| k["kind"] == kind).unwrap_or_else(|| panic!("{report:#}"))
}

/// TFO requests of a run that starts without a cookie: at least one (at most
/// one per client) asks for the cookie, every other rides in the SYN.
/// Returns (in the SYN, cookie requests).
fn cold_start(report: &Value, requests: u64) -> (u64, u64) {
    let used = report["tfo_used"].as_u64().unwrap();
    let cold = report["not_in_syn"]["cookie_unavailable"].as_u64().unwrap_or(0);
    assert!((1..=16).contains(&cold), "{report:#}");
    assert_eq!(used + cold, requests, "{report:#}");
    (used, cold)
}

#[test]
fn load_tfo_serve_both_ways_and_the_kernel_agrees() {
    in_netns("load_serve", 3, || {
        let http = Server::start(&["--http"]);
        let echo = Server::start(&[]);
        let url = format!("http://{}/", http.addr);

        // HTTP, TFO and plain interleaved: the first TFO requests (those that start
        // before a cookie is cached) ask for the cookie, the rest ride in the SYN.
        let before = counters();
        let (code, r) = load(&[&url, "-n", "600", "-c", "8", "--both"]);
        let d = &counters() - &before;
        assert_eq!(code, Some(0), "{r:#}");
        assert_eq!((r["requests"].as_u64(), r["errors"].as_u64()), (Some(600), Some(0)), "{r:#}");
        let (tfo, plain) = (kind(&r, "tfo"), kind(&r, "plain"));
        assert_eq!((tfo["requests"].as_u64(), plain["requests"].as_u64()), (Some(300), Some(300)));
        let (used, cold) = cold_start(tfo, 300);
        assert_eq!(plain["tfo_used"].as_u64(), Some(0));
        assert_eq!(plain["not_in_syn"]["not_requested"].as_u64(), Some(300), "{plain:#}");
        assert_eq!((d.active, d.passive, d.cookie_reqd), (used, used, cold), "{d:?}");
        assert_eq!(r["kernel"]["active"].as_u64(), Some(used));
        assert_eq!(r["kernel"]["agrees"], true);
        assert!(r["requests_per_second"].as_f64().unwrap() > 0.0);
        let lat = &r["latency_ms"];
        assert!(lat["p50"].as_f64().unwrap() > 0.0 && lat["p50"].as_f64() <= lat["p99"].as_f64(), "{lat}");

        // Raw echo: each line must come back; all in the SYN (the cookie is cached now).
        let (code, r) = load(&[&echo.addr.to_string(), "-n", "300", "-c", "4"]);
        assert_eq!(code, Some(0), "{r:#}");
        assert_eq!(
            (r["requests"].as_u64(), r["errors"].as_u64(), r["tfo_used"].as_u64()),
            (Some(300), Some(0), Some(300))
        );

        // Open loop: 100 requests at 200/s take half a second and report as such.
        let (code, r) = load(&[&url, "-n", "100", "--rate", "200"]);
        assert_eq!(code, Some(0), "{r:#}");
        assert_eq!((r["loop"].as_str(), r["requests"].as_u64()), (Some("open"), Some(100)));
        let ms = r["duration_ms"].as_f64().unwrap();
        assert!(ms >= 490.0, "100 requests at 200/s cannot end before 495 ms: {ms}");

        // The duration bounds a run whose count is far off.
        let (code, r) = load(&[&url, "-n", "100000000", "--rate", "100", "--duration", "300ms"]);
        assert_eq!(code, Some(0), "{r:#}");
        assert!(r["requests"].as_u64().unwrap() <= 31, "{r:#}");
    });
}

/// A server that accepts and never answers (its listener lives while this does).
fn silent_server() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

#[test]
fn the_duration_bounds_the_whole_run_and_ctrl_c_ends_it_with_the_report() {
    in_netns("load_bounds", 3, || {
        let (_silent, addr) = silent_server();
        // Open loop, 10 s per request, 2 s in all: in-flight requests cancelled at 2 s.
        let started = std::time::Instant::now();
        let (code, r) = load(&[&addr, "--rate", "10", "-n", "40", "-c", "4", "--duration", "2s", "--timeout", "10s"]);
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(8), "ran {took:?} for a 2 s duration");
        assert_eq!(code, Some(1), "{r:#}");
        let cancelled = r["cancelled"].as_u64().unwrap_or(0);
        assert!((1..=4).contains(&cancelled), "in flight at the end, at most -c: {r:#}");
        // A rate far below one request per duration: the rate is over the duration.
        let (_, r) = load(&[&addr, "--rate", "0.5", "-n", "5", "--duration", "2s", "--timeout", "1s"]);
        assert!(r["requests_per_second"].as_f64().unwrap() <= 1.0, "{r:#}");
        // Ctrl-C: the report, exit 130, at once.
        let child = tfo()
            .args(["load", &addr, "-c", "4", "-n", "100", "--timeout", "20s", "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        let sent = std::time::Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(sent.elapsed() < std::time::Duration::from_secs(5), "Ctrl-C waited for the in-flight requests");
        assert_eq!(o.status.code(), Some(130));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["interrupted"], true, "{r:#}");
        assert_eq!((r["cancelled"].as_u64(), r["errors"].as_u64()), (Some(4), Some(0)), "cancelled, not errors: {r:#}");
    });
}

#[test]
fn load_reports_failures_by_kind_and_refuses_foreign_targets() {
    in_netns("load_failures", 3, || {
        // Nothing listens: every request refused, exit 1.
        let (code, r) = load(&["http://127.0.0.1:9/", "-n", "50", "-c", "4"]);
        assert_eq!(code, Some(1), "{r:#}");
        assert_eq!((r["errors"].as_u64(), r["errors_by_kind"]["refused"].as_u64()), (Some(50), Some(50)), "{r:#}");
        // An HTTP server that is not an echo of the request's line: a raw load sees a wrong reply.
        let http = Server::start(&["--http"]);
        let o = tfo().args(["load", &http.addr.to_string(), "-n", "5", "--timeout", "2s", "--json"]).output().unwrap();
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(r["errors"].as_u64(), Some(5), "{r:#}");
    });
    for foreign in ["http://10.1.2.3/", "192.0.2.1:80", "https://[2001:db8::1]/"] {
        let o = tfo().args(["load", foreign, "-n", "1"]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{foreign}");
        assert!(stderr(&o).contains("only loads loopback and the lab"), "{}", stderr(&o));
    }
    let o = tfo().args(["load", "ftp://127.0.0.1/"]).output().unwrap();
    assert!(stderr(&o).contains("http:// or https://"), "{}", stderr(&o));
}

#[test]
fn load_nginx_over_http_and_https_with_the_request_or_client_hello_in_the_syn() {
    in_netns("load_nginx", 3, || {
        let dir = tempdir("load_nginx");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (crt, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&crt, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        let listen = ["127.0.0.1:8092 fastopen=256".to_string(), "127.0.0.1:8493 ssl fastopen=256".to_string()];
        let tls = format!("ssl_certificate {};\n    ssl_certificate_key {};", crt.display(), key.display());
        let Some(_nginx) = fastopen_lab::testing::Nginx::start("load_nginx", &listen, &tls, "hello\n") else {
            return;
        };
        let before = counters();
        let (code, r) = load(&["http://127.0.0.1:8092/", "-n", "400", "-c", "16"]);
        let d = &counters() - &before;
        assert_eq!(code, Some(0), "{r:#}");
        assert_eq!((r["requests"].as_u64(), r["errors"].as_u64()), (Some(400), Some(0)), "{r:#}");
        let (used, cold) = cold_start(&r, 400);
        assert_eq!((d.passive, d.cookie_reqd), (used, cold), "nginx's kernel took each SYN with data: {d:?}");

        // HTTPS: the ClientHello is the first write, so it rides in the SYN (same cookie: same IP).
        let before = counters();
        let (code, r) = load(&["https://127.0.0.1:8493/", "-n", "200", "-c", "8", "--insecure"]);
        let d = &counters() - &before;
        assert_eq!(code, Some(0), "{r:#}");
        assert_eq!(
            (r["requests"].as_u64(), r["errors"].as_u64(), r["tfo_used"].as_u64()),
            (Some(200), Some(0), Some(200))
        );
        assert_eq!(d.passive, 200, "{d:?}");
        // Without --insecure the self-signed certificate fails each request, by kind.
        let (code, r) = load(&["https://127.0.0.1:8493/", "-n", "5", "-c", "1"]);
        assert_eq!(code, Some(1));
        assert_eq!(r["errors_by_kind"]["tls"].as_u64(), Some(5), "{r:#}");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// `tfo load` across `tfo lab` (LAB_ARGS: --rtt, --loss, ...) against
/// `tfo serve --http SERVE_ARGS`, after one `tfo send` that caches the
/// cookie: the load's report and the server's summary line.
fn across_lab(test: &str, lab_args: &[&str], serve_args: &str, load_args: &str) -> Option<(Value, String)> {
    if !fastopen_lab::testing::root_or_skip(test) {
        return None;
    }
    let dir = tempdir(test);
    let bin = env!("CARGO_BIN_EXE_tfo");
    let (report, summary) = (dir.join("load.json"), dir.join("serve.err"));
    let o = tfo()
        .arg("lab")
        .args(lab_args)
        .arg("--server")
        .arg(format!("exec '{bin}' serve $TFOKIT_SERVER_IP:8000 --http {serve_args} > /dev/null 2> '{}'", summary.display()))
        .arg("--client")
        .arg(format!(
            "'{bin}' send $TFOKIT_SERVER_IP:8000 --data hi > /dev/null && '{bin}' load http://$TFOKIT_SERVER_IP:8000/ {load_args} --json > '{}'",
            report.display()
        ))
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}\n{}", stderr(&o)));
    let summary = std::fs::read_to_string(&summary).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Some((report, summary))
}

/// The number after `NAME +` in the server's summary.
fn summary_count(summary: &str, name: &str) -> u64 {
    let at = summary.find(&format!("{name} +")).unwrap_or_else(|| panic!("no {name} in {summary}"));
    summary[at + name.len() + 2..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

#[test]
fn a_full_tfo_queue_falls_back_to_plain_handshakes_and_loses_nothing() {
    // Over 20 ms, each TFO child waits 20 ms for its ACK: 256 clients overflow a queue of 4.
    let Some((r, summary)) =
        across_lab("load_overflow", &["--rtt", "20ms"], "--queue 4", "-n 10000 -c 256 --timeout 10s")
    else {
        return;
    };
    assert_eq!((r["requests"].as_u64(), r["errors"].as_u64()), (Some(10000), Some(0)), "0 lost, 0 wrong: {r:#}");
    let fell_back = r["not_in_syn"]["data_not_acked"].as_u64().unwrap_or(0);
    let used = r["tfo_used"].as_u64().unwrap();
    assert!(fell_back > 1000, "the queue of 4 overflowed: {r:#}");
    assert_eq!(used + fell_back, 10000, "{r:#}");
    // The server's kernel counted each fallback as an overflow, and its summary says so.
    assert_eq!(summary_count(&summary, "ListenOverflow"), fell_back, "{summary}");
    assert_eq!(summary_count(&summary, "TCPFastOpenPassive"), used, "{summary}");
    assert!(summary.contains("the TFO queue of 4 was full"), "{summary}");
    assert!(summary.starts_with("tfo serve: 10001 connections"), "{summary}");
    assert_eq!((r["kernel"]["active"].as_u64(), r["kernel"]["active_fail"].as_u64()), (Some(used), Some(fell_back)));
}

#[test]
fn two_percent_loss_at_50_ms_every_request_answered_and_the_counters_agree() {
    let Some((r, summary)) =
        across_lab("load_loss", &["--rtt", "50ms", "--loss", "2%", "--seed", "7"], "", "-n 1000 -c 64 --timeout 30s")
    else {
        return;
    };
    assert_eq!((r["requests"].as_u64(), r["errors"].as_u64()), (Some(1000), Some(0)), "{r:#}");
    let used = r["tfo_used"].as_u64().unwrap();
    let retransmitted = r["not_in_syn"]["syn_retransmitted"].as_u64().unwrap_or(0);
    assert!(retransmitted > 0, "2% loss must cost some SYN data: {r:#}");
    let others: u64 = r["not_in_syn"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(used + others, 1000, "{r:#}");
    // ActiveFail counts each of those, and also any TFO connection's second
    // timeout (tcp_fastopen_active_detect_blackhole), data acknowledged or not.
    assert_eq!(r["kernel"]["active"].as_u64(), Some(used), "{r:#}");
    assert!(r["kernel"]["active_fail"].as_u64().unwrap() >= others, "{r:#}");
    assert_eq!(summary_count(&summary, "TCPFastOpenPassive"), used, "{summary}");
}

/// A lab at 50 ms with nginx in its server namespace on `SERVER:8443`, TLS
/// 1.3 only with a throwaway certificate, and `extra` directives; the
/// scratch directory (for the test to remove). `None` without nginx.
fn nginx_tls_across_50ms(
    test: &str,
    extra: &str,
) -> (fastopen_lab::Lab, std::path::PathBuf, Option<fastopen_lab::testing::Nginx>) {
    let lab = fastopen_lab::Lab::start(fastopen_lab::LabConfig {
        path: fastopen_lab::PathConfig::with_rtt(std::time::Duration::from_millis(50)),
        ..Default::default()
    })
    .unwrap();
    let dir = tempdir(test);
    let cert = rcgen::generate_simple_self_signed(vec!["lab".to_string()]).unwrap();
    let (crt, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    let listen = [format!("{}:8443 ssl fastopen=256", lab.server_ip(false))];
    let tls = format!(
        "ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.3;{extra}",
        crt.display(),
        key.display()
    );
    let nginx = lab.server().run(|| fastopen_lab::testing::Nginx::start(test, &listen, &tls, "hello\n")).unwrap();
    (lab, dir, nginx)
}

/// HTTPS (TLS 1.3, nginx) across 50 ms: `tfo load` takes the physical count of
/// round trips to the response, 2 with TFO (the ClientHello in the SYN) and 3
/// without, as curl does; Nagle on the Finished-then-request writes once cost
/// one more with TFO and two more without.
#[test]
fn https_load_takes_two_round_trips_with_tfo_and_three_without() {
    if !fastopen_lab::testing::root_or_skip("load_https_rtts") {
        return;
    }
    let (lab, dir, nginx) = nginx_tls_across_50ms("load_https_rtts", "");
    let Some(_nginx) = nginx else { return };
    let server = lab.server_ip(false);
    let url = format!("https://{server}:8443/");
    let o = lab
        .client()
        .command(env!("CARGO_BIN_EXE_tfo"))
        .args(["load", &url, "--insecure", "--both", "-n", "12", "-c", "1", "--json"])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    assert_eq!(r["errors"], 0, "{r:#}");
    let round_trips = |k: &str| kind(&r, k)["latency_ms"]["p50"].as_f64().unwrap() / 50.0;
    // The first TFO request asks for the cookie (3 round trips): the median is the warm ones.
    assert!(round_trips("tfo") < 2.5, "TFO: the ClientHello in the SYN, 2 round trips: {r:#}");
    assert!(round_trips("plain") < 3.5, "plain: 3 round trips: {r:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--tls-early-data` against nginx (`ssl_early_data on`) across the lab at
/// 50 ms: after the first connection (a full handshake that brings the
/// session tickets) every request goes as TLS early data with the
/// ClientHello, in the SYN; nginx says so in its log (`$ssl_early_data` 1 for
/// each of them), the kernel counts the SYNs that carried data, and the
/// answer comes one round trip after the connect.
#[test]
fn https_early_data_in_the_syn_takes_one_round_trip_and_nginx_agrees() {
    if !fastopen_lab::testing::root_or_skip("load_https_early_data") {
        return;
    }
    let (lab, dir, nginx) = nginx_tls_across_50ms("load_https_early_data", "\n    ssl_early_data on;");
    let Some(nginx) = nginx else { return };
    let server = lab.server_ip(false);
    let url = format!("https://{server}:8443/");
    let o = lab
        .client()
        .command(env!("CARGO_BIN_EXE_tfo"))
        .args(["load", &url, "--insecure", "--tls-early-data", "-n", "12", "-c", "1", "--json"])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    assert_eq!(r["errors"], 0, "{r:#}");
    let tls = &r["tls"];
    assert_eq!(tls["handshakes"], 12, "{r:#}");
    // nginx (OpenSSL) sends two tickets after a full handshake and closes a
    // 0-RTT connection before its handshake ends, so without a new ticket:
    // every third connection is a full handshake (12: 4 full, 8 resumed).
    let sent = tls["early_data_sent"].as_u64().unwrap();
    assert!(sent >= 6, "{r:#}");
    assert_eq!(tls["early_data_accepted"], sent, "{r:#}");
    assert_eq!(tls["resumed"], sent, "every resumed session sent early data: {r:#}");
    assert_eq!(tls["early_data_not_sent"]["no_ticket"].as_u64().unwrap() + sent, 12, "{r:#}");
    let log = nginx.access_log_of(12);
    assert_eq!(log.lines().count(), 12, "{log}");
    assert_eq!(log.matches("ssl_early_data=1").count() as u64, sent, "nginx got them as early data: {log}");
    // The first connection asks for the cookie too: 11 SYNs carried the hello (and the request).
    assert_eq!(r["tfo_used"], 11, "{r:#}");
    assert_eq!(r["kernel"]["active"], 11, "TCPFastOpenActive: {r:#}");
    let round_trips = r["latency_ms"]["p50"].as_f64().unwrap() / 50.0;
    assert!(round_trips < 1.5, "TFO + 0-RTT: the request in the SYN, one round trip: {r:#}");
    let _ = std::fs::remove_dir_all(&dir);
}
