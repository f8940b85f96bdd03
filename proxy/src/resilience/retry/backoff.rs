//! Exponential backoff with full jitter (the AWS architecture blog's "full
//! jitter"): before retry `n` (1-based), wait a uniformly random time between
//! zero and `min(max, base × 2^(n-1))`. Spreading retries over the whole
//! interval keeps clients that failed together from retrying together.

use std::time::Duration;

/// The backoff schedule of one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of the wait before retry `n` (1-based).
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A random wait before retry `n`, within `[0, ceiling(n)]`.
    pub fn wait(&self, n: u32) -> Duration {
        let ceiling = self.ceiling(n);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_max() {
        let b = Backoff {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        };
        let ceilings: Vec<u128> = (1..=6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [25, 50, 100, 200, 250, 250]);
        assert_eq!(b.ceiling(200), Duration::from_millis(250), "no overflow");
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
}
