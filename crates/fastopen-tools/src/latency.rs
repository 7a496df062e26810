//! The one latency series of the engines: durations in microseconds in an
//! hdrhistogram, and their percentiles. `tfo bench` keeps a few fine ones
//! (5 significant digits: 1 us resolution at 100 ms); `tfo load` one compact
//! one per client and kind (3 digits: 0.1 %), merged at the end.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A series of measured durations.
#[derive(Debug, Clone)]
pub struct Series {
    histogram: Histogram<u64>,
    sum_us: f64,
}

/// Percentiles of a series, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    /// Samples.
    pub n: u64,
    /// The shortest.
    pub min_ms: f64,
    /// The median.
    pub p50_ms: f64,
    /// The 90th percentile.
    pub p90_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// The longest.
    pub max_ms: f64,
    /// The mean.
    pub mean_ms: f64,
}

impl Default for Series {
    fn default() -> Series {
        Series::new()
    }
}

impl Series {
    /// 1 us to 1 hour, 5 significant digits (16 MiB: for a few series).
    pub fn new() -> Series {
        Series::with_digits(5)
    }

    /// 1 us to 1 hour, 3 significant digits (0.1 %; 200 KiB: for one
    /// series per client).
    pub fn compact() -> Series {
        Series::with_digits(3)
    }

    fn with_digits(digits: u8) -> Series {
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, digits).expect("valid histogram bounds");
        Series { histogram, sum_us: 0.0 }
    }

    /// Adds `other`'s samples (of any precision) to this series.
    pub fn merge(&mut self, other: &Series) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.sum_us += other.sum_us;
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// The duration at quantile `q` (0.0 to 1.0), in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    /// The longest, in milliseconds; 0 when empty.
    pub fn max_ms(&self) -> f64 {
        self.histogram.max() as f64 / 1000.0
    }

    /// The mean, in milliseconds; 0 when empty.
    pub fn mean_ms(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        self.sum_us / self.histogram.len() as f64 / 1000.0
    }

    /// Records `d`, rounded to the microsecond (at least 1 us; beyond an
    /// hour, an hour).
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_nanos() as f64 / 1000.0).round().max(1.0);
        self.histogram.saturating_record(us as u64);
        self.sum_us += us;
    }

    /// How many were recorded.
    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// `None` for an empty series.
    pub fn summary(&self) -> Option<Summary> {
        let h = &self.histogram;
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Summary {
            n: h.len(),
            min_ms: ms(h.min()),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: self.sum_us / h.len() as f64 / 1000.0,
        })
    }

    /// (value in ms, fraction of samples at or below it), for a CDF plot.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let total = self.histogram.len() as f64;
        let mut seen = 0u64;
        self.histogram
            .iter_recorded()
            .map(|v| {
                seen += v.count_at_value();
                (v.value_iterated_to() as f64 / 1000.0, seen as f64 / total)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_series() {
        let mut s = Series::new();
        assert!(s.summary().is_none());
        for ms in 1..=100u64 {
            s.record(Duration::from_millis(ms));
        }
        let sum = s.summary().unwrap();
        assert_eq!(sum.n, 100);
        assert_eq!((sum.min_ms, sum.p50_ms, sum.p90_ms, sum.p99_ms, sum.max_ms), (1.0, 50.0, 90.0, 99.0, 100.0));
        assert!((sum.mean_ms - 50.5).abs() < 1e-9);
        let cdf = s.cdf();
        assert_eq!(cdf.last().unwrap().1, 1.0);
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn resolution_is_a_microsecond_at_100ms() {
        let mut s = Series::new();
        s.record(Duration::from_micros(100_037));
        assert_eq!(s.summary().unwrap().p50_ms, 100.037);
    }

    #[test]
    fn compact_series_merge_into_one() {
        let (mut a, mut b) = (Series::compact(), Series::compact());
        assert!(a.is_empty() && a.mean_ms() == 0.0 && a.quantile_ms(0.5) == 0.0);
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        b.record(Duration::from_millis(5));
        a.merge(&b);
        assert_eq!(a.len(), 3);
        // 3 significant digits: each within 0.1 % (the top of its bucket).
        let near = |got: f64, want: f64| (got - want).abs() / want < 0.001;
        assert!(near(a.quantile_ms(0.5), 3.0) && near(a.max_ms(), 5.0), "{a:?}");
        assert_eq!(a.mean_ms(), 3.0, "the mean is exact (a sum beside the histogram)");
        let mut c = Series::compact();
        c.record(Duration::from_micros(123_456));
        assert!(near(c.quantile_ms(0.5), 123.456), "{}", c.quantile_ms(0.5));
    }
}
