//! Latency recording: an HDR histogram in nanoseconds (3 significant
//! digits, 1 ns to 60 s) and the percentile summary the report prints.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// Largest latency recorded; slower samples are clamped to it.
const HIGHEST_NS: u64 = 60_000_000_000;

/// Latencies of one load run (or several merged).
#[derive(Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

/// The percentiles the report shows, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Latencies {
        let hist = Histogram::new_with_bounds(1, HIGHEST_NS, 3)
            .expect("constant histogram bounds are valid");
        Latencies { hist }
    }

    /// Records one latency; values beyond 60 s count as 60 s.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(ns.clamp(1, HIGHEST_NS));
    }

    /// Adds every sample of `other` (same bounds, so this cannot fail).
    pub fn merge(&mut self, other: &Latencies) {
        // Both histograms share the same bounds and auto-resize is off, but
        // `add` only fails when other holds values beyond ours: impossible here.
        let _ = self.hist.add(&other.hist);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn summary(&self) -> Summary {
        if self.hist.is_empty() {
            return Summary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Summary {
            count: self.hist.len(),
            p50_us: us(self.hist.value_at_quantile(0.50)),
            p90_us: us(self.hist.value_at_quantile(0.90)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
        }
    }
}

/// The median of `values` (mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Field-by-field median of several repetitions' summaries.
pub fn median_summary(reps: &[Summary]) -> Summary {
    let pick = |f: fn(&Summary) -> f64| median(&reps.iter().map(f).collect::<Vec<_>>());
    Summary {
        count: pick(|s| s.count as f64) as u64,
        p50_us: pick(|s| s.p50_us),
        p90_us: pick(|s| s.p90_us),
        p99_us: pick(|s| s.p99_us),
        p999_us: pick(|s| s.p999_us),
        max_us: pick(|s| s.max_us),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        // 3 significant digits: within 0.1 %.
        (a - b).abs() <= b.abs() * 0.001 + 0.001
    }

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut l = Latencies::new();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!(close(s.p50_us, 500.0), "{s:?}");
        assert!(close(s.p90_us, 900.0), "{s:?}");
        assert!(close(s.p99_us, 990.0), "{s:?}");
        assert!(close(s.p999_us, 999.0), "{s:?}");
        assert!(close(s.max_us, 1000.0), "{s:?}");
    }

    #[test]
    fn merge_adds_samples() {
        let mut fast = Latencies::new();
        let mut slow = Latencies::new();
        for _ in 0..90 {
            fast.record(Duration::from_micros(10));
        }
        for _ in 0..10 {
            slow.record(Duration::from_millis(5));
        }
        fast.merge(&slow);
        let s = fast.summary();
        assert_eq!(s.count, 100);
        assert!(close(s.p50_us, 10.0), "{s:?}");
        assert!(close(s.p99_us, 5000.0), "{s:?}");
    }

    #[test]
    fn empty_and_huge_values() {
        assert_eq!(Latencies::new().summary(), Summary::default());
        let mut l = Latencies::new();
        l.record(Duration::from_secs(3600));
        l.record(Duration::ZERO);
        let s = l.summary();
        assert_eq!(s.count, 2);
        assert!(close(s.max_us, 60_000_000.0), "{s:?}");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        let a = Summary {
            count: 10,
            p50_us: 1.0,
            p99_us: 9.0,
            ..Summary::default()
        };
        let b = Summary {
            count: 30,
            p50_us: 3.0,
            p99_us: 7.0,
            ..Summary::default()
        };
        let c = Summary {
            count: 20,
            p50_us: 2.0,
            p99_us: 8.0,
            ..Summary::default()
        };
        let m = median_summary(&[a, b, c]);
        assert_eq!((m.count, m.p50_us, m.p99_us), (20, 2.0, 8.0));
    }
}
