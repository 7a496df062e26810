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
//! With offload (`LabConfig::offload`), each TUN device speaks virtio-net
//! headers with TSO: the kernels hand over (and take) GSO packets of up to
//! 64 KiB; the link splits each into the segments the path handles one by
//! one (delay, loss, middleboxes, capture: nothing changes for them) and
//! coalesces what it sends (GRO), so one system call carries dozens of
//! segments instead of one (`OffloadTun`, on tun-rs's GSO/GRO).
//!
//! Jitter is uniform in [-jitter, +jitter] around the delay (clamped at 0), and
//! packets never overtake each other (a packet leaves no earlier than the one
//! before it), so jitter adds delay variation without reordering. Loss is
//! independent per packet (Bernoulli), from a seeded generator.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId as TimerClock, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tun_rs::{GROTable, SyncDevice, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use crate::middlebox::Direction;
pub use crate::path::{split_rtt, DirectionConfig, PathConfig};
use crate::sched::Scheduler;
use crate::stats::now_ns;
pub use crate::stats::{CapturePoint, CapturedPacket, DirectionCounters, LinkCounters, LinkStats, CAPTURE_LIMIT};

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
    /// Whether the device batches ([`LinkDevice::recv_segments`],
    /// [`LinkDevice::queue`], [`LinkDevice::flush`]) instead of `recv`/`send`.
    fn offloads(&self) -> bool {
        false
    }
    /// Reads once, and hands each segment of what was read to `each`
    /// (`WouldBlock` when nothing waits).
    fn recv_segments(&mut self, _each: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Keeps a packet for the next [`LinkDevice::flush`]; false when the batch is full.
    fn queue(&mut self, _packet: &[u8]) -> bool {
        false
    }
    /// Sends what was queued, coalesced.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TUN device with offload: GSO packets split on reading, segments
/// coalesced on sending (see the module's doc).
pub struct OffloadTun {
    device: SyncDevice,
    gro: GROTable,
    /// One read: a virtio-net header and up to 64 KiB.
    read: Vec<u8>,
    segments: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// Packets queued to send, each after `VIRTIO_NET_HDR_LEN` bytes of room.
    out: Vec<Vec<u8>>,
    queued: usize,
}

impl std::fmt::Debug for OffloadTun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadTun").field("queued", &self.queued).finish_non_exhaustive()
    }
}

impl OffloadTun {
    /// Wraps a device built with `offload(true)`; segments are at most `mtu` bytes.
    pub fn new(device: SyncDevice, mtu: u16) -> io::Result<OffloadTun> {
        device.set_nonblocking(true)?;
        let segment = usize::from(mtu).max(1500) + 64;
        Ok(OffloadTun {
            device,
            gro: GROTable::default(),
            read: vec![0; VIRTIO_NET_HDR_LEN + 65_535],
            segments: vec![vec![0; segment]; IDEAL_BATCH_SIZE],
            sizes: vec![0; IDEAL_BATCH_SIZE],
            out: (0..IDEAL_BATCH_SIZE).map(|_| Vec::with_capacity(VIRTIO_NET_HDR_LEN + 65_535)).collect(),
            queued: 0,
        })
    }
}

impl LinkDevice for OffloadTun {
    fn recv(&self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn send(&self, _packet: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.device.as_fd()
    }
    fn offloads(&self) -> bool {
        true
    }
    fn recv_segments(&mut self, each: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let n = self.device.recv_multiple(&mut self.read, &mut self.segments, &mut self.sizes, 0)?;
        for (segment, &size) in self.segments.iter().zip(&self.sizes).take(n) {
            each(&segment[..size]);
        }
        Ok(())
    }
    fn queue(&mut self, packet: &[u8]) -> bool {
        let Some(buf) = self.out.get_mut(self.queued) else { return false };
        buf.clear();
        buf.resize(VIRTIO_NET_HDR_LEN, 0);
        buf.extend_from_slice(packet);
        self.queued += 1;
        true
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        let queued = std::mem::take(&mut self.queued);
        self.device.send_multiple(&mut self.gro, &mut self.out[..queued], VIRTIO_NET_HDR_LEN).map(|_| ())
    }
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

    /// Starts forwarding between two TUN devices built with offload
    /// (`DeviceBuilder::offload(true)`): GSO packets split, segments coalesced.
    pub fn start_offloaded(
        client_side: SyncDevice,
        server_side: SyncDevice,
        mtu: u16,
        config: PathConfig,
    ) -> io::Result<Forwarder> {
        let client_side = OffloadTun::new(client_side, mtu)?;
        let server_side = OffloadTun::new(server_side, mtu)?;
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
        if self.devices[direction.index()].offloads() {
            return self.receive_segments(direction);
        }
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

    /// [`Engine::receive`] for an offloading device: each read's segments,
    /// copied into the pool's buffers, one admission each.
    fn receive_segments(&mut self, direction: Direction) -> io::Result<()> {
        let Engine { devices, sched, stats } = self;
        loop {
            let now = now_ns();
            let read = devices[direction.index()].recv_segments(&mut |segment| match sched.buffer() {
                Some((slot, buf)) if segment.len() <= buf.len() => {
                    buf[..segment.len()].copy_from_slice(segment);
                    sched.admit(now, direction, slot, segment.len(), stats);
                }
                Some((slot, _)) => {
                    sched.unused(slot);
                    sched.queue_drop(direction, stats);
                }
                None => sched.queue_drop(direction, stats),
            });
            match read {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
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
            let receiver = &mut self.devices[1 - direction.index()];
            let result = if receiver.offloads() {
                // A full batch goes out first; this packet starts the next.
                if !receiver.queue(packet) {
                    receiver.flush()?;
                    receiver.queue(packet);
                }
                Ok(packet.len())
            } else {
                receiver.send(packet)
            };
            let result = match result {
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
        for (device, direction) in self.devices.iter_mut().zip([Direction::ToClient, Direction::ToServer]) {
            match device.flush() {
                Ok(()) => {}
                // The receiving stack is full: the batch (or its rest) is dropped, as on a wire.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stats.direction(direction).queue_drops.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
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
