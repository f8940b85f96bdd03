//! Reconnect delays: exponential with full jitter (each delay is uniform in
//! `[0, min(max, base * 2^attempt)]`), reset once a stream has worked.

use std::time::Duration;

/// The reconnect schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first delay.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// Where a connection is in the schedule.
#[derive(Clone, Debug)]
pub struct Attempts {
    backoff: Backoff,
    failures: u32,
}

impl Attempts {
    pub fn new(backoff: Backoff) -> Attempts {
        Attempts {
            backoff,
            failures: 0,
        }
    }

    /// The ceiling of the next delay: base doubled per failure so far, capped.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(30)).unwrap_or(u32::MAX);
        self.backoff
            .base
            .checked_mul(factor)
            .map_or(self.backoff.max, |d| d.min(self.backoff.max))
    }

    /// Records a failure and returns how long to wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(rand::random::<f64>())
    }

    /// A stream worked: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_max_and_reset() {
        let mut attempts = Attempts::new(Backoff::default());
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(attempts.ceiling().as_millis());
            let delay = attempts.next_delay();
            assert!(delay <= Duration::from_millis(*ceilings.last().expect("one") as u64));
        }
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        for _ in 0..100 {
            attempts.next_delay();
        }
        assert_eq!(attempts.ceiling(), Duration::from_secs(10), "no overflow");
        attempts.reset();
        assert_eq!(attempts.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn delays_are_jittered() {
        let mut attempts = Attempts::new(Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
        });
        let delays: std::collections::HashSet<_> = (0..20).map(|_| attempts.next_delay()).collect();
        assert!(delays.len() > 1, "{delays:?}");
    }

    /// The schedule as the watch loop sleeps it, in paused time: the total
    /// wait of n failures never exceeds the sum of the ceilings.
    #[tokio::test(start_paused = true)]
    async fn sleeping_the_schedule_takes_at_most_the_ceilings() {
        let mut attempts = Attempts::new(Backoff::default());
        let start = tokio::time::Instant::now();
        let mut bound = Duration::ZERO;
        for _ in 0..8 {
            bound += attempts.ceiling();
            tokio::time::sleep(attempts.next_delay()).await;
        }
        let waited = start.elapsed();
        assert!(waited <= bound, "{waited:?} > {bound:?}");
        assert_eq!(bound, Duration::from_millis(22_700));
    }
}
