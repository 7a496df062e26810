//! The userspace link: a forwarder thread between two TUN devices that holds
//! each packet for the configured delay and applies jitter, loss, a bandwidth
//! limit and middleboxes on the way. The decisions are [`crate::sched`]'s
//! (pure, tested on a simulated clock); this module is the I/O around them:
//! devices, clock, timer, counters and capture.
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

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId as TimerClock, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::{clock_gettime, ClockId};
use tun_rs::SyncDevice;

use crate::middlebox::{Direction, Middlebox, MiddleboxCounters};
use crate::sched::Scheduler;

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

/// The one-way delays of a symmetric path: (to the server, to the client),
/// half the round trip each (the odd nanosecond to the client).
pub fn split_rtt(rtt: Duration) -> (Duration, Duration) {
    (rtt / 2, rtt - rtt / 2)
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
        let (to_server, to_client) = split_rtt(rtt);
        PathConfig {
            to_server: DirectionConfig { delay: to_server, ..DirectionConfig::default() },
            to_client: DirectionConfig { delay: to_client, ..DirectionConfig::default() },
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
    failure: std::sync::Mutex<Option<String>>,
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
    /// [`Middlebox::POLICIES`]); flattened into the JSON.
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

/// The running forwarder; stops (and closes the devices) when dropped.
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
    stats: Arc<LinkStats>,
}

/// What the forwarder needs of a device: non-blocking packet I/O and an fd to poll.
pub trait LinkDevice: Send + 'static {
    /// Receives one packet (`WouldBlock` when there is none).
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends one packet (`WouldBlock` when the receiver is full).
    fn send(&self, packet: &[u8]) -> io::Result<usize>;
    /// The descriptor that polls readable when a packet waits.
    fn fd(&self) -> BorrowedFd<'_>;
}

impl LinkDevice for SyncDevice {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        SyncDevice::recv(self, buf)
    }
    fn send(&self, packet: &[u8]) -> io::Result<usize> {
        SyncDevice::send(self, packet)
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

impl Forwarder {
    /// Starts forwarding between two TUN devices.
    pub fn start(
        client_side: SyncDevice,
        server_side: SyncDevice,
        mtu: u16,
        config: PathConfig,
    ) -> io::Result<Forwarder> {
        client_side.set_nonblocking(true)?;
        server_side.set_nonblocking(true)?;
        Forwarder::start_on(client_side, server_side, mtu, config)
    }

    /// Starts forwarding between any two (non-blocking) devices.
    pub fn start_on<D: LinkDevice>(
        client_side: D,
        server_side: D,
        mtu: u16,
        config: PathConfig,
    ) -> io::Result<Forwarder> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LinkStats::default());
        let mut engine = Engine::new([client_side, server_side], usize::from(mtu), config, stats.clone());
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new().name("tfokit-link".into()).spawn(move || {
            let result = engine.run(&stop_flag);
            if let Err(e) = &result {
                if let Ok(mut f) = engine.stats.failure.lock() {
                    *f = Some(format!("the lab's link stopped: {e}"));
                }
            }
            result
        })?;
        Ok(Forwarder { stop, thread: Some(thread), stats })
    }

    /// Why the link stopped, if it failed (see [`LinkStats::failure`]).
    pub fn failure(&self) -> Option<String> {
        self.stats.failure()
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

struct Engine<D: LinkDevice> {
    devices: [D; 2],
    sched: Scheduler,
    stats: Arc<LinkStats>,
}

fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap_or_else(|_| TimeSpec::new(0, 0));
    (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64)
}

/// The link's fastest rate when none is set (measured: about 2.8 Gbit/s).
const ASSUMED_RATE_BPS: u64 = 3_000_000_000;

/// Buffers for the packets the path can hold in flight: twice the
/// bandwidth-delay product of the slower direction's rate and the longer
/// delay (jitter included), at least 256, within 256 MiB. A 200 ms path at
/// the link's full rate holds some 50,000 packets; a fixed pool of 4,096
/// dropped most of them.
fn pool_size(config: &PathConfig, slot_len: usize) -> usize {
    let dirs = [&config.to_server, &config.to_client];
    let delay = dirs.iter().map(|d| d.delay + d.jitter).max().unwrap_or_default();
    let rate = dirs.iter().map(|d| d.rate_bps.unwrap_or(ASSUMED_RATE_BPS)).max().unwrap_or(ASSUMED_RATE_BPS);
    let bytes_in_flight = (rate as f64 / 8.0 * delay.as_secs_f64() * 2.0) as usize;
    let packets = bytes_in_flight / 1500;
    packets.clamp(256, (256 << 20) / slot_len)
}

impl<D: LinkDevice> Engine<D> {
    fn new(devices: [D; 2], mtu: usize, config: PathConfig, stats: Arc<LinkStats>) -> Engine<D> {
        let slot_len = mtu.max(1500) + 64;
        let count = pool_size(&config, slot_len);
        Engine { devices, sched: Scheduler::new(config, count, slot_len), stats }
    }

    fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        // Timers of this thread fire within 1 ns of their time instead of 50 us.
        let _ = nix::sys::prctl::set_timerslack(1);
        let timer = TimerFd::new(TimerClock::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        let mut armed_for = None;
        let mut hot_until = 0u64;
        let mut scratch = vec![0u8; 65_536 + 64];
        let busy_poll = self.sched.config().busy_poll;
        while !stop.load(Ordering::Relaxed) {
            let now = now_ns();
            let next = self.sched.next_release();
            // Spin (poll without sleeping) when a release is near or traffic is
            // flowing; otherwise sleep until the timer, which wakes us SPIN_BEFORE early.
            let spin = busy_poll || now < hot_until || next.is_some_and(|t| t <= now + SPIN_BEFORE_NS);
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
                    PollFd::new(self.devices[0].fd(), PollFlags::POLLIN),
                    PollFd::new(self.devices[1].fd(), PollFlags::POLLIN),
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
            for (direction, readable) in [Direction::ToServer, Direction::ToClient].into_iter().zip(ready) {
                if readable {
                    self.receive(direction, &mut scratch)?;
                }
            }
            if ready[0] || ready[1] || self.release_due(now_ns())? {
                hot_until = now_ns() + HOT_AFTER_NS;
            }
        }
        // What the link still held when it was stopped never arrives: counted, not lost silently.
        for direction in [Direction::ToServer, Direction::ToClient] {
            let held = self.sched.queued(direction) as u64;
            self.stats.direction(direction).unsent_at_stop.fetch_add(held, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Reads every packet waiting on the device of `direction`'s sender and
    /// hands it to the scheduler.
    fn receive(&mut self, direction: Direction, scratch: &mut [u8]) -> io::Result<()> {
        let device = &self.devices[direction.index()];
        loop {
            let Some((slot, buf)) = self.sched.buffer() else {
                // Queue full: read and drop (tail drop), so the device does not stall.
                match device.recv(scratch) {
                    Ok(_) => {
                        self.sched.queue_drop(direction, &self.stats);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            };
            match device.recv(buf) {
                Ok(len) => {
                    self.sched.admit(now_ns(), direction, slot, len, &self.stats);
                }
                Err(e) => {
                    self.sched.unused(slot);
                    return if e.kind() == io::ErrorKind::WouldBlock { Ok(()) } else { Err(e) };
                }
            }
        }
    }

    /// Sends every packet whose time has come; returns whether it sent any.
    fn release_due(&mut self, now: u64) -> io::Result<bool> {
        let mut sent = false;
        while let Some(release) = self.sched.pop_due(now) {
            sent = true;
            self.stats.record_lateness(now_ns().saturating_sub(release.due_ns));
            let direction = release.direction;
            let packet = self.sched.packet(&release);
            let counters = self.stats.direction(direction);
            let result = match self.devices[1 - direction.index()].send(packet) {
                Ok(_) => {
                    self.stats.capture(CapturePoint::Delivered, direction, packet);
                    counters.forwarded.fetch_add(1, Ordering::Relaxed);
                    counters.bytes.fetch_add(packet.len() as u64, Ordering::Relaxed);
                    Ok(())
                }
                // The receiving stack is full: that is a drop, as on a wire.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    counters.queue_drops.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => Err(e),
            };
            self.sched.sent(release);
            result?;
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    /// A device made of a datagram socket; it fails on receive once told to.
    struct FakeDevice {
        socket: UnixDatagram,
        fail: Arc<AtomicBool>,
    }

    impl LinkDevice for FakeDevice {
        fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
            if self.fail.load(Ordering::Relaxed) {
                return Err(io::Error::other("device vanished"));
            }
            self.socket.recv(buf)
        }
        fn send(&self, packet: &[u8]) -> io::Result<usize> {
            self.socket.send(packet)
        }
        fn fd(&self) -> BorrowedFd<'_> {
            self.socket.as_fd()
        }
    }

    fn device(fail: &Arc<AtomicBool>) -> (FakeDevice, UnixDatagram) {
        let (inside, outside) = UnixDatagram::pair().unwrap();
        inside.set_nonblocking(true).unwrap();
        (FakeDevice { socket: inside, fail: fail.clone() }, outside)
    }

    #[test]
    fn packets_cross_and_a_device_error_is_reported_at_once() {
        let fail = Arc::new(AtomicBool::new(false));
        let (client_dev, client_host) = device(&fail);
        let (server_dev, server_host) = device(&fail);
        let link = Forwarder::start_on(client_dev, server_dev, 1500, PathConfig::default()).unwrap();
        client_host.send(b"not even IP").unwrap();
        server_host.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        let n = server_host.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"not even IP");
        assert_eq!(link.failure(), None);

        fail.store(true, Ordering::Relaxed);
        client_host.send(b"x").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while link.failure().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let failure = link.failure().expect("the failure is reported while the forwarder is alive");
        assert!(failure.contains("device vanished"), "{failure}");
        assert!(link.stop().is_err(), "stop() returns the error too");
    }

    #[test]
    fn packets_still_delayed_at_teardown_are_counted() {
        let fail = Arc::new(AtomicBool::new(false));
        let (client_dev, client_host) = device(&fail);
        let (server_dev, _server_host) = device(&fail);
        let slow = DirectionConfig { delay: Duration::from_secs(60), ..DirectionConfig::default() };
        let config = PathConfig { to_server: slow, ..PathConfig::default() };
        let link = Forwarder::start_on(client_dev, server_dev, 1500, config).unwrap();
        let stats = link.stats().clone();
        for _ in 0..5 {
            client_host.send(b"delayed a minute").unwrap();
        }
        // The forwarder takes them in and holds them for a minute.
        std::thread::sleep(Duration::from_millis(200));
        link.stop().unwrap();
        assert_eq!(stats.snapshot().unsent_at_stop, 5);
    }

    #[test]
    fn the_capture_keeps_its_limit_per_point_and_counts_the_rest() {
        let stats = LinkStats::default();
        stats.set_capture(true);
        for _ in 0..CAPTURE_LIMIT + 3 {
            stats.capture(CapturePoint::Sent, Direction::ToServer, b"x");
        }
        stats.capture(CapturePoint::Delivered, Direction::ToServer, b"y");
        let kept = stats.take_capture();
        assert_eq!(kept.iter().filter(|p| p.point == CapturePoint::Sent).count() as u64, CAPTURE_LIMIT);
        assert_eq!(
            kept.iter().filter(|p| p.point == CapturePoint::Delivered).count(),
            1,
            "the other point has its own"
        );
        assert_eq!(stats.snapshot().capture_dropped, 3);
    }

    #[test]
    fn the_buffer_pool_holds_the_path_in_flight() {
        let long = DirectionConfig { delay: Duration::from_millis(100), ..DirectionConfig::default() };
        let path = PathConfig { to_server: long, to_client: long, ..PathConfig::default() };
        assert!(pool_size(&path, 1564) > 40_000, "{}", pool_size(&path, 1564));
        assert_eq!(pool_size(&PathConfig::default(), 1564), 256);
    }
}
