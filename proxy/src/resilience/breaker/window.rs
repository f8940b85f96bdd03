//! A sliding time window of call counts (total, failed, slow), kept in a
//! ring of buckets so that recording and reading are O(buckets) without
//! allocating. The window slides one bucket at a time (a tenth of its length).

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
}

impl Window {
    pub(crate) fn new(window: Duration, now: Instant) -> Window {
        let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Window {
            origin: now,
            bucket_nanos: (nanos / BUCKETS as u64).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        // In u64 (584 years of nanoseconds): a u128 division is a slow
        // library call, and this runs on every recorded call.
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX) / self.bucket_nanos
    }

    /// Counts one call at `now`.
    pub(crate) fn record(&mut self, now: Instant, failed: bool, slow: bool) {
        let epoch = self.epoch(now);
        // Epochs start at 0, so a never-used bucket (epoch 0, zero counts) is harmless.
        let bucket = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket.total = bucket.total.saturating_add(1);
        bucket.failed = bucket.failed.saturating_add(u32::from(failed));
        bucket.slow = bucket.slow.saturating_add(u32::from(slow));
    }

    /// The sums over the buckets still inside the window at `now`.
    pub(crate) fn counts(&self, now: Instant) -> Counts {
        let epoch = self.epoch(now);
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
}
