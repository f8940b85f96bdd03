//! Deadline arithmetic that cannot overflow: `now + d` for a `d` that came
//! from outside (a header, a policy, a DNS TTL). `Instant + Duration` panics
//! when the sum does not fit; every deadline the proxy computes from such a
//! value goes through [`deadline_after`] instead.

use std::time::Duration;

use tokio::time::Instant;

/// How far ahead a saturated deadline lies: about 30 years, as tokio's own
/// "far future" (never reached by a running proxy).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + d`, or a deadline about 30 years ahead when `d` is longer. (A
/// clock so close to its end that even that does not fit gives `now`.)
pub fn deadline_after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(FAR_FUTURE)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_ordinary_durations_exactly() {
        let now = Instant::now();
        assert_eq!(
            deadline_after(now, Duration::from_millis(250)),
            now + Duration::from_millis(250)
        );
        assert_eq!(deadline_after(now, Duration::ZERO), now);
    }

    #[test]
    fn saturates_instead_of_panicking() {
        let now = Instant::now();
        let far = deadline_after(now, Duration::MAX);
        assert_eq!(far, now + FAR_FUTURE);
        assert_eq!(deadline_after(now, Duration::from_secs(u64::MAX)), far);
        assert!(deadline_after(now, Duration::from_secs(3600)) < far);
    }
}
