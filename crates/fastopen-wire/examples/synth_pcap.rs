//! Writes a synthetic capture for decoding benchmarks: TFO connections
//! (cookie request + cookie, then data in the SYN) mixed with data packets.
//!
//! `cargo run --release -p fastopen-wire --example synth_pcap -- PACKETS FILE`

use std::io::BufWriter;
use std::time::Duration;

use fastopen_wire::capture::CaptureWriter;
use fastopen_wire::LinkType;

/// One segment of the synthetic connection on client port `sport`.
struct Seg<'a> {
    from_client: bool,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    opts: &'a [u8],
    payload: &'a [u8],
}

fn packet(sport: u16, s: Seg<'_>) -> Vec<u8> {
    let (client, server) = ([198, 18, 0, 1], [198, 18, 0, 2]);
    let (src, dst, sp, dp) = if s.from_client { (client, server, sport, 8000) } else { (server, client, 8000, sport) };
    let mut b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sp, dp, s.seq, 64240);
    if s.syn {
        b = b.syn();
    }
    if let Some(a) = s.ack {
        b = b.ack(a);
    }
    let b = b.options_raw(s.opts).expect("options");
    let mut out = Vec::with_capacity(b.size(s.payload.len()));
    b.write(&mut out, s.payload).expect("write");
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().ok_or("usage: synth_pcap PACKETS FILE")?.parse()?;
    let path = args.next().ok_or("usage: synth_pcap PACKETS FILE")?;
    let mut w = CaptureWriter::new(BufWriter::new(std::fs::File::create(&path)?), LinkType::Ethernet)?;
    let request = [0x22, 0x02, 0x01, 0x01];
    let cookie = [0x22, 0x0a, 0xc2, 0xa1, 0x5a, 0xb5, 0x7a, 0xa2, 0xf3, 0x54, 0x01, 0x01];
    let body = vec![b'x'; 200];
    let mut n = 0u64;
    let mut t = Duration::from_secs(1_700_000_000);
    let mut conn = 0u32;
    while n < total {
        let sport = 10_000 + (conn % 50_000) as u16;
        let isn = conn.wrapping_mul(7919);
        let warm = conn % 2 == 1;
        let syn_payload: &[u8] = if warm { &body[..75] } else { b"" };
        let seg = |from_client, seq, ack, syn, opts, payload| Seg { from_client, seq, ack, syn, opts, payload };
        let synack_opts: &[u8] = if warm { &[] } else { &cookie };
        let syn_opts: &[u8] = if warm { &cookie } else { &request };
        let frames = [
            packet(sport, seg(true, isn, None, true, syn_opts, syn_payload)),
            packet(sport, seg(false, 5000, Some(isn + 1 + syn_payload.len() as u32), true, synack_opts, b"")),
            packet(sport, seg(true, isn + 1, Some(5001), false, &[], &body[..100])),
            packet(sport, seg(false, 5001, Some(isn + 101), false, &[], &body)),
            packet(sport, seg(true, isn + 101, Some(5201), false, &[], b"")),
            packet(sport, seg(false, 5201, Some(isn + 101), false, &[], &body)),
            packet(sport, seg(true, isn + 101, Some(5401), false, &[], b"")),
            packet(sport, seg(false, 5401, Some(isn + 101), false, &[], &body)),
            packet(sport, seg(true, isn + 101, Some(5601), false, &[], b"")),
            packet(sport, seg(false, 5601, Some(isn + 101), false, &[], &body)),
        ];
        for f in frames.iter().take((total - n).min(10) as usize) {
            t += Duration::from_micros(37);
            w.write(t, f)?;
            n += 1;
        }
        conn += 1;
    }
    w.into_inner();
    eprintln!("wrote {n} packets in {conn} connections to {path}");
    Ok(())
}
