//! [`RateLimiter`]: one GCRA (generic cell rate algorithm) bucket,
//! `requestsPerSecond` sustained and `burst` at once, in one atomic.
//!
//! GCRA keeps a single number, the theoretical arrival time (TAT) of the
//! next request if requests came exactly at the sustained rate. A request at
//! `now` is admitted when `TAT - now ≤ (burst - 1) · T` (T = 1/rate), and
//! pushes TAT forward by T. Over any interval of length t at most
//! `rate · t + burst` requests pass, the same bound a token bucket gives.
//!
//! Hand-written rather than `governor`: the time base is tokio's clock, so
//! tests pause and advance it, and the rejection carries the numbers the
//! `RateLimit` headers need; the algorithm is a dozen lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use levee_proto::policy::EffectiveRateLimit;
use tokio::time::Instant;

use crate::errors::Quota;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// One rate-limit bucket, safe to share between requests.
#[derive(Debug)]
pub struct RateLimiter {
    cfg: EffectiveRateLimit,
    /// T: nanoseconds between requests at the sustained rate.
    interval: u64,
    /// (burst - 1) · T: how far ahead of `now` the TAT may run.
    tolerance: u64,
    /// Time zero of `tat`.
    origin: Instant,
    /// The theoretical arrival time, in nanoseconds after `origin`.
    tat: AtomicU64,
}

impl RateLimiter {
    /// A full bucket for `cfg`. A rate of 0 is treated as 1 per second
    /// (validation refuses 0).
    pub fn new(cfg: &EffectiveRateLimit) -> RateLimiter {
        let rate = u64::from(cfg.requests_per_second.max(1));
        let interval = (NANOS_PER_SEC / rate).max(1);
        let burst = u64::from(cfg.burst.max(1));
        RateLimiter {
            cfg: *cfg,
            interval,
            tolerance: interval.saturating_mul(burst - 1),
            origin: Instant::now(),
            tat: AtomicU64::new(0),
        }
    }

    /// The config this bucket enforces.
    pub fn config(&self) -> &EffectiveRateLimit {
        &self.cfg
    }

    /// Admits one request now, or says when the next one would be admitted.
    pub fn check(&self) -> Result<(), Quota> {
        let now = Instant::now().saturating_duration_since(self.origin);
        self.check_at(u64::try_from(now.as_nanos()).unwrap_or(u64::MAX))
    }

    fn check_at(&self, now: u64) -> Result<(), Quota> {
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let tat = current.max(now);
            let ahead = tat - now;
            if ahead > self.tolerance {
                let wait = Duration::from_nanos(ahead - self.tolerance);
                return Err(self.quota(wait));
            }
            match self.tat.compare_exchange_weak(
                current,
                tat.saturating_add(self.interval),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether the bucket is full again at `now` (its TAT is in the past):
    /// an idle client's bucket can then be forgotten without changing anything.
    pub(crate) fn is_idle(&self) -> bool {
        let now = Instant::now().saturating_duration_since(self.origin);
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        self.tat.load(Ordering::Acquire) <= now
    }

    /// The quota of a rejection: nothing remaining until `reset`.
    fn quota(&self, reset: Duration) -> Quota {
        Quota {
            limit: self.cfg.requests_per_second,
            window: Duration::from_secs(1),
            remaining: 0,
            reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(&EffectiveRateLimit {
            requests_per_second: rps,
            burst,
            per_client: false,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn admits_rate_times_time_plus_burst() {
        let limiter = limiter(100, 20);
        let step = Duration::from_millis(1);
        let mut admitted = 0u32;
        // Ten requests every millisecond for 5 seconds: far over the limit.
        for _ in 0..5000 {
            for _ in 0..10 {
                admitted += u32::from(limiter.check().is_ok());
            }
            tokio::time::advance(step).await;
        }
        // 100/s × 5s + 20 = 520 (±1 for the boundary).
        assert!((519..=521).contains(&admitted), "admitted {admitted}");
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_retry_after_the_interval() {
        let limiter = limiter(10, 3);
        for i in 0..3 {
            assert!(limiter.check().is_ok(), "burst request {i}");
        }
        let quota = limiter.check().expect_err("over the burst");
        assert_eq!(quota.reset, Duration::from_millis(100));
        assert_eq!((quota.limit, quota.remaining), (10, 0));
        assert_eq!(quota.window, Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(limiter.check().is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.check().is_ok());
        assert!(!limiter.is_idle());
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(limiter.is_idle());
    }
}
