//! `cargo bench -p tfo --bench wrap_cost` (as root): what `tfo wrap`'s shim
//! costs per connection, side by side in one run.
//!
//! In a private namespace (tcp_fastopen=3), `tfo serve` (raw echo, one worker)
//! answers; a client (this bench re-run as a child) makes CONNS connections
//! (default 5 000) one after the other: socket, connect, write 64 bytes, read
//! them back, close. Two clients doing the same kernel work:
//! - `self`: the client sets TCP_FASTOPEN_CONNECT itself, no shim;
//! - `wrapped`: the client asks nothing, under `tfo wrap` (the shim sets it,
//!   tracks the socket, reports it at close through the pipe).
//!
//! Each takes ROUNDS turns (default 5), alternating who goes first; reported:
//! µs per connection of each, the difference, and the medians. The client's
//! own time per connection is measured inside it (wall clock around the loop);
//! beside it, the CPU time (user + system) per connection of the client and,
//! when wrapped, of `tfo wrap` reading the records: a figure that a busy
//! machine's scheduling moves less than the wall clock.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::sys::resource::UsageWho;

mod support;

use support::env;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--client") {
        client(&args[i + 1], args[i + 2].parse().expect("address"), args[i + 3].parse().expect("count"));
        return;
    }
    support::root_or_exit("wrap_cost");
    let (rounds, conns) = (env("ROUNDS", 5), env("CONNS", 5_000));
    fastopen_lab::netns::run_in_private(3, move || bench(rounds, conns)).expect("namespace");
}

/// The child: `count` connections, then µs per connection on stdout.
fn client(mode: &str, addr: SocketAddr, count: u64) {
    use socket2::{Domain, Socket, Type};
    let request = [7u8; 64];
    let mut reply = [0u8; 64];
    let started = Instant::now();
    for _ in 0..count {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        if mode == "self" {
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::TcpFastOpenConnect, &true)
                .expect("TCP_FASTOPEN_CONNECT");
        }
        socket.connect(&addr.into()).expect("connect");
        let mut stream: std::net::TcpStream = socket.into();
        stream.write_all(&request).expect("write");
        stream.read_exact(&mut reply).expect("read");
    }
    println!("{:.3}", started.elapsed().as_secs_f64() * 1e6 / count as f64);
}

/// The client's wall-clock µs per connection, and the CPU µs per connection
/// of it and its `tfo wrap` (from getrusage of the reaped children).
fn run_client(mode: &str, addr: SocketAddr, count: u64) -> (f64, f64) {
    let cpu_before = support::cpu(UsageWho::RUSAGE_CHILDREN);
    let me = std::env::current_exe().expect("the bench binary");
    let mut command = if mode == "wrapped" {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tfo"));
        c.args(["wrap", "--quiet", "--"]).arg(&me);
        c
    } else {
        Command::new(&me)
    };
    let out = command
        .args(["--client", mode, &addr.to_string(), &count.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run the client");
    assert!(out.status.success(), "the {mode} client failed");
    let cpu = (support::cpu(UsageWho::RUSAGE_CHILDREN) - cpu_before).as_secs_f64() * 1e6 / count as f64;
    (String::from_utf8_lossy(&out.stdout).trim().parse().expect("µs per connection"), cpu)
}

fn bench(rounds: u64, conns: u64) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_tfo"))
        .args(["serve", "127.0.0.1:7501", "--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tfo serve");
    let addr: SocketAddr = "127.0.0.1:7501".parse().unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "tfo serve did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run_client("self", addr, 100); // the cookie, and warm caches
    println!("wrap_cost: {conns} connections per client per round; µs per connection (connect, 64 B each way, close)");
    println!(
        "{:>5} {:>10} {:>10} {:>10}   {:>10} {:>10} {:>10}",
        "round", "self", "wrapped", "added", "cpu self", "wrapped", "added"
    );
    let (mut plain, mut wrapped, mut plain_cpu, mut wrapped_cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 { ["self", "wrapped"] } else { ["wrapped", "self"] };
        let mut got = [(0.0, 0.0); 2];
        for mode in order {
            got[usize::from(mode == "wrapped")] = run_client(mode, addr, conns);
        }
        let ((p, pc), (w, wc)) = (got[0], got[1]);
        println!(
            "{:>5} {:>10.2} {:>10.2} {:>+10.2}   {:>10.2} {:>10.2} {:>+10.2}",
            round + 1,
            p,
            w,
            w - p,
            pc,
            wc,
            wc - pc
        );
        plain.push(p);
        wrapped.push(w);
        plain_cpu.push(pc);
        wrapped_cpu.push(wc);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, w) = (median(&mut plain), median(&mut wrapped));
    let (pc, wc) = (median(&mut plain_cpu), median(&mut wrapped_cpu));
    println!(
        "median {:>10.2} {:>10.2} {:>+10.2}   {:>10.2} {:>10.2} {:>+10.2}  (target: at most +5 µs)",
        p,
        w,
        w - p,
        pc,
        wc,
        wc - pc
    );
    let _ = server.kill();
    let _ = server.wait();
}
