//! Helpers for tests that run the real `tfo` binary and real peers inside a
//! private network namespace (see `fastopen_lab::netns`).
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

pub use fastopen::FastOpenCounters;
use fastopen_lab::netns::run_in_private;
use fastopen_lab::testing::root_or_skip;

/// Runs `f` on a thread inside a fresh namespace with `net.ipv4.tcp_fastopen = mode`.
/// Processes started by `f` live in that namespace too.
pub fn in_netns(test: &str, mode: u32, f: impl FnOnce() + Send) {
    if !root_or_skip(test) {
        return;
    }
    run_in_private(mode, f).expect("private network namespace");
}

#[allow(unused_imports)] // not every test binary uses it
pub use fastopen_lab::testing::have_tool;

pub fn tfo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tfo"))
}

/// Runs `tfo ARGS` and returns its output.
pub fn run_tfo(args: &[&str]) -> Output {
    tfo().args(args).output().expect("run tfo")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(o), stderr(o)))
}

/// A child process killed when dropped (also when a test panics).
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `tfo serve --json ...` with its address and its log lines.
pub struct Server {
    pub guard: Guard,
    pub addr: SocketAddr,
    pub lines: BufReader<ChildStdout>,
}

impl Server {
    /// Starts `tfo serve 127.0.0.1:0 --json EXTRA...` and waits for its "listening" line.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0", extra)
    }

    pub fn start_on(addr: &str, extra: &[&str]) -> Server {
        let mut child = tfo()
            .args(["serve", addr, "--json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tfo serve");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
        let guard = Guard(child);
        let first = read_json_line(&mut lines);
        assert_eq!(first["event"], "listening", "{first}");
        let addr = first["addr"].as_str().expect("addr").parse().expect("addr parses");
        Server { guard, addr, lines }
    }

    /// The next connection log line.
    pub fn next_connection(&mut self) -> serde_json::Value {
        let v = read_json_line(&mut self.lines);
        assert_eq!(v["event"], "connection", "{v}");
        v
    }

    /// The server's stderr so far (kills it first).
    pub fn stop_and_stderr(mut self) -> String {
        let _ = self.guard.0.kill();
        let mut s = String::new();
        if let Some(mut e) = self.guard.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

fn read_json_line(lines: &mut BufReader<ChildStdout>) -> serde_json::Value {
    let mut line = String::new();
    let n = lines.read_line(&mut line).expect("read server output");
    assert!(n > 0, "tfo serve exited early");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("server line is not JSON ({e}): {line:?}"))
}

pub fn counters() -> FastOpenCounters {
    FastOpenCounters::read().expect("counters")
}

/// A fresh scratch directory for one test.
pub fn tempdir(test: &str) -> std::path::PathBuf {
    let d =
        std::env::temp_dir().join(format!("tfo-test-{test}-{}-{:?}", std::process::id(), std::thread::current().id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The exit code, with stderr in the failure message.
pub fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

/// Writes a key file as a careful operator does: mode 0600.
pub fn write_key(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The lab namespaces (`tfokit-PID-...`) that process `pid` created and still has.
pub fn lab_namespaces_of(pid: u32) -> Vec<String> {
    let its_own = format!("{}{pid}-", fastopen_lab::netns::NAME_PREFIX);
    std::fs::read_dir("/run/netns")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(&its_own)).collect())
        .unwrap_or_default()
}
