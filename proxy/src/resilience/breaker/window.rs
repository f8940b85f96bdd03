//! A sliding time window of call counts (total, failed, slow), kept in a
//! ring of buckets without allocating. The window slides one bucket at a
//! time (a tenth of its length). The sums over the window are kept as calls
//! are recorded and recomputed from the buckets only when the window slides,
//! so recording a call (every call, for each breaker) is O(1) and returns
//! the sums the breaker judges.

use std::time::Duration;

use tokio::time::Instant;

/// Buckets per window: the window's resolution is a tenth of its length.
const BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Which bucket-length interval since `origin` this bucket holds.
    epoch: u64,
    total: u32,
    failed: u32,
    slow: u32,
}

/// Sums over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub total: u32,
    pub failed: u32,
    pub slow: u32,
}

/// Call counts over the last `window`.
#[derive(Debug)]
pub(crate) struct Window {
    origin: Instant,
    bucket_nanos: u64,
    buckets: [Bucket; BUCKETS],
    /// The latest epoch recorded at (the window's newest bucket).
    current: u64,
    /// The sums over the buckets inside the window ending at `current`.
    sum: Counts,
}

impl Window {
    pub(crate) fn new(window: Duration, now: Instant) -> Window {
        let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Window {
            origin: now,
            bucket_nanos: (nanos / BUCKETS as u64).max(1),
            buckets: [Bucket::default(); BUCKETS],
            current: 0,
            sum: Counts::default(),
        }
    }

    /// Whether a bucket of `epoch` is inside the window ending at `current`.
    fn in_window(&self, epoch: u64) -> bool {
        epoch <= self.current && epoch.saturating_add(BUCKETS as u64 - 1) >= self.current
    }

    fn epoch(&self, now: Instant) -> u64 {
        // In u64 (584 years of nanoseconds): a u128 division is a slow
        // library call, and this runs on every recorded call.
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX) / self.bucket_nanos
    }

    /// Counts one call at `now`; returns the sums over the window at `now`
    /// (as [`Window::counts`] would).
    pub(crate) fn record(&mut self, now: Instant, failed: bool, slow: bool) -> Counts {
        let epoch = self.epoch(now);
        if epoch > self.current {
            // The window slid: its sums are those of the buckets still in it.
            self.sum = self.sum_at(epoch);
            self.current = epoch;
        }
        // Epochs start at 0, so a never-used bucket (epoch 0, zero counts) is harmless.
        let at = (epoch % BUCKETS as u64) as usize;
        let stale = self.buckets[at];
        if stale.epoch != epoch {
            if self.in_window(stale.epoch) {
                self.sum = self.sum.minus(&stale);
            }
            self.buckets[at] = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        let bucket = &mut self.buckets[at];
        bucket.total = bucket.total.saturating_add(1);
        bucket.failed = bucket.failed.saturating_add(u32::from(failed));
        bucket.slow = bucket.slow.saturating_add(u32::from(slow));
        if epoch < self.current {
            // Recorded at a time before the newest bucket (clock reads
            // racing in from two threads): counted from the buckets.
            if self.in_window(epoch) {
                self.sum = self.sum_at(self.current);
            }
            return self.sum_at(epoch);
        }
        self.sum = Counts {
            total: self.sum.total.saturating_add(1),
            failed: self.sum.failed.saturating_add(u32::from(failed)),
            slow: self.sum.slow.saturating_add(u32::from(slow)),
        };
        self.sum
    }

    /// The sums over the buckets still inside the window at `now`.
    #[cfg(test)]
    pub(crate) fn counts(&self, now: Instant) -> Counts {
        let epoch = self.epoch(now);
        if epoch == self.current {
            return self.sum;
        }
        self.sum_at(epoch)
    }

    /// The sums over the buckets inside the window ending at `epoch`.
    fn sum_at(&self, epoch: u64) -> Counts {
        let oldest = epoch.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.epoch >= oldest && b.epoch <= epoch)
            .fold(Counts::default(), |acc, b| Counts {
                total: acc.total.saturating_add(b.total),
                failed: acc.failed.saturating_add(b.failed),
                slow: acc.slow.saturating_add(b.slow),
            })
    }

    /// Forgets every call.
    pub(crate) fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
        self.sum = Counts::default();
    }
}

impl Counts {
    /// These sums without `bucket`'s calls.
    fn minus(&self, bucket: &Bucket) -> Counts {
        Counts {
            total: self.total.saturating_sub(bucket.total),
            failed: self.failed.saturating_sub(bucket.failed),
            slow: self.slow.saturating_sub(bucket.slow),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_leave_the_window_after_its_length() {
        let start = Instant::now();
        let mut w = Window::new(Duration::from_secs(10), start);
        w.record(start, true, false);
        w.record(start + Duration::from_secs(5), false, true);
        let c = w.counts(start + Duration::from_secs(5));
        assert_eq!((c.total, c.failed, c.slow), (2, 1, 1));
        // The first call ages out after 10s, the second after 15s.
        let c = w.counts(start + Duration::from_millis(10_500));
        assert_eq!((c.total, c.failed, c.slow), (1, 0, 1));
        let c = w.counts(start + Duration::from_secs(16));
        assert_eq!(c, Counts::default());
        // A bucket reused for a later epoch starts from zero.
        w.record(start + Duration::from_secs(20), true, false);
        let c = w.counts(start + Duration::from_secs(20));
        assert_eq!((c.total, c.failed, c.slow), (1, 1, 0));
        w.clear();
        assert_eq!(w.counts(start + Duration::from_secs(20)), Counts::default());
    }

    /// The sums `record` returns and keeps agree with a count from the
    /// buckets at every step: calls in order, calls recorded late (at a time
    /// before the newest bucket), gaps longer than the window.
    #[tokio::test(start_paused = true)]
    async fn the_kept_sums_match_the_buckets() {
        let start = Instant::now();
        let mut w = Window::new(Duration::from_secs(10), start);
        // Milliseconds after start: in order, late by a bucket or more, far
        // behind (outside the window), after a long gap.
        let steps: &[u64] = &[
            0, 10, 999, 1_000, 1_500, 900, 2_500, 9_999, 10_000, 10_001, 1_000, 12_000, 3_000,
            25_000, 25_001, 24_000, 14_999, 40_000, 40_500, 41_000,
        ];
        for (n, &ms) in steps.iter().enumerate() {
            let now = start + Duration::from_millis(ms);
            let (failed, slow) = (n % 3 == 0, n % 4 == 0);
            let returned = w.record(now, failed, slow);
            let expected = w.sum_at(w.epoch(now));
            assert_eq!(returned, expected, "step {n} at {ms} ms");
            assert_eq!(w.counts(now), expected, "step {n} at {ms} ms");
            assert_eq!(w.sum, w.sum_at(w.current), "kept sum, step {n}");
        }
        let c = w.counts(start + Duration::from_millis(41_000));
        assert_eq!(c.total, 3, "40.0 s, 40.5 s and 41.0 s are in the last 10 s");
    }
}
