//! Latency statistics: percentiles of a series of durations (hdrhistogram,
//! 5 significant digits: 1 us resolution at 100 ms).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A series of measured durations.
#[derive(Debug)]
pub(crate) struct Series {
    histogram: Histogram<u64>,
    sum_us: f64,
}

/// Percentiles of a series, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub(crate) struct Summary {
    pub(crate) n: u64,
    pub(crate) min_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) mean_ms: f64,
}

impl Default for Series {
    fn default() -> Series {
        Series::new()
    }
}

impl Series {
    pub(crate) fn new() -> Series {
        // 1 us to 1 hour, 5 significant digits.
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 5).expect("valid histogram bounds");
        Series { histogram, sum_us: 0.0 }
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let us = (d.as_nanos() as f64 / 1000.0).round().max(1.0);
        self.histogram.saturating_record(us as u64);
        self.sum_us += us;
    }

    pub(crate) fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// `None` for an empty series.
    pub(crate) fn summary(&self) -> Option<Summary> {
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
    pub(crate) fn cdf(&self) -> Vec<(f64, f64)> {
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
}
