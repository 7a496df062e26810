//! The userspace link: a forwarder thread between two TUN devices that holds
//! each packet for the configured delay and applies jitter, loss, a bandwidth
//! limit and middleboxes on the way.
//!
//! One thread polls both devices and a `timerfd` armed (absolute,
//! CLOCK_MONOTONIC) for the next packet's release time. A timerfd fires on
//! time, where a poll timeout is stretched by the kernel's timer slack (0.1% of
//! the timeout: 50 us on a 50 ms wait); the thread's own slack is also set to
//! 1 ns. Packet buffers come from a pool allocated up front: nothing is
//! allocated per packet.
//!
//! Jitter is uniform in [-jitter, +jitter] around the delay (clamped at 0), and
//! packets never overtake each other (a packet leaves no earlier than the one
//! before it), so jitter adds delay variation without reordering. Loss is
//! independent per packet (Bernoulli), from a seeded generator.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId as TimerClock, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::{clock_gettime, ClockId};
use tun_rs::SyncDevice;

use crate::middlebox::{inspect, Direction, Middlebox, MiddleboxCounters, Verdict};

/// How one direction of the path behaves.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DirectionConfig {
    /// One-way delay.
    pub delay: Duration,
    /// Jitter: each packet's delay varies uniformly by up to this much either
    /// way (clamped at zero), without reordering.
    pub jitter: Duration,
    /// Independent random loss, 0.0..=1.0.
    pub loss: f64,
    /// Bandwidth limit in bits per second (`None`: unlimited).
    pub rate_bps: Option<u64>,
}

/// How the path behaves.
#[derive(Debug, Clone, Default)]
pub struct PathConfig {
    /// Client -> server.
    pub to_server: DirectionConfig,
    /// Server -> client.
    pub to_client: DirectionConfig,
    /// Middleboxes on the path.
    pub middleboxes: Vec<Middlebox>,
    /// Seed of the loss and jitter generator (the same seed gives the same drops).
    pub seed: u64,
    /// Never sleep: poll the devices in a loop (yielding the CPU to anyone
    /// runnable). Costs a CPU, and takes the forwarder's own wake-up latency
    /// (50-150 us on a VM) out of every packet's delay. For benchmarks.
    pub busy_poll: bool,
}

impl PathConfig {
    /// A symmetric path with this round-trip time and nothing else.
    pub fn with_rtt(rtt: Duration) -> PathConfig {
        PathConfig {
            to_server: DirectionConfig { delay: rtt / 2, ..DirectionConfig::default() },
            to_client: DirectionConfig { delay: rtt - rtt / 2, ..DirectionConfig::default() },
            seed: 1,
            ..PathConfig::default()
        }
    }

    /// The configured round-trip time (the two one-way delays).
    pub fn rtt(&self) -> Duration {
        self.to_server.delay + self.to_client.delay
    }
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

/// Packets kept at most while capturing.
const CAPTURE_LIMIT: usize = 100_000;

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
    /// delivered (up to 100 000). Off by default: the hot path then copies nothing.
    pub fn set_capture(&self, on: bool) {
        self.capturing.store(on, Ordering::Relaxed);
    }

    /// Takes the packets captured so far.
    pub fn take_capture(&self) -> Vec<CapturedPacket> {
        self.captured.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }

    fn capture(&self, point: CapturePoint, direction: Direction, bytes: &[u8]) {
        if !self.capturing.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut v) = self.captured.lock() {
            if v.len() < CAPTURE_LIMIT {
                v.push(CapturedPacket {
                    time: Duration::from_nanos(now_ns()),
                    point,
                    direction,
                    bytes: bytes.to_vec(),
                });
            }
        }
    }

    fn record_lateness(&self, ns: u64) {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
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
    /// TFO options stripped.
    pub stripped: u64,
    /// SYNs with data dropped.
    pub dropped_syn_data: u64,
    /// SYNs with a TFO option dropped.
    pub dropped_tfo_syn: u64,
    /// SYNs with data replayed.
    pub replayed: u64,
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
            stripped: self.stripped.saturating_sub(earlier.stripped),
            dropped_syn_data: self.dropped_syn_data.saturating_sub(earlier.dropped_syn_data),
            dropped_tfo_syn: self.dropped_tfo_syn.saturating_sub(earlier.dropped_tfo_syn),
            replayed: self.replayed.saturating_sub(earlier.replayed),
            ..*self
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
            stripped: g(&self.middlebox.stripped),
            dropped_syn_data: g(&self.middlebox.dropped_syn_data),
            dropped_tfo_syn: g(&self.middlebox.dropped_tfo_syn),
            replayed: g(&self.middlebox.replayed),
            late_p50_us: self.lateness_quantile_us(0.5),
            late_p99_us: self.lateness_quantile_us(0.99),
        }
    }
}

/// The running forwarder; stops (and closes the devices) when dropped.
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
    stats: Arc<LinkStats>,
}

impl Forwarder {
    /// Starts forwarding between `client_side` and `server_side`.
    pub fn start(
        client_side: SyncDevice,
        server_side: SyncDevice,
        mtu: u16,
        config: PathConfig,
    ) -> io::Result<Forwarder> {
        client_side.set_nonblocking(true)?;
        server_side.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LinkStats::default());
        let mut engine = Engine::new([client_side, server_side], usize::from(mtu), config, stats.clone());
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new().name("tfokit-link".into()).spawn(move || engine.run(&stop_flag))?;
        Ok(Forwarder { stop, thread: Some(thread), stats })
    }

    /// The link's counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// Stops the forwarder and reports whether it had failed.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the link thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Longest sleep without checking the stop flag.
const IDLE_WAKE: Duration = Duration::from_millis(20);
/// Wake this long before a release and spin: waking a sleeping thread (and, in
/// a VM, a halted vCPU) takes 50-150 us, which would delay every packet.
const SPIN_BEFORE_NS: u64 = 300_000;
/// After traffic, keep spinning this long: an answer usually follows at once,
/// and catching it promptly keeps its arrival time (and so its delay) exact.
const HOT_AFTER_NS: u64 = 1_000_000;

/// A packet waiting in a direction's queue: (release time ns, arrival order, slot, length).
type Pending = Reverse<(u64, u64, u32, u32)>;

struct Engine {
    devices: [SyncDevice; 2],
    config: PathConfig,
    stats: Arc<LinkStats>,
    /// Buffers; `free` lists the unused ones.
    slots: Vec<Box<[u8]>>,
    free: Vec<u32>,
    queues: [BinaryHeap<Pending>; 2],
    /// Release time of the last packet queued per direction (no overtaking).
    last_release: [u64; 2],
    /// When each direction's "wire" is free again (bandwidth limit).
    wire_free: [u64; 2],
    order: u64,
    rng: fastrand::Rng,
}

fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap_or_else(|_| TimeSpec::new(0, 0));
    (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64)
}

impl Engine {
    fn new(devices: [SyncDevice; 2], mtu: usize, config: PathConfig, stats: Arc<LinkStats>) -> Engine {
        let slot_len = mtu.max(1500) + 64;
        // Up to 4096 packets in flight, within 128 MiB of buffers.
        let count = (128 * 1024 * 1024 / slot_len).clamp(256, 4096);
        let slots = (0..count).map(|_| vec![0u8; slot_len].into_boxed_slice()).collect();
        let rng = fastrand::Rng::with_seed(config.seed);
        Engine {
            devices,
            config,
            stats,
            slots,
            free: (0..count as u32).rev().collect(),
            queues: [BinaryHeap::with_capacity(count), BinaryHeap::with_capacity(count)],
            last_release: [0; 2],
            wire_free: [0; 2],
            order: 0,
            rng,
        }
    }

    fn counters(&self, dir: usize) -> &DirectionCounters {
        if dir == 0 {
            &self.stats.to_server
        } else {
            &self.stats.to_client
        }
    }

    fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        // Timers of this thread fire within 1 ns of their time instead of 50 us.
        let _ = nix::sys::prctl::set_timerslack(1);
        let timer = TimerFd::new(TimerClock::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        let mut armed_for = None;
        let mut hot_until = 0u64;
        let mut scratch = vec![0u8; self.slots[0].len()];
        while !stop.load(Ordering::Relaxed) {
            let now = now_ns();
            let next = self.queues.iter().filter_map(|q| q.peek().map(|Reverse((t, ..))| *t)).min();
            // Spin (poll without sleeping) when a release is near or traffic is
            // flowing; otherwise sleep until the timer, which wakes us SPIN_BEFORE early.
            let spin = self.config.busy_poll || now < hot_until || next.is_some_and(|t| t <= now + SPIN_BEFORE_NS);
            let wake_at = next.map(|t| t.saturating_sub(SPIN_BEFORE_NS));
            if !spin && wake_at != armed_for {
                match wake_at {
                    Some(t) => timer.set(
                        Expiration::OneShot(TimeSpec::from_duration(Duration::from_nanos(t))),
                        TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                    )?,
                    None => timer.unset()?,
                }
                armed_for = wake_at;
            }
            let ready = {
                let mut fds = [
                    PollFd::new(self.devices[0].as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.devices[1].as_fd(), PollFlags::POLLIN),
                    PollFd::new(timer.as_fd(), PollFlags::POLLIN),
                ];
                let timeout = if spin { Duration::ZERO } else { IDLE_WAKE };
                match nix::poll::ppoll(&mut fds, Some(TimeSpec::from_duration(timeout)), None) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                [0, 1, 2].map(|i| fds[i].revents().is_some_and(|r| r.intersects(PollFlags::POLLIN)))
            };
            if spin && !ready.iter().any(|r| *r) {
                // Spinning must not keep the client or server off this CPU.
                std::thread::yield_now();
            }
            if ready[2] {
                // Consume the expiration; the queues say what is due.
                let _ = timer.wait();
                armed_for = None;
            }
            for (dir, readable) in ready[..2].iter().enumerate() {
                if *readable {
                    self.receive(dir, &mut scratch)?;
                }
            }
            if ready[0] || ready[1] || self.release_due(now_ns())? {
                hot_until = now_ns() + HOT_AFTER_NS;
            }
        }
        Ok(())
    }

    /// Reads every packet waiting on device `dir` and queues it for the other side.
    fn receive(&mut self, dir: usize, scratch: &mut [u8]) -> io::Result<()> {
        loop {
            let Some(slot) = self.free.pop() else {
                // Queue full: read and drop (tail drop), so the device does not stall.
                match self.devices[dir].recv(scratch) {
                    Ok(_) => {
                        self.counters(dir).queue_drops.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            };
            let len = match self.devices[dir].recv(&mut self.slots[slot as usize]) {
                Ok(n) => n,
                Err(e) => {
                    self.free.push(slot);
                    return if e.kind() == io::ErrorKind::WouldBlock { Ok(()) } else { Err(e) };
                }
            };
            self.admit(dir, slot, len);
        }
    }

    /// Applies loss and middleboxes, computes the release time, queues.
    fn admit(&mut self, dir: usize, slot: u32, len: usize) {
        let now = now_ns();
        let direction = if dir == 0 { Direction::ToServer } else { Direction::ToClient };
        let conf = if dir == 0 { self.config.to_server } else { self.config.to_client };
        self.stats.capture(CapturePoint::Sent, direction, &self.slots[slot as usize][..len]);
        if conf.loss > 0.0 && self.rng.f64() < conf.loss {
            self.counters(dir).lost.fetch_add(1, Ordering::Relaxed);
            self.free.push(slot);
            return;
        }
        let verdict =
            inspect(&self.config.middleboxes, direction, &mut self.slots[slot as usize][..len], &self.stats.middlebox);
        if verdict == Verdict::Drop {
            self.counters(dir).middlebox_drops.fetch_add(1, Ordering::Relaxed);
            self.free.push(slot);
            return;
        }
        let mut depart = now;
        if let Some(rate) = conf.rate_bps {
            let start = now.max(self.wire_free[dir]);
            let serialization = (len as u64 * 8).saturating_mul(1_000_000_000) / rate.max(1);
            self.wire_free[dir] = start + serialization;
            depart = self.wire_free[dir];
        }
        let mut delay = conf.delay.as_nanos() as i128;
        let jitter = conf.jitter.as_nanos() as i128;
        if jitter > 0 {
            delay += self.rng.i128(-jitter..=jitter);
        }
        let release = (depart + delay.max(0) as u64).max(self.last_release[dir]);
        self.last_release[dir] = release;
        self.push(dir, release, slot, len);
        if let Verdict::ForwardAndReplay(after) = verdict {
            if let Some(copy) = self.free.pop() {
                let (src, dst) = if slot < copy {
                    let (a, b) = self.slots.split_at_mut(copy as usize);
                    (&a[slot as usize], &mut b[0])
                } else {
                    let (a, b) = self.slots.split_at_mut(slot as usize);
                    (&b[0], &mut a[copy as usize])
                };
                dst[..len].copy_from_slice(&src[..len]);
                self.push(dir, release + after.as_nanos() as u64, copy, len);
            }
        }
    }

    fn push(&mut self, dir: usize, release: u64, slot: u32, len: usize) {
        self.order += 1;
        self.queues[dir].push(Reverse((release, self.order, slot, len as u32)));
    }

    /// Sends every packet whose time has come; returns whether it sent any.
    fn release_due(&mut self, now: u64) -> io::Result<bool> {
        let mut sent = false;
        for dir in 0..2 {
            while let Some(&Reverse((release, _, slot, len))) = self.queues[dir].peek() {
                if release > now {
                    break;
                }
                self.queues[dir].pop();
                sent = true;
                self.stats.record_lateness(now_ns().saturating_sub(release));
                let packet = &self.slots[slot as usize][..len as usize];
                match self.devices[1 - dir].send(packet) {
                    Ok(_) => {
                        let direction = if dir == 0 { Direction::ToServer } else { Direction::ToClient };
                        self.stats.capture(CapturePoint::Delivered, direction, packet);
                        let c = self.counters(dir);
                        c.forwarded.fetch_add(1, Ordering::Relaxed);
                        c.bytes.fetch_add(u64::from(len), Ordering::Relaxed);
                    }
                    // The receiving stack is full: that is a drop, as on a wire.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.counters(dir).queue_drops.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.free.push(slot);
                        return Err(e);
                    }
                }
                self.free.push(slot);
            }
        }
        Ok(sent)
    }
}
