//! Hostile bytes through every parser of fastopen-wire: packet views (raw IP,
//! Ethernet, Linux SLL), the options iterator, the TFO rewrite, the tracker,
//! and the capture-file readers. Nothing may panic.
#![no_main]

use std::time::Duration;

use fastopen_wire::capture::{CaptureReader, PcapChunks};
use fastopen_wire::rewrite::{strip_fast_open, tcp_checksum_ok};
use fastopen_wire::timeline::Tracker;
use fastopen_wire::{LinkType, OptionsIter, TcpPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut tracker = Tracker::new();
    for (i, link) in [LinkType::RawIp, LinkType::Ethernet, LinkType::LinuxSll].into_iter().enumerate() {
        if let Ok(p) = TcpPacket::parse(link, data) {
            let _ = p.options_iter().count();
            let _ = p.fast_open().map(|f| f.to_string());
            tracker.push(Duration::from_millis(i as u64), i as u8, &p);
        }
    }
    for c in tracker.connections() {
        let _ = c.verdict().to_string();
        let _ = c.cookie_received();
    }
    let _ = OptionsIter::new(data).count();
    let mut copy = data.to_vec();
    let _ = strip_fast_open(&mut copy);
    let _ = tcp_checksum_ok(data);
    if let Ok(reader) = CaptureReader::new(data) {
        for frame in reader.take(64) {
            if let Ok(f) = frame {
                if let Some(link) = f.link {
                    let _ = TcpPacket::parse(link, &f.data);
                }
            }
        }
    }
    let _ = PcapChunks::new().feed(data, |_| {});
});
