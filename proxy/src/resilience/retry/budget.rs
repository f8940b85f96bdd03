//! [`RetryBudget`]: retries may not exceed `percent` of recent requests plus
//! `minPerSecond`, over `window` — Finagle's budget, as tower's
//! [`TpsBudget`] implements it. Every request deposits; every retry
//! withdraws; an empty budget means the retry is not sent.

use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

/// The budget's settings, compared to keep a budget's state across policy
/// updates that did not change them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetSettings {
    pub percent: f64,
    pub min_per_second: u32,
    pub window: Duration,
}

/// A route's retry budget (shared by every request on the route).
#[derive(Debug)]
pub struct RetryBudget {
    settings: BudgetSettings,
    inner: TpsBudget,
}

impl RetryBudget {
    /// `window` is clamped to 1–60 s and `percent` to 0–1000 (tower's bounds;
    /// policy validation keeps values inside them anyway).
    pub fn new(settings: BudgetSettings) -> Self {
        let window = settings
            .window
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let ratio = (settings.percent / 100.0).clamp(0.0, 1000.0) as f32;
        let min = settings.min_per_second.min(i32::MAX as u32 - 1);
        RetryBudget {
            settings,
            inner: TpsBudget::new(window, min, ratio),
        }
    }

    pub fn settings(&self) -> BudgetSettings {
        self.settings
    }

    /// Counts one request.
    pub fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes one retry from the budget; `false` when it is exhausted.
    pub fn withdraw(&self) -> bool {
        self.inner.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(percent: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::new(BudgetSettings {
            percent,
            min_per_second,
            window: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_percentage_of_requests_plus_a_reserve() {
        let b = budget(20.0, 1);
        for _ in 0..100 {
            b.deposit();
        }
        let allowed = (0..1000).take_while(|_| b.withdraw()).count();
        // 20% of 100 requests plus 1/s over the 10 s window.
        assert_eq!(allowed, 20 + 10);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_window() {
        let b = budget(50.0, 0);
        for _ in 0..10 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!b.withdraw(), "old requests no longer fund retries");
        b.deposit();
        b.deposit();
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }
}
