//! Parsing the quantities people type: `100ms`, `1.5s`, `250us`, `1%`, `100mbit`.

use std::time::Duration;

/// Text that is not the quantity asked for; says why, with an example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} {problem}")]
pub struct BadQuantity {
    /// What was typed.
    pub input: String,
    /// What is wrong, and what to write instead.
    pub problem: &'static str,
}

fn bad(input: &str, problem: &'static str) -> BadQuantity {
    BadQuantity { input: input.to_string(), problem }
}

/// The longest duration any option takes.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// A duration with its unit: `250us`, `100ms`, `1.5s`, `2m`, `1h`; `0` alone needs none.
///
/// Every duration in tfokit is written this way, so that `--rtt 5` and
/// `--timeout 5` cannot mean different things: a bare number is refused.
/// Range: 0 to 1 day.
pub fn parse_duration(text: &str) -> Result<Duration, BadQuantity> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else if t.parse::<f64>().is_ok() {
        return Err(bad(text, "has no unit: write e.g. 100ms, 1.5s, 250us, 2m, 1h"));
    } else {
        return Err(bad(text, "is not a duration: write e.g. 100ms, 1.5s, 250us, 2m, 1h"));
    };
    let value: f64 =
        num.trim().parse().map_err(|_| bad(text, "is not a duration: write e.g. 100ms, 1.5s, 250us, 2m, 1h"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad(text, "is not a duration of 0 or more"));
    }
    if value * scale > MAX_DURATION.as_secs_f64() {
        return Err(bad(text, "is longer than 1 day, the most any option takes"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// `1%` or `0.01` -> 0.01. Must lie in 0..=1 (0%..100%).
pub fn parse_ratio(text: &str) -> Result<f64, BadQuantity> {
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| bad(text, "is not a ratio; write e.g. 1% or 0.01"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(bad(text, "must be between 0% and 100%"));
    }
    Ok(value)
}

/// `100mbit`, `1gbit`, `500kbit`, or bits per second -> bits per second.
pub fn parse_rate(text: &str) -> Result<u64, BadQuantity> {
    let t = text.trim().to_ascii_lowercase();
    let (num, scale) = if let Some(n) = t.strip_suffix("gbit") {
        (n.to_string(), 1e9)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n.to_string(), 1e6)
    } else if let Some(n) = t.strip_suffix("kbit") {
        (n.to_string(), 1e3)
    } else {
        (t.clone(), 1.0)
    };
    let value: f64 = num.trim().parse().map_err(|_| bad(text, "is not a rate; write e.g. 100mbit, 1gbit"))?;
    let bps = value * scale;
    if !(1000.0..=1e12).contains(&bps) {
        return Err(bad(text, "is out of range (1kbit to 1000gbit)"));
    }
    Ok(bps as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("20").unwrap_err().problem.contains("no unit"));
        assert!(parse_duration("86401s").unwrap_err().problem.contains("longer than 1 day"));
        assert_eq!(parse_duration("86400s").unwrap(), MAX_DURATION);
        for bad in ["", "fast", "-1ms", "NaNms", "infs", "1e-10"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ratios_and_rates() {
        assert_eq!(parse_ratio("1%").unwrap(), 0.01);
        assert_eq!(parse_ratio("0.5").unwrap(), 0.5);
        assert!(parse_ratio("101%").is_err() && parse_ratio("x").is_err() && parse_ratio("-1%").is_err());
        assert_eq!(parse_rate("100mbit").unwrap(), 100_000_000);
        assert_eq!(parse_rate("1Gbit").unwrap(), 1_000_000_000);
        assert!(parse_rate("0").is_err() && parse_rate("lots").is_err());
    }
}
