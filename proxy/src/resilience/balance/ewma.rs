//! Peak-EWMA load of one endpoint (Finagle's and tower's `PeakEwma`): an
//! exponentially weighted moving average of response latency that jumps up
//! to any sample above it at once and decays slowly, multiplied by the
//! number of requests in flight plus one. A slow or busy endpoint looks
//! expensive quickly and cheap again only gradually; without new samples the
//! estimate decays toward zero, so an endpoint that stopped getting traffic
//! is tried again. Failures are charged their real latency: failing
//! endpoints are the business of endpoint health (ejection), as in tower.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How fast old samples stop counting.
const DECAY: Duration = Duration::from_secs(10);

/// The latency assumed for an endpoint that has not answered yet: low, so
/// new endpoints get traffic and earn a real estimate.
pub const DEFAULT_RTT: Duration = Duration::from_millis(10);

/// The load estimate of one endpoint.
#[derive(Debug)]
pub struct PeakEwma {
    /// (estimate in nanoseconds, time of the last sample).
    estimate: Mutex<(f64, Instant)>,
    in_flight: AtomicUsize,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            estimate: Mutex::new((DEFAULT_RTT.as_nanos() as f64, Instant::now())),
            in_flight: AtomicUsize::new(0),
        }
    }
}

impl PeakEwma {
    /// The cost of sending one more request here.
    pub fn cost(&self) -> f64 {
        let (estimate, last) = *self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = Instant::now().saturating_duration_since(last).as_secs_f64();
        let decayed = estimate * (-idle / DECAY.as_secs_f64()).exp();
        decayed * (self.in_flight.load(Ordering::Relaxed) + 1) as f64
    }

    /// A request started.
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request finished after `rtt`, at `now`.
    pub fn finish(&self, rtt: Duration, now: Instant) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let rtt = rtt.as_nanos() as f64;
        let mut guard = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        let (estimate, last) = *guard;
        let next = if rtt > estimate {
            rtt
        } else {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            let decay = (-elapsed / DECAY.as_secs_f64()).exp();
            estimate * decay + rtt * (1.0 - decay)
        };
        *guard = (next, now);
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn peaks_at_once_and_decays_slowly() {
        let e = PeakEwma::default();
        let base = e.cost();
        e.start();
        e.finish(Duration::from_millis(500), Instant::now());
        let peak = e.cost();
        assert!((peak - 500e6).abs() < 1.0, "{peak}");
        tokio::time::advance(Duration::from_secs(10)).await;
        let idle = e.cost();
        assert!(
            (idle - 500e6 / std::f64::consts::E).abs() < 1e3,
            "decays unused: {idle}"
        );
        e.start();
        e.finish(Duration::from_millis(5), Instant::now());
        let after = e.cost();
        assert!(after < peak * 0.5 && after > peak * 0.3, "{after}");
        tokio::time::advance(Duration::from_secs(60)).await;
        e.start();
        e.finish(Duration::from_millis(5), Instant::now());
        assert!(e.cost() < base, "{}", e.cost());
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_raise_the_cost() {
        let e = PeakEwma::default();
        let idle = e.cost();
        e.start();
        e.start();
        assert_eq!(e.in_flight(), 2);
        assert!((e.cost() - 3.0 * idle).abs() < 1.0);
    }
}
