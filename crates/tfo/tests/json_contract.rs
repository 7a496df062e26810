//! The `--json` output of every command is a contract (README, "JSON"):
//! these tests check each command's required fields and their types, so a
//! renamed or retyped field fails here first.

mod common;

use serde_json::Value;

use common::*;

/// A JSON type, or that type or null.
#[derive(Debug, Clone, Copy)]
enum T {
    Bool,
    Num,
    Str,
    Arr,
    Obj,
    OrNull(&'static T),
}

fn is(v: &Value, t: T) -> bool {
    match t {
        T::Bool => v.is_boolean(),
        T::Num => v.is_number(),
        T::Str => v.is_string(),
        T::Arr => v.is_array(),
        T::Obj => v.is_object(),
        T::OrNull(inner) => v.is_null() || is(v, *inner),
    }
}

const NUM_OR_NULL: T = T::OrNull(&T::Num);
const STR_OR_NULL: T = T::OrNull(&T::Str);
const BOOL_OR_NULL: T = T::OrNull(&T::Bool);
const OBJ_OR_NULL: T = T::OrNull(&T::Obj);

fn schema(v: &Value, what: &str, fields: &[(&str, T)]) {
    for (name, t) in fields {
        let field = v.get(name).unwrap_or_else(|| panic!("{what}: no field {name:?} in {v}"));
        assert!(is(field, *t), "{what}: {name:?} should be {t:?}, is {field}");
    }
}

const OUTCOME: [(&str, T); 8] = [
    ("tfo_used", T::Bool),
    ("method", STR_OR_NULL),
    ("bytes_in_syn", T::Num),
    ("syn_bytes_sent", T::Num),
    ("request_bytes", T::Num),
    ("fail_reason", STR_OR_NULL),
    ("fail_explanation", STR_OR_NULL),
    ("connect_ms", T::Num),
];

const CONNECTION_LOG: [(&str, T); 10] = [
    ("event", T::Str),
    ("peer", T::Str),
    ("data_in_syn", T::Bool),
    ("tfo_child", BOOL_OR_NULL),
    ("bytes_in_syn", NUM_OR_NULL),
    ("handshake_at_accept", T::Str),
    ("bytes_in", T::Num),
    ("in_syn", T::Bool),
    ("confirmed", BOOL_OR_NULL),
    ("handled", T::Bool),
];

const COUNTERS: [(&str, T); 8] = [
    ("active", T::Num),
    ("active_fail", T::Num),
    ("passive", T::Num),
    ("passive_fail", T::Num),
    ("listen_overflow", T::Num),
    ("cookie_reqd", T::Num),
    ("blackhole", T::Num),
    ("passive_alt_key", T::Num),
];

const LINK: [(&str, T); 10] = [
    ("to_server_packets", T::Num),
    ("to_client_packets", T::Num),
    ("to_server_bytes", T::Num),
    ("to_client_bytes", T::Num),
    ("lost", T::Num),
    ("queue_drops", T::Num),
    ("stripped", T::Num),
    ("dropped_syn_data", T::Num),
    ("dropped_tfo_syn", T::Num),
    ("replayed", T::Num),
];

#[test]
fn serve_send_probe_doctor_and_trace() {
    in_netns("json_contract", 3, || {
        let mut server = Server::start(&[]);
        let listening: Value = {
            // Server::start checked the first line; check its fields through a second server.
            let o = tfo().args(["serve", "127.0.0.1:0", "--json", "--count", "0"]).output().unwrap();
            serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap()
        };
        schema(
            &listening,
            "serve listening",
            &[
                ("event", T::Str),
                ("addr", T::Str),
                ("http", T::Bool),
                ("tfo_queue", T::Num),
                ("workers", T::Num),
                ("own_keys", T::Num),
                ("tcp_fastopen", T::Num),
                ("server_tfo", T::Bool),
            ],
        );
        let a = server.addr.to_string();
        let o = run_tfo(&["send", &a, "--data", "hello", "--json"]);
        let send = json(&o);
        schema(&send, "send", &OUTCOME);
        schema(
            &send,
            "send",
            &[
                ("server", T::Str),
                ("total_ms", T::Num),
                ("reply_bytes", T::Num),
                ("reply", T::Str),
                ("reply_encoding", T::Str),
            ],
        );
        schema(&server.next_connection(), "serve connection", &CONNECTION_LOG);

        let probe = json(&run_tfo(&["probe", &a, "--json"]));
        schema(
            &probe,
            "probe",
            &[
                ("target", T::Str),
                ("server", STR_OR_NULL),
                ("tfo_works", T::Bool),
                ("diagnosis", T::Str),
                ("explanation", T::Str),
                ("saved_ms", NUM_OR_NULL),
                ("attempts", T::Arr),
            ],
        );
        for attempt in probe["attempts"].as_array().unwrap() {
            schema(attempt, "probe attempt", &OUTCOME);
            schema(
                attempt,
                "probe attempt",
                &[("kind", T::Str), ("first_reply_ms", NUM_OR_NULL), ("tls", OBJ_OR_NULL)],
            );
        }
        // Several targets: a line each, then {"summary": ...}.
        let o = run_tfo(&["probe", &a, "127.0.0.1:1", "--json", "--rate", "100"]);
        let lines: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3, "{}", stdout(&o));
        schema(
            &lines[2]["summary"],
            "probe summary",
            &[
                ("targets", T::Num),
                ("addresses", T::Num),
                ("works", T::Num),
                ("wall_ms", T::Num),
                ("diagnoses", T::Arr),
            ],
        );
        for row in lines[2]["summary"]["diagnoses"].as_array().unwrap() {
            schema(row, "probe summary row", &[("diagnosis", T::Str), ("addresses", T::Num)]);
        }

        let doctor = json(&run_tfo(&["doctor", "--json"]));
        schema(
            &doctor,
            "doctor",
            &[
                ("tcp_fastopen", T::Num),
                ("bits", T::Arr),
                ("unknown_bits", T::Num),
                ("client_tfo", T::Bool),
                ("server_tfo", T::Bool),
                ("blackhole_timeout_sec", NUM_OR_NULL),
                ("key", T::Str),
                ("initial_namespace", BOOL_OR_NULL),
                ("counters", T::Obj),
                ("kernel", T::Obj),
                ("advice", T::Arr),
            ],
        );
        schema(&doctor["counters"], "doctor counters", &COUNTERS);

        // A capture of one exchange, then its decode.
        let dir = tempdir("json-contract");
        let pcap = dir.join("one.pcap");
        let mut w = fastopen_wire::capture::CaptureWriter::new(Vec::new(), fastopen_wire::LinkType::RawIp).unwrap();
        let syn = {
            let b = etherparse::PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
                .tcp(40000, 80, 1, 1000)
                .syn()
                .options_raw(&[0x22, 0x02, 0x01, 0x01])
                .unwrap();
            let mut v = Vec::new();
            b.write(&mut v, b"").unwrap();
            v
        };
        w.write(std::time::Duration::ZERO, &syn).unwrap();
        std::fs::write(&pcap, w.into_inner()).unwrap();
        let trace = json(&run_tfo(&["trace", "--read", pcap.to_str().unwrap(), "--json"]));
        schema(
            &trace,
            "trace",
            &[
                ("stats", T::Obj),
                ("verdicts", T::Obj),
                ("connections_total", T::Num),
                ("seconds", T::Num),
                ("connections", T::Arr),
                ("packets", T::Arr),
            ],
        );
        schema(
            &trace["stats"],
            "trace stats",
            &[
                ("frames", T::Num),
                ("tcp", T::Num),
                ("not_tcp", T::Num),
                ("malformed", T::Num),
                ("unknown_link", T::Num),
                ("fragments", T::Num),
                ("truncated", T::Num),
                ("not_written", T::Num),
                ("undecoded", T::Obj),
            ],
        );
        schema(
            &trace["connections"][0],
            "trace connection",
            &[
                ("client", T::Str),
                ("server", T::Str),
                ("verdict", T::Str),
                ("explanation", T::Str),
                ("bytes_in_syn", T::Num),
                ("cookie_received", STR_OR_NULL),
                ("syn_retransmits", T::Num),
                ("reset", T::Bool),
                ("packets", T::Num),
                ("events", T::Arr),
            ],
        );
        schema(
            &trace["connections"][0]["events"][0],
            "trace event",
            &[
                ("time_ms", T::Num),
                ("dir", T::Str),
                ("flags_str", T::Str),
                ("seq", T::Num),
                ("ack", T::Num),
                ("len", T::Num),
                ("tfo", OBJ_OR_NULL),
                ("note", STR_OR_NULL),
            ],
        );
        schema(
            &trace["packets"][0],
            "trace packet",
            &[
                ("frame", T::Num),
                ("time_ms", T::Num),
                ("src", T::Str),
                ("sport", T::Num),
                ("dst", T::Str),
                ("dport", T::Num),
                ("flags", T::Num),
                ("flags_str", T::Str),
                ("len", T::Num),
                ("tfo", OBJ_OR_NULL),
            ],
        );
        schema(&trace["packets"][0]["tfo"], "trace tfo option", &[("kind", T::Str), ("form", T::Str)]);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn watch_connections_and_cookie_cache() {
    in_netns("json_contract_watch", 3, || {
        let server = Server::start(&[]);
        let a = server.addr.to_string();
        assert!(run_tfo(&["send", &a, "--data", "hi"]).status.success(), "a cookie for the cache");
        let held = std::net::TcpStream::connect(server.addr).unwrap();
        let o = run_tfo(&["watch", "--once", "--json", "--role", "client"]);
        let line: Value =
            serde_json::from_str(stdout(&o).lines().next().unwrap_or_else(|| panic!("{}", stderr(&o)))).unwrap();
        schema(
            &line,
            "watch",
            &[
                ("local", T::Str),
                ("peer", T::Str),
                ("role", T::Str),
                ("tfo_used", T::Bool),
                ("fail_reason", STR_OR_NULL),
                ("pid", NUM_OR_NULL),
                ("process", STR_OR_NULL),
                ("seen", T::Str),
            ],
        );
        assert_eq!(line["local"], held.local_addr().unwrap().to_string());
        let o = run_tfo(&["watch", "--cookies", "--json"]);
        let entry: Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
        schema(
            &entry,
            "watch --cookies",
            &[
                ("peer", T::Str),
                ("source", STR_OR_NULL),
                ("cookie", STR_OR_NULL),
                ("mss", NUM_OR_NULL),
                ("syn_drops", T::Num),
                ("age_ms", T::Num),
                ("data_in_syn", T::Bool),
                ("fail_reason", STR_OR_NULL),
            ],
        );
    });
}

#[test]
fn wrap_report_and_summary_and_proxy_lines() {
    if !have_tool("json_contract_wrap", "python3") {
        return;
    }
    in_netns("json_contract_wrap", 3, || {
        let server = Server::start(&[]);
        let dir = std::env::temp_dir().join(format!("tfokit-json-wrap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = dir.join("report.jsonl");
        let client = format!(
            "import socket; s = socket.create_connection(('127.0.0.1', {})); s.sendall(b'hi'); s.recv(10); s.close()",
            server.addr.port()
        );
        let o = tfo()
            .args(["wrap", "--json", "--report"])
            .arg(&report)
            .args(["--", "python3", "-c", &client])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let summary: Value = serde_json::from_slice(&o.stderr).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
        schema(
            &summary,
            "wrap --json",
            &[
                ("processes", T::Num),
                ("connections", T::Num),
                ("data_in_syn", T::Num),
                ("cookie_only_syn", T::Num),
                ("not", T::Obj),
                ("lost_records", T::Num),
                ("exit_status", T::Num),
                ("shim_loaded", T::Bool),
            ],
        );
        let text = std::fs::read_to_string(&report).unwrap();
        let line: Value = serde_json::from_str(text.lines().next().unwrap_or_else(|| panic!("empty report"))).unwrap();
        schema(
            &line,
            "wrap --report",
            &[
                ("role", T::Str),
                ("local", STR_OR_NULL),
                ("peer", STR_OR_NULL),
                ("tfo_used", T::Bool),
                ("fail_reason", STR_OR_NULL),
                ("bytes_in_syn", NUM_OR_NULL),
                ("cookie_only_syn", T::Bool),
                ("pid", T::Num),
                ("process", T::Str),
                ("seen", T::Str),
            ],
        );
        let _ = std::fs::remove_dir_all(&dir);

        let mut proxy = tfo()
            .args(["proxy", "127.0.0.1:0", &server.addr.to_string(), "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(proxy.stdout.take().unwrap());
        let _guard = Guard(proxy);
        let mut first = String::new();
        std::io::BufRead::read_line(&mut lines, &mut first).unwrap();
        let listening: Value = serde_json::from_str(&first).unwrap();
        schema(
            &listening,
            "proxy listening",
            &[
                ("event", T::Str),
                ("addr", T::Str),
                ("upstream", T::Str),
                ("tfo_queue", T::Num),
                ("server_tfo", T::Bool),
            ],
        );
        let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut c, b"hello").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        std::io::Read::read_to_end(&mut c, &mut Vec::new()).unwrap();
        let mut conn = String::new();
        std::io::BufRead::read_line(&mut lines, &mut conn).unwrap();
        let conn: Value = serde_json::from_str(&conn).unwrap();
        schema(
            &conn,
            "proxy connection",
            &[
                ("event", T::Str),
                ("client", T::Str),
                ("upstream", T::Str),
                ("client_tfo_used", T::Bool),
                ("client_bytes_in_syn", NUM_OR_NULL),
                ("upstream_tfo_used", BOOL_OR_NULL),
                ("upstream_fail_reason", STR_OR_NULL),
                ("first_data", T::Num),
                ("bytes_to_upstream", T::Num),
                ("bytes_to_client", T::Num),
                ("duration_ms", T::Num),
                ("end", T::Str),
            ],
        );
    });
}

#[test]
fn bench_lab_and_demo() {
    if !fastopen_lab::testing::root_or_skip("json_contract_lab") {
        return;
    }
    let bench = json(&run_tfo(&["bench", "--rtt", "2ms", "--requests", "2", "--json"]));
    schema(
        &bench,
        "bench",
        &[("config", T::Obj), ("results", T::Arr), ("throughput", OBJ_OR_NULL), ("interrupted", T::Bool)],
    );
    let row = &bench["results"][0];
    schema(
        row,
        "bench row",
        &[
            ("rtt_ms", T::Num),
            ("size", T::Num),
            ("requests", T::Num),
            ("plain", OBJ_OR_NULL),
            ("tfo", OBJ_OR_NULL),
            ("tfo_cold", OBJ_OR_NULL),
            ("ratio_p50", NUM_OR_NULL),
            ("saved_ms_p50", NUM_OR_NULL),
            ("tfo_used", T::Num),
            ("failed", T::Num),
            ("failures", T::Obj),
            ("tfo_fail_reasons", T::Obj),
            ("cold_cookie_requests", T::Num),
            ("connect", OBJ_OR_NULL),
            ("link", T::Obj),
        ],
    );
    schema(
        &row["plain"],
        "bench summary",
        &[
            ("n", T::Num),
            ("min_ms", T::Num),
            ("p50_ms", T::Num),
            ("p90_ms", T::Num),
            ("p99_ms", T::Num),
            ("max_ms", T::Num),
            ("mean_ms", T::Num),
        ],
    );
    schema(&row["link"], "bench link", &LINK);

    let lab = json(&run_tfo(&["lab", "--rtt", "2ms", "--client", "true", "--json"]));
    schema(
        &lab,
        "lab",
        &[
            ("rtt_ms", T::Num),
            ("client_exit", T::Num),
            ("link", T::Obj),
            ("client_counters_delta", T::Obj),
            ("server_counters_delta", T::Obj),
        ],
    );
    schema(&lab["link"], "lab link", &LINK);
    schema(&lab["client_counters_delta"], "lab counters", &COUNTERS);

    let demo = json(&run_tfo(&["demo", "--rtt", "10ms", "--json"]));
    schema(
        &demo,
        "demo",
        &[
            ("setting", T::Str),
            ("rtt_ms", NUM_OR_NULL),
            ("server", T::Str),
            ("steps", T::Arr),
            ("saved_ms", T::Num),
            ("replay", OBJ_OR_NULL),
        ],
    );
    for step in demo["steps"].as_array().unwrap() {
        schema(step, "demo step", &OUTCOME);
        schema(
            step,
            "demo step",
            &[
                ("step", T::Num),
                ("title", T::Str),
                ("total_ms", T::Num),
                ("status_line", T::Str),
                ("server", OBJ_OR_NULL),
                ("client_counters_delta", T::Obj),
                ("server_counters_delta", T::Obj),
                ("wire", OBJ_OR_NULL),
            ],
        );
    }
    schema(&demo["steps"][2]["server"], "demo server log", &CONNECTION_LOG);
    schema(&demo["replay"], "demo replay", &[("replay_delay_ms", T::Num), ("policies", T::Arr)]);
    for policy in demo["replay"]["policies"].as_array().unwrap() {
        schema(policy, "demo replay policy", &OUTCOME);
        schema(
            policy,
            "demo replay policy",
            &[
                ("early_data", T::Str),
                ("handled", T::Num),
                ("server_logs", T::Arr),
                ("server_counters_delta", T::Obj),
                ("wire", T::Arr),
            ],
        );
        for log in policy["server_logs"].as_array().unwrap() {
            schema(log, "demo replay server log", &CONNECTION_LOG);
        }
    }
}
