//! The link's scheduler: pure decisions on a clock that is passed in.
//!
//! Packets and times go in; release times, drops and replays come out. It
//! owns the packet buffers (a pool allocated up front, so nothing is
//! allocated per packet) and the two direction queues, and applies, in order:
//! random loss, middleboxes, the bandwidth limit (a packet leaves the "wire"
//! after the previous one plus its serialization time), delay with jitter,
//! and the no-overtaking rule (a packet is never released before the one
//! queued before it in the same direction). No I/O and no clock reads here:
//! [`crate::link`] does those, and the tests drive a simulated clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;

use crate::middlebox::{inspect, Direction, Middlebox, Verdict};
use crate::path::PathConfig;
use crate::stats::{CapturePoint, LinkStats};

/// A packet waiting in a direction's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    /// When it is due, in ns of the caller's clock (compared first).
    release_ns: u64,
    /// Admission order, so that equal release times keep their order.
    order: u64,
    /// Its buffer.
    slot: u32,
    /// Its length.
    len: u32,
}

/// What happened to an admitted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queued; it leaves at this time (ns).
    Queued {
        /// Release time.
        release_ns: u64,
    },
    /// Dropped by random loss.
    Lost,
    /// Dropped by a middlebox.
    MiddleboxDrop,
}

/// A packet whose time has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Which way it goes.
    pub direction: Direction,
    /// When it was due (ns).
    pub due_ns: u64,
    /// Its buffer: read it with [`Scheduler::packet`], then give it back
    /// with [`Scheduler::sent`].
    pub slot: u32,
    len: u32,
}

/// The scheduler of both directions of the link.
#[derive(Debug)]
pub struct Scheduler {
    config: PathConfig,
    slots: Vec<Box<[u8]>>,
    free: Vec<u32>,
    queues: [BinaryHeap<Reverse<Pending>>; 2],
    last_release: [u64; 2],
    wire_free: [u64; 2],
    order: u64,
    rng: fastrand::Rng,
}

impl Scheduler {
    /// A scheduler with `capacity` buffers of `slot_len` bytes.
    pub fn new(config: PathConfig, capacity: usize, slot_len: usize) -> Scheduler {
        let rng = fastrand::Rng::with_seed(config.seed);
        Scheduler {
            config,
            slots: (0..capacity).map(|_| vec![0u8; slot_len].into_boxed_slice()).collect(),
            free: (0..capacity as u32).rev().collect(),
            queues: [BinaryHeap::with_capacity(capacity), BinaryHeap::with_capacity(capacity)],
            last_release: [0; 2],
            wire_free: [0; 2],
            order: 0,
            rng,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PathConfig {
        &self.config
    }

    /// A free buffer to receive a packet into, or `None` when the queue is full
    /// (then read the packet elsewhere and count it with [`Scheduler::queue_drop`]).
    pub fn buffer(&mut self) -> Option<(u32, &mut [u8])> {
        let slot = self.free.pop()?;
        Some((slot, &mut self.slots[slot as usize]))
    }

    /// Gives back a buffer that received nothing.
    pub fn unused(&mut self, slot: u32) {
        self.free.push(slot);
    }

    /// Counts a packet dropped because no buffer was free (tail drop).
    pub fn queue_drop(&self, direction: Direction, stats: &LinkStats) {
        stats.direction(direction).queue_drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Decides the fate of the `len` bytes received into `slot` at `now_ns`.
    pub fn admit(&mut self, now_ns: u64, direction: Direction, slot: u32, len: usize, stats: &LinkStats) -> Admission {
        let d = direction.index();
        let conf = if direction == Direction::ToServer { self.config.to_server } else { self.config.to_client };
        stats.capture(CapturePoint::Sent, direction, &self.slots[slot as usize][..len]);
        if conf.loss > 0.0 && self.rng.f64() < conf.loss {
            stats.direction(direction).lost.fetch_add(1, Ordering::Relaxed);
            self.free.push(slot);
            return Admission::Lost;
        }
        let verdict =
            inspect(&self.config.middleboxes, direction, &mut self.slots[slot as usize][..len], &stats.middlebox);
        if verdict == Verdict::Drop {
            stats.direction(direction).middlebox_drops.fetch_add(1, Ordering::Relaxed);
            self.free.push(slot);
            return Admission::MiddleboxDrop;
        }
        let mut depart = now_ns;
        if let Some(rate) = conf.rate_bps {
            let start = now_ns.max(self.wire_free[d]);
            let serialization = (len as u64 * 8).saturating_mul(1_000_000_000) / rate.max(1);
            self.wire_free[d] = start + serialization;
            depart = self.wire_free[d];
        }
        let mut delay = conf.delay.as_nanos() as i128;
        let jitter = conf.jitter.as_nanos() as i128;
        if jitter > 0 {
            delay += self.rng.i128(-jitter..=jitter);
        }
        let release_ns = (depart + delay.max(0) as u64).max(self.last_release[d]);
        self.last_release[d] = release_ns;
        self.push(d, release_ns, slot, len);
        if let Verdict::ForwardAndReplay(after) = verdict {
            // The copy goes out only if a buffer is free; only then is it counted.
            if let Some(copy) = self.free.pop() {
                let packet = self.slots[slot as usize][..len].to_owned();
                self.slots[copy as usize][..len].copy_from_slice(&packet);
                self.push(d, release_ns + after.as_nanos() as u64, copy, len);
                if let Some(replay) = self.config.middleboxes.iter().find(|m| matches!(m, Middlebox::ReplaySynData(_)))
                {
                    stats.middlebox.add(*replay);
                }
            }
        }
        Admission::Queued { release_ns }
    }

    fn push(&mut self, d: usize, release_ns: u64, slot: u32, len: usize) {
        self.order += 1;
        self.queues[d].push(Reverse(Pending { release_ns, order: self.order, slot, len: len as u32 }));
    }

    /// Packets queued in `direction` (waiting for their time).
    pub fn queued(&self, direction: Direction) -> usize {
        self.queues[direction.index()].len()
    }

    /// The earliest release time of any queued packet.
    pub fn next_release(&self) -> Option<u64> {
        self.queues.iter().filter_map(|q| q.peek().map(|Reverse(p)| p.release_ns)).min()
    }

    /// The next packet due at `now_ns`, if any (to-server first).
    pub fn pop_due(&mut self, now_ns: u64) -> Option<Release> {
        for direction in [Direction::ToServer, Direction::ToClient] {
            let queue = &mut self.queues[direction.index()];
            if queue.peek().is_some_and(|Reverse(p)| p.release_ns <= now_ns) {
                let Reverse(p) = queue.pop()?;
                return Some(Release { direction, due_ns: p.release_ns, slot: p.slot, len: p.len });
            }
        }
        None
    }

    /// The bytes of a released packet.
    pub fn packet(&self, release: &Release) -> &[u8] {
        &self.slots[release.slot as usize][..release.len as usize]
    }

    /// Returns a released packet's buffer to the pool.
    pub fn sent(&mut self, release: Release) {
        self.free.push(release.slot);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::path::DirectionConfig;

    const MS: u64 = 1_000_000;

    fn path(to_server: DirectionConfig, seed: u64) -> PathConfig {
        PathConfig { to_server, seed, ..PathConfig::default() }
    }

    /// Admits one packet of `len` bytes to the server at `now`.
    fn admit(s: &mut Scheduler, stats: &LinkStats, now: u64, len: usize) -> Option<Admission> {
        let (slot, buf) = s.buffer()?;
        buf[..len].fill(0);
        Some(s.admit(now, Direction::ToServer, slot, len, stats))
    }

    fn drain(s: &mut Scheduler) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(r) = s.pop_due(u64::MAX) {
            out.push(r.due_ns);
            s.sent(r);
        }
        out
    }

    #[test]
    fn delay_is_exact_and_order_kept() {
        let stats = LinkStats::default();
        let mut s =
            Scheduler::new(path(DirectionConfig { delay: Duration::from_millis(10), ..Default::default() }, 1), 16, 64);
        for i in 0..10 {
            assert_eq!(admit(&mut s, &stats, i * MS, 40), Some(Admission::Queued { release_ns: i * MS + 10 * MS }));
        }
        assert_eq!(s.pop_due(10 * MS - 1), None, "nothing before its time");
        assert_eq!(drain(&mut s), (0..10).map(|i| i * MS + 10 * MS).collect::<Vec<_>>());
    }

    #[test]
    fn loss_is_within_binomial_bounds_and_seeded() {
        let n = 100_000u64;
        let p = 0.1;
        let run = |seed| {
            let stats = LinkStats::default();
            let mut s = Scheduler::new(path(DirectionConfig { loss: p, ..Default::default() }, seed), 4, 64);
            for i in 0..n {
                admit(&mut s, &stats, i, 40).unwrap();
                drain(&mut s);
            }
            stats.snapshot().lost
        };
        let lost = run(7);
        // Mean 10 000, standard deviation sqrt(n p (1-p)) = 94.9: five of them either way.
        let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
        assert!((lost as f64 - mean).abs() < 5.0 * sd, "lost {lost} of {n}");
        assert_eq!(run(7), lost, "the same seed drops the same packets");
        assert_ne!(run(8), lost, "another seed, other drops");
    }

    #[test]
    fn jitter_stays_within_its_bounds_without_reordering() {
        let (delay, jitter) = (10 * MS, 2 * MS);
        let conf = DirectionConfig {
            delay: Duration::from_nanos(delay),
            jitter: Duration::from_nanos(jitter),
            ..Default::default()
        };
        // Sparse packets (5 ms apart, more than 2 x jitter): each is held delay +- jitter.
        // Dense ones (0.1 ms apart): jitter would reorder them, the link must not.
        for (gap, dense) in [(5 * MS, false), (100_000, true)] {
            let stats = LinkStats::default();
            let mut s = Scheduler::new(path(conf, 3), 64, 64);
            let (mut previous, mut spread) = (0u64, (u64::MAX, 0u64));
            for i in 0..20_000u64 {
                let now = i * gap;
                let Some(Admission::Queued { release_ns }) = admit(&mut s, &stats, now, 40) else {
                    panic!("not queued")
                };
                let held = release_ns - now;
                assert!(release_ns >= previous, "packet {i} overtook the one before");
                assert!(held >= delay - jitter, "packet {i} held {held} ns");
                assert!(held <= delay + jitter || (dense && release_ns == previous), "packet {i} held {held} ns");
                spread = (spread.0.min(held), spread.1.max(held));
                previous = release_ns;
                drain(&mut s);
            }
            if !dense {
                let margin = jitter / 100;
                assert!(spread.0 < delay - jitter + margin && spread.1 > delay + jitter - margin, "{spread:?}");
            }
        }
    }

    #[test]
    fn rate_limit_is_within_one_percent() {
        let stats = LinkStats::default();
        let rate = 10_000_000; // 10 Mbit/s
        let mut s = Scheduler::new(path(DirectionConfig { rate_bps: Some(rate), ..Default::default() }, 1), 2048, 1500);
        for _ in 0..1000 {
            admit(&mut s, &stats, 0, 1250).unwrap();
        }
        let releases = drain(&mut s);
        let bits = 1000.0 * 1250.0 * 8.0;
        let achieved = bits / (*releases.last().unwrap() as f64 / 1e9);
        assert!((achieved / rate as f64 - 1.0).abs() < 0.01, "{achieved} bit/s");
        assert!(releases.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let stats = LinkStats::default();
        let mut s =
            Scheduler::new(path(DirectionConfig { delay: Duration::from_millis(1), ..Default::default() }, 1), 256, 64);
        let mut queued = 0;
        for i in 0..300 {
            match admit(&mut s, &stats, i, 40) {
                Some(_) => queued += 1,
                None => s.queue_drop(Direction::ToServer, &stats),
            }
        }
        assert_eq!((queued, stats.snapshot().queue_drops), (256, 44));
        assert_eq!(drain(&mut s).len(), 256);
        assert!(s.buffer().is_some(), "buffers come back after release");
    }

    #[test]
    fn a_replay_is_counted_only_when_it_is_sent() {
        let stats = LinkStats::default();
        let config = PathConfig {
            middleboxes: vec![Middlebox::ReplaySynData(Duration::from_millis(5))],
            ..PathConfig::default()
        };
        let syn = etherparse::PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64).tcp(4000, 80, 1, 1000).syn();
        let mut bytes = Vec::new();
        syn.write(&mut bytes, b"GET /").unwrap();
        let mut s = Scheduler::new(config, 2, 128);
        let send = |s: &mut Scheduler| {
            let (slot, buf) = s.buffer().unwrap();
            buf[..bytes.len()].copy_from_slice(&bytes);
            s.admit(0, Direction::ToServer, slot, bytes.len(), &stats)
        };
        send(&mut s);
        assert_eq!(stats.snapshot().middleboxes.of(Middlebox::ReplaySynData(Duration::ZERO)), 1);
        assert_eq!(drain(&mut s), vec![0, 5 * MS], "the original, then its copy 5 ms later");
        // One buffer only: the original takes it, no copy can be made, none is counted.
        let (slot, _) = s.buffer().unwrap();
        send(&mut s);
        let replayed = stats.snapshot().middleboxes.of(Middlebox::ReplaySynData(Duration::ZERO));
        assert_eq!(replayed, 1, "a replay that could not be queued was counted");
        s.unused(slot);
    }
}
