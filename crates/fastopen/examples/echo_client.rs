//! The walkthrough's client: `sendto(MSG_FASTOPEN)` with the data, print the
//! reply, then say whether TFO was used and why not.
//!
//! Run it twice: `cargo run -p fastopen --example echo_client [ADDR] [TEXT]`.
//! The first run asks for a cookie; the second carries its data in the SYN.

use std::io::Read;
use std::net::Shutdown;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8000".into()).parse()?;
    let text = args.next().unwrap_or_else(|| "Hello, TFO!\n".into());
    let (mut stream, outcome) = fastopen::Connector::new().connect(addr, text.as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    print!("{reply}");
    println!("{outcome}");
    Ok(())
}
