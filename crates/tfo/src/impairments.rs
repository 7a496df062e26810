//! The path options that `tfo bench` and `tfo lab` share: loss, jitter,
//! bandwidth, middleboxes, seed.

use std::time::Duration;

use fastopen_lab::parse::{parse_duration, parse_rate, parse_ratio};
use fastopen_lab::{Middlebox, PathConfig};

/// How the emulated path behaves besides its round-trip time.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Impairments {
    /// Random loss each direction (e.g. 1%).
    #[arg(long, default_value = "0", value_parser = parse_ratio)]
    pub(crate) loss: f64,
    /// Delay variation, uniform +-JITTER, no reordering.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub(crate) jitter: Duration,
    /// Bandwidth limit each direction (e.g. 100mbit).
    #[arg(long, value_parser = parse_rate)]
    pub(crate) rate: Option<u64>,
    /// A middlebox on the path (repeatable): strip-tfo, drop-syn-data, drop-tfo-syn, replay-syn-data=DELAY.
    #[arg(long)]
    pub(crate) middlebox: Vec<Middlebox>,
    /// Seed for loss and jitter (the same seed drops the same packets).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

impl Impairments {
    /// The path with this round-trip time and these impairments.
    pub(crate) fn path(&self, rtt: Duration, busy_poll: bool) -> PathConfig {
        PathConfig {
            jitter: self.jitter,
            loss: self.loss,
            rate_bps: self.rate,
            middleboxes: self.middlebox.clone(),
            seed: self.seed,
            busy_poll,
            ..PathConfig::with_rtt(rtt)
        }
    }

    /// The middleboxes, as text.
    pub(crate) fn middlebox_names(&self) -> Vec<String> {
        self.middlebox.iter().map(|m| m.to_string()).collect()
    }
}
