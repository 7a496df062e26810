//! The walkthrough's echo server, with TFO and with the answer to "did this
//! connection's data come in the SYN?".
//!
//! Run: `cargo run -p fastopen --example echo_server [ADDR]` (default 127.0.0.1:8000).
//! Server TFO must be on: `sysctl -w net.ipv4.tcp_fastopen=3` (or `tfo doctor --fix`).

use std::io::{Read, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8000".into()).parse()?;
    if !fastopen::host::read_mode()?.server() {
        eprintln!("warning: server TFO is off here (net.ipv4.tcp_fastopen lacks 0x2); serving plain TCP");
    }
    // The walkthrough's `setsockopt(SOL_TCP, 23, 5)`: a TFO queue of 5.
    let listener = fastopen::ListenerBuilder::new(addr).queue_len(5).bind()?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (mut stream, peer, outcome) = listener.accept()?;
        println!("{peer}: {outcome}");
        let mut buf = [0u8; 2048];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            print!("{}", String::from_utf8_lossy(&buf[..n]));
            stream.write_all(&buf[..n])?;
        }
    }
}
