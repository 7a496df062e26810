//! How the emulated path behaves: each direction's delay, jitter, loss and
//! rate, and the middleboxes on it. Plain configuration, read by the
//! scheduler (`sched`) and the link (`link`).

use std::time::Duration;

use crate::middlebox::Middlebox;

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
