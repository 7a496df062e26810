//! What the link counts and captures: per-direction counters, middlebox
//! counts, how late packets left, the capture at both ends, and the clock
//! they are stamped with. Written by the scheduler (`sched`) and the link's
//! I/O (`link`), read by reports.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};

use crate::middlebox::{Direction, MiddleboxCounters};

/// CLOCK_MONOTONIC in nanoseconds.
pub(crate) fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap_or_else(|_| TimeSpec::new(0, 0));
    (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64)
}

/// Counters of one direction.
#[derive(Debug, Default)]
pub struct DirectionCounters {
    /// Packets delivered to the other side.
    pub forwarded: AtomicU64,
    /// Bytes delivered.
    pub bytes: AtomicU64,
    /// Packets dropped by random loss.
    pub lost: AtomicU64,
    /// Packets dropped because the queue (buffer pool) was full.
    pub queue_drops: AtomicU64,
    /// Packets dropped by a middlebox.
    pub middlebox_drops: AtomicU64,
    /// Packets still queued (delayed) when the link stopped: never delivered.
    pub unsent_at_stop: AtomicU64,
}

/// Everything the link counts.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Client -> server.
    pub to_server: DirectionCounters,
    /// Server -> client.
    pub to_client: DirectionCounters,
    /// What the middleboxes did.
    pub middlebox: MiddleboxCounters,
    /// How late packets left, in 10 us buckets (the last one: 2 ms or more).
    lateness: LatenessBuckets,
    /// Packet capture, when switched on (see [`LinkStats::set_capture`]).
    capturing: AtomicBool,
    captured: std::sync::Mutex<Vec<CapturedPacket>>,
    /// Packets kept per capture point (sent, delivered), and those not kept.
    capture_kept: [AtomicU64; 2],
    capture_dropped: [AtomicU64; 2],
    /// Why the forwarder stopped, if it failed (see [`LinkStats::failure`]).
    pub(crate) failure: std::sync::Mutex<Option<String>>,
}

/// Where on the link a packet was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapturePoint {
    /// As the sender's stack sent it (before loss and middleboxes).
    Sent,
    /// As the link delivered it to the receiver (after middleboxes and delay).
    Delivered,
}

/// A packet copied off the link.
#[derive(Debug, Clone)]
pub struct CapturedPacket {
    /// CLOCK_MONOTONIC time.
    pub time: Duration,
    /// Where it was seen.
    pub point: CapturePoint,
    /// Which way it went.
    pub direction: Direction,
    /// The raw IP packet.
    pub bytes: Vec<u8>,
}

/// Packets kept at most while capturing, per capture point.
pub const CAPTURE_LIMIT: u64 = 100_000;

const LATENESS_BUCKET_NS: u64 = 10_000;
const LATENESS_BUCKETS: usize = 200;

#[derive(Debug)]
struct LatenessBuckets([AtomicU64; LATENESS_BUCKETS]);

impl Default for LatenessBuckets {
    fn default() -> Self {
        LatenessBuckets(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl LinkStats {
    /// Starts (or stops) copying every packet on the link, as sent and as
    /// delivered (up to [`CAPTURE_LIMIT`] at each point; the rest are counted in
    /// [`LinkCounters::capture_dropped`]). Off by default: the hot path then copies nothing.
    pub fn set_capture(&self, on: bool) {
        self.capturing.store(on, Ordering::Relaxed);
    }

    /// Takes the packets captured so far.
    pub fn take_capture(&self) -> Vec<CapturedPacket> {
        self.captured.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }

    /// The counters of one direction.
    pub fn direction(&self, direction: Direction) -> &DirectionCounters {
        match direction {
            Direction::ToServer => &self.to_server,
            Direction::ToClient => &self.to_client,
        }
    }

    /// Why the forwarder thread stopped, if it failed: a device error. The
    /// link then carries nothing, so callers check this instead of waiting
    /// out their timeouts.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    pub(crate) fn capture(&self, point: CapturePoint, direction: Direction, bytes: &[u8]) {
        if !self.capturing.load(Ordering::Relaxed) {
            return;
        }
        let at = match point {
            CapturePoint::Sent => 0,
            CapturePoint::Delivered => 1,
        };
        if self.capture_kept[at].fetch_add(1, Ordering::Relaxed) >= CAPTURE_LIMIT {
            self.capture_dropped[at].fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(mut v) = self.captured.lock() {
            v.push(CapturedPacket { time: Duration::from_nanos(now_ns()), point, direction, bytes: bytes.to_vec() });
        }
    }

    pub(crate) fn record_lateness(&self, ns: u64) {
        let i = ((ns / LATENESS_BUCKET_NS) as usize).min(LATENESS_BUCKETS - 1);
        self.lateness.0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile (0..=1) of how late packets left the link, in
    /// microseconds (upper edge of a 10 us bucket); `None` before any packet.
    pub fn lateness_quantile_us(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self.lateness.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some((i as u64 + 1) * LATENESS_BUCKET_NS / 1000);
            }
        }
        None
    }
}

/// A plain copy of the counters, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct LinkCounters {
    /// Packets client -> server delivered.
    pub to_server_packets: u64,
    /// Packets server -> client delivered.
    pub to_client_packets: u64,
    /// Bytes client -> server delivered.
    pub to_server_bytes: u64,
    /// Bytes server -> client delivered.
    pub to_client_bytes: u64,
    /// Packets lost at random (both ways).
    pub lost: u64,
    /// Packets dropped for a full queue (both ways).
    pub queue_drops: u64,
    /// Packets still queued when the link stopped (both ways): never delivered.
    pub unsent_at_stop: u64,
    /// Packets the capture did not keep (over its limit per capture point).
    pub capture_dropped: u64,
    /// What each middlebox did, by counter name (`stripped`,
    /// `dropped_syn_data`, `dropped_tfo_syn`, `replayed`; see
    /// [`Middlebox::POLICIES`](crate::Middlebox::POLICIES)); flattened into the JSON.
    #[serde(flatten)]
    pub middleboxes: crate::middlebox::MiddleboxCounts,
    /// Median lateness of packets leaving the link versus their due time, us (10 us steps).
    pub late_p50_us: Option<u64>,
    /// 99th percentile of that lateness, us.
    pub late_p99_us: Option<u64>,
}

impl LinkCounters {
    /// The counts since `earlier` (the lateness quantiles stay those of the whole run).
    pub fn since(&self, earlier: &LinkCounters) -> LinkCounters {
        LinkCounters {
            to_server_packets: self.to_server_packets.saturating_sub(earlier.to_server_packets),
            to_client_packets: self.to_client_packets.saturating_sub(earlier.to_client_packets),
            to_server_bytes: self.to_server_bytes.saturating_sub(earlier.to_server_bytes),
            to_client_bytes: self.to_client_bytes.saturating_sub(earlier.to_client_bytes),
            lost: self.lost.saturating_sub(earlier.lost),
            queue_drops: self.queue_drops.saturating_sub(earlier.queue_drops),
            unsent_at_stop: self.unsent_at_stop.saturating_sub(earlier.unsent_at_stop),
            capture_dropped: self.capture_dropped.saturating_sub(earlier.capture_dropped),
            middleboxes: self.middleboxes.since(&earlier.middleboxes),
            ..self.clone()
        }
    }
}

impl LinkStats {
    /// Reads all counters.
    pub fn snapshot(&self) -> LinkCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkCounters {
            to_server_packets: g(&self.to_server.forwarded),
            to_client_packets: g(&self.to_client.forwarded),
            to_server_bytes: g(&self.to_server.bytes),
            to_client_bytes: g(&self.to_client.bytes),
            lost: g(&self.to_server.lost) + g(&self.to_client.lost),
            queue_drops: g(&self.to_server.queue_drops) + g(&self.to_client.queue_drops),
            unsent_at_stop: g(&self.to_server.unsent_at_stop) + g(&self.to_client.unsent_at_stop),
            capture_dropped: g(&self.capture_dropped[0]) + g(&self.capture_dropped[1]),
            middleboxes: self.middlebox.snapshot(),
            late_p50_us: self.lateness_quantile_us(0.5),
            late_p99_us: self.lateness_quantile_us(0.99),
        }
    }
}
