//! Exponential backoff with full jitter (the AWS architecture blog's "full
//! jitter"): before try `n` after a failure (1-based), wait a uniformly random
//! time between zero and `min(max, base × 2^(n-1))`. Spreading the waits over
//! the whole interval keeps clients that failed together from trying again
//! together. One schedule for the two things that wait after a failure: a
//! retry (`resilience::retry`) and a control-plane reconnect (`discovery`,
//! through [`FailureStreak`]).

use std::time::Duration;

/// A backoff schedule: the first ceiling and the largest one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first wait.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of the wait before try `n` (1-based): `base` doubled per
    /// earlier try, capped at `max`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A random wait before try `n`, within `[0, ceiling(n)]`.
    pub fn wait(&self, n: u32) -> Duration {
        let ceiling = self.ceiling(n);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::random_range(0..=nanos))
    }
}

/// Consecutive failures of something retried until it works (the
/// control-plane stream): each failure waits one step further along the
/// schedule; a success starts it over.
#[derive(Clone, Debug)]
pub struct FailureStreak {
    backoff: Backoff,
    failures: u32,
}

impl FailureStreak {
    /// No failures yet.
    pub fn new(backoff: Backoff) -> FailureStreak {
        FailureStreak {
            backoff,
            failures: 0,
        }
    }

    /// The ceiling of the wait after the next failure.
    pub fn ceiling(&self) -> Duration {
        self.backoff.ceiling(self.failures.saturating_add(1))
    }

    /// Records a failure and returns how long to wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff.wait(self.failures)
    }

    /// It worked: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECONNECT: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(10),
    };

    #[test]
    fn ceilings_double_up_to_the_max() {
        let b = Backoff {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        };
        let ceilings: Vec<u128> = (1..=6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [25, 50, 100, 200, 250, 250]);
        assert_eq!(b.ceiling(200), Duration::from_millis(250), "no overflow");
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(250));
    }

    #[test]
    fn waits_are_spread_over_the_whole_interval() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let waits: Vec<Duration> = (0..500).map(|_| b.wait(1)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(100)));
        assert!(waits.iter().any(|w| *w < Duration::from_millis(20)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(80)));
        let zero = Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(zero.wait(3), Duration::ZERO);
    }

    #[test]
    fn a_streak_walks_the_schedule_and_a_success_resets_it() {
        let mut streak = FailureStreak::new(RECONNECT);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let ceiling = streak.ceiling();
            ceilings.push(ceiling.as_millis());
            assert!(streak.next_delay() <= ceiling);
        }
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        for _ in 0..100 {
            streak.next_delay();
        }
        assert_eq!(streak.ceiling(), Duration::from_secs(10), "no overflow");
        streak.reset();
        assert_eq!(streak.ceiling(), Duration::from_millis(100));
    }

    /// The schedule as the watch loop sleeps it, in paused time: the total
    /// wait of n failures never exceeds the sum of the ceilings.
    #[tokio::test(start_paused = true)]
    async fn sleeping_a_streak_takes_at_most_the_ceilings() {
        let mut streak = FailureStreak::new(RECONNECT);
        let start = tokio::time::Instant::now();
        let mut bound = Duration::ZERO;
        for _ in 0..8 {
            bound += streak.ceiling();
            tokio::time::sleep(streak.next_delay()).await;
        }
        let waited = start.elapsed();
        assert!(waited <= bound, "{waited:?} > {bound:?}");
        assert_eq!(bound, Duration::from_millis(22_700));
    }
}
