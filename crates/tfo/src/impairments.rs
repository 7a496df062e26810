//! The path options that `tfo bench` and `tfo lab` share: loss, jitter,
//! bandwidth, middleboxes, seed. Loss, jitter and bandwidth take one value for
//! both directions, or `TO_SERVER/TO_CLIENT`.

use std::time::Duration;

use fastopen_lab::parse::{parse_duration, parse_rate, parse_ratio};
use fastopen_lab::{DirectionConfig, Middlebox, PathConfig};

/// A value for each direction: client -> server, server -> client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PerDirection<T> {
    pub(crate) to_server: T,
    pub(crate) to_client: T,
}

/// Parses `X` (both ways) or `X/Y` (to the server / to the client).
fn per_direction<T: Copy, E: std::fmt::Display>(
    text: &str,
    one: impl Fn(&str) -> Result<T, E>,
) -> Result<PerDirection<T>, String> {
    let one = |t: &str| one(t).map_err(|e| e.to_string());
    match text.split_once('/') {
        Some((a, b)) => Ok(PerDirection { to_server: one(a)?, to_client: one(b)? }),
        None => {
            let v = one(text)?;
            Ok(PerDirection { to_server: v, to_client: v })
        }
    }
}

fn loss_arg(t: &str) -> Result<PerDirection<f64>, String> {
    per_direction(t, parse_ratio)
}
fn jitter_arg(t: &str) -> Result<PerDirection<Duration>, String> {
    per_direction(t, parse_duration)
}
fn rate_arg(t: &str) -> Result<PerDirection<u64>, String> {
    per_direction(t, parse_rate)
}

/// How the emulated path behaves besides its round-trip time.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Impairments {
    /// Random loss, e.g. 1% both ways, or 1%/0% (to the server / to the client).
    #[arg(long, default_value = "0", value_parser = loss_arg)]
    pub(crate) loss: PerDirection<f64>,
    /// Delay variation, uniform +-JITTER, no reordering; e.g. 2ms or 2ms/0ms.
    #[arg(long, default_value = "0ms", value_parser = jitter_arg)]
    pub(crate) jitter: PerDirection<Duration>,
    /// Bandwidth limit, e.g. 100mbit or 10mbit/100mbit (to the server / to the client).
    #[arg(long, value_parser = rate_arg)]
    pub(crate) rate: Option<PerDirection<u64>>,
    /// A middlebox on the path (repeatable): strip-tfo, drop-syn-data, drop-tfo-syn, replay-syn-data=DELAY.
    #[arg(long)]
    pub(crate) middlebox: Vec<Middlebox>,
    /// Seed for loss and jitter (the same seed drops the same packets).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

impl Impairments {
    /// The path with these one-way delays and these impairments.
    pub(crate) fn path(&self, delay: PerDirection<Duration>, busy_poll: bool) -> PathConfig {
        let dir = |delay, loss, jitter, rate| DirectionConfig { delay, jitter, loss, rate_bps: rate };
        PathConfig {
            to_server: dir(delay.to_server, self.loss.to_server, self.jitter.to_server, self.rate.map(|r| r.to_server)),
            to_client: dir(delay.to_client, self.loss.to_client, self.jitter.to_client, self.rate.map(|r| r.to_client)),
            middleboxes: self.middlebox.clone(),
            seed: self.seed,
            busy_poll,
        }
    }

    /// The middleboxes, as text.
    pub(crate) fn middlebox_names(&self) -> Vec<String> {
        self.middlebox.iter().map(|m| m.to_string()).collect()
    }

    /// A short description for reports ("loss 1%/0%, strip-tfo").
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        let pair = |a: String, b: String| if a == b { a } else { format!("{a}/{b}") };
        if self.loss.to_server > 0.0 || self.loss.to_client > 0.0 {
            let pct = |x: f64| format!("{}%", x * 100.0);
            parts.push(format!("loss {}", pair(pct(self.loss.to_server), pct(self.loss.to_client))));
        }
        if !self.jitter.to_server.is_zero() || !self.jitter.to_client.is_zero() {
            let ms = |d: Duration| format!("{}ms", crate::report::ms(d));
            parts.push(format!("jitter {}", pair(ms(self.jitter.to_server), ms(self.jitter.to_client))));
        }
        if let Some(r) = self.rate {
            let mbit = |b: u64| format!("{}mbit", b as f64 / 1e6);
            parts.push(format!("rate {}", pair(mbit(r.to_server), mbit(r.to_client))));
        }
        parts.extend(self.middlebox_names());
        parts.join(", ")
    }
}

/// A symmetric path: half the round trip each way.
pub(crate) fn split_rtt(rtt: Duration) -> PerDirection<Duration> {
    let (to_server, to_client) = fastopen_lab::link::split_rtt(rtt);
    PerDirection { to_server, to_client }
}

/// `--delay 30ms/10ms`: one-way delays to the server and to the client.
pub(crate) fn delay_arg(t: &str) -> Result<PerDirection<Duration>, String> {
    match t.split_once('/') {
        Some(_) => per_direction(t, parse_duration),
        None => Err(format!(
            "{t:?}: give both one-way delays, TO_SERVER/TO_CLIENT (e.g. 30ms/10ms); for a symmetric path use --rtt"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_or_two() {
        assert_eq!(loss_arg("1%").unwrap(), PerDirection { to_server: 0.01, to_client: 0.01 });
        assert_eq!(loss_arg("1%/0").unwrap(), PerDirection { to_server: 0.01, to_client: 0.0 });
        assert!(loss_arg("1%/").is_err() && loss_arg("x/1%").is_err());
        assert_eq!(rate_arg("10mbit/100mbit").unwrap().to_client, 100_000_000);
        assert_eq!(delay_arg("30ms/10ms").unwrap().to_server, Duration::from_millis(30));
        assert!(delay_arg("30ms").is_err());
        assert_eq!(split_rtt(Duration::from_millis(101)).to_client, Duration::from_micros(50_500));
    }
}
