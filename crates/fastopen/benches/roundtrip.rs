//! `cargo bench -p fastopen` (as root): the cost of the library on a TFO round trip.
//!
//! On loopback, inside a private network namespace, against one echo server,
//! interleaving in every round (order rotating, so drift hits all alike):
//!
//! - `library tfo`:   `Connector::connect` with data in the SYN, half-close, read reply;
//! - `libc tfo`:      the same syscall sequence written directly against libc
//!   (socket, sendto MSG_FASTOPEN, poll, SO_ERROR, TCP_INFO, fcntl, shutdown, read);
//! - `libc minimal`:  the walkthrough's blocking sendto MSG_FASTOPEN, shutdown, read;
//! - `library plain`: `Connector::new().tfo(false)`: connect, then write.
//!
//! It prints per-variant median, mean and p99 in microseconds and the ratios
//! library/libc (target: overhead within 5%) and TFO/plain. Set BENCH_N for the
//! number of round trips per variant (default 20000).
//!
//! The `libc` variants are the baseline being measured against, so this file,
//! alone outside `fastopen::sys`, calls libc with `unsafe`.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use fastopen::{Connector, ListenerBuilder};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list; nothing to list.
    }
    if !fastopen_lab::netns::is_root() {
        eprintln!(
            "roundtrip bench: needs root (it runs in a private network namespace); run `sudo cargo bench -p fastopen`"
        );
        std::process::exit(2);
    }
    let n: usize = std::env::var("BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    fastopen_lab::netns::run_in_private(3, || run(n)).expect("private namespace");
}

type Variant = (&'static str, fn(SocketAddr));

fn run(n: usize) {
    fastopen_lab::netns::set_sysctl("net.ipv4.tcp_tw_reuse", "1").expect("tw_reuse");
    fastopen_lab::netns::set_sysctl("net.ipv4.ip_local_port_range", "10000 65000").expect("port range");
    let listener = ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind().expect("bind");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || loop {
        let Ok((mut s, _, _)) = listener.accept() else { continue };
        let mut buf = Vec::with_capacity(256);
        if s.read_to_end(&mut buf).is_ok() {
            let _ = s.write_all(&buf);
        }
    });
    let variants: [Variant; 4] = [
        ("library tfo", library_tfo),
        ("libc tfo", libc_tfo),
        ("libc minimal", libc_minimal),
        ("library plain", library_plain),
    ];
    // Warm up: get the cookie, fill caches.
    for _ in 0..500 {
        for (_, f) in &variants {
            f(addr);
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); variants.len()];
    for round in 0..n {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let start = Instant::now();
            (variants[i].1)(addr);
            samples[i].push(start.elapsed());
        }
    }
    println!("TFO echo round trip on loopback, {n} per variant, interleaved; times in microseconds");
    println!("{:<15} {:>9} {:>9} {:>9}", "variant", "median", "mean", "p99");
    let mut stats = Vec::new();
    for ((name, _), s) in variants.iter().zip(samples.iter_mut()) {
        s.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let median = us(s[s.len() / 2]);
        let mean = s.iter().map(|d| us(*d)).sum::<f64>() / s.len() as f64;
        let p99 = us(s[s.len() * 99 / 100]);
        println!("{name:<15} {median:>9.2} {mean:>9.2} {p99:>9.2}");
        stats.push((median, mean));
    }
    println!(
        "library/libc (same syscalls): median {:.3}, mean {:.3}   (target <= 1.05)",
        stats[0].0 / stats[1].0,
        stats[0].1 / stats[1].1
    );
    println!(
        "library tfo / library plain:  median {:.3}, mean {:.3}",
        stats[0].0 / stats[3].0,
        stats[0].1 / stats[3].1
    );
}

fn finish(mut s: TcpStream) {
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::with_capacity(64);
    s.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, REQUEST);
}

fn library_tfo(addr: SocketAddr) {
    let (s, outcome) = Connector::new().connect(addr, REQUEST).unwrap();
    debug_assert!(outcome.tfo_used());
    finish(s);
}

fn library_plain(addr: SocketAddr) {
    let (s, _) = Connector::new().tfo(false).connect(addr, REQUEST).unwrap();
    finish(s);
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_in, libc::socklen_t) {
    let SocketAddr::V4(v4) = addr else { panic!("IPv4 only") };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
        sin_zero: [0; 8],
    };
    (sin, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
}

/// `socket()` and `sendto(MSG_FASTOPEN)` with the request; returns the descriptor.
///
/// # Safety
/// Plain syscalls with pointers to live locals; the caller owns the returned fd.
unsafe fn socket_and_sendto(addr: SocketAddr, nonblocking: bool) -> libc::c_int {
    let (sin, len) = sockaddr(addr);
    // SAFETY: as the function's contract says.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, libc::IPPROTO_TCP);
        assert!(fd >= 0);
        if nonblocking {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let n = libc::sendto(
            fd,
            REQUEST.as_ptr().cast(),
            REQUEST.len(),
            libc::MSG_FASTOPEN | libc::MSG_NOSIGNAL,
            (&sin as *const libc::sockaddr_in).cast(),
            len,
        );
        assert_eq!(n, REQUEST.len() as isize, "the cookie must be warm");
        fd
    }
}

/// The library's syscall sequence, by hand.
fn libc_tfo(addr: SocketAddr) {
    // SAFETY: plain syscalls on a descriptor we own, with pointers to live locals.
    unsafe {
        let fd = socket_and_sendto(addr, true);
        let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
        libc::poll(&mut pfd, 1, -1);
        let mut err: libc::c_int = 0;
        let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut elen);
        let mut info = [0u8; 512];
        let mut ilen = info.len() as libc::socklen_t;
        libc::getsockopt(fd, libc::SOL_TCP, libc::TCP_INFO, info.as_mut_ptr().cast(), &mut ilen);
        assert!(err == 0 && info[5] & 0x20 != 0);
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        finish(TcpStream::from(OwnedFd::from_raw_fd(fd)));
    }
}

/// The walkthrough's client: blocking sendto(MSG_FASTOPEN), nothing else.
fn libc_minimal(addr: SocketAddr) {
    // SAFETY: the fd comes from socket_and_sendto and is owned from here on.
    let s = unsafe { TcpStream::from(OwnedFd::from_raw_fd(socket_and_sendto(addr, false))) };
    finish(s);
}
