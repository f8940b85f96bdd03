//! The renewal task: certify at start, then again at 65–75% of each
//! certificate's lifetime (the jitter keeps proxies started together from
//! renewing together); a failed request is retried with backoff while the
//! current certificate keeps serving (and after it expired, until one works).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Certified, CertifiedWatch, IdentitySettings, request};
use crate::backoff::{Backoff, FailureStreak};
use crate::metrics::identity::IdentityMetrics;

/// Waits between failed certificate requests (full jitter, 200ms up to 30s).
pub const RENEW_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(200),
    max: Duration::from_secs(30),
};

/// Shortest wait between two requests (the jitter may draw zero).
const MIN_WAIT: Duration = Duration::from_millis(50);

/// When to renew a certificate with `lifetime` left: between 65% and 75% of
/// it, `jitter` (0..1) choosing where.
pub fn renew_after(lifetime: Duration, jitter: f64) -> Duration {
    lifetime.mul_f64(0.65 + 0.10 * jitter.clamp(0.0, 1.0))
}

/// Spawns the renewal task on `tasks`; the watch has each certificate.
pub fn start(
    settings: IdentitySettings,
    metrics: IdentityMetrics,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> CertifiedWatch {
    let (tx, rx) = watch::channel(None);
    tasks.spawn(run(settings, metrics, tx, shutdown));
    rx
}

async fn run(
    settings: IdentitySettings,
    metrics: IdentityMetrics,
    tx: watch::Sender<Option<Arc<Certified>>>,
    shutdown: CancellationToken,
) {
    let mut failures = FailureStreak::new(RENEW_BACKOFF);
    // The roots the CA sent last: trusted next to --trust-bundle-file.
    let mut roots: Vec<CertificateDer<'static>> = Vec::new();
    loop {
        let answer = tokio::select! {
            () = shutdown.cancelled() => break,
            answer = request::certify(&settings, &roots) => answer,
        };
        let wait = match answer {
            Ok(certified) => {
                failures.reset();
                let lifetime = certified
                    .not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let not_after = certified
                    .not_after
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                metrics.certified(not_after);
                roots.clone_from(&certified.roots);
                let wait = renew_after(lifetime, rand::random());
                tracing::info!(spiffe_id = %certified.spiffe_id, ?lifetime, renew_in = ?wait, "workload certificate obtained");
                tx.send_replace(Some(Arc::new(certified)));
                wait
            }
            Err(error) => {
                metrics.renewal_failed();
                let wait = failures.next_delay().max(MIN_WAIT);
                let valid = tx
                    .borrow()
                    .as_ref()
                    .is_some_and(|c| c.not_after > SystemTime::now());
                tracing::warn!(%error, retry_in = ?wait, current_still_valid = valid, "certificate request failed");
                wait
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    tracing::debug!("identity renewal stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_between_65_and_75_percent() {
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(renew_after(day, 0.0), day.mul_f64(0.65));
        assert_eq!(renew_after(day, 0.5), day.mul_f64(0.70));
        assert_eq!(renew_after(day, 1.0), day.mul_f64(0.75));
        // Out-of-range jitter stays inside the window.
        assert_eq!(renew_after(day, 7.0), day.mul_f64(0.75));
        assert_eq!(renew_after(Duration::ZERO, 0.5), Duration::ZERO);
    }
}
