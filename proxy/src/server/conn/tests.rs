//! The idle watchdog's bookkeeping.

use super::*;

fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        ..Limits::default()
    }
}

fn activity() -> Arc<Activity> {
    Arc::new(Activity {
        start: Instant::now(),
        in_flight: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        last_ms: AtomicU64::new(0),
    })
}

#[tokio::test(start_paused = true)]
async fn fresh_connections_get_the_header_read_timeout() {
    let a = activity();
    assert_eq!(
        a.idle_deadline(&limits()),
        Some(a.start + Duration::from_secs(10))
    );
}

#[tokio::test(start_paused = true)]
async fn busy_connections_are_never_idle_and_idle_counts_from_the_last_request() {
    let a = activity();
    a.requests.fetch_add(1, Ordering::Relaxed);
    a.in_flight.fetch_add(1, Ordering::Relaxed);
    let guard = InFlight(a.clone());
    assert_eq!(a.idle_deadline(&limits()), None);
    tokio::time::advance(Duration::from_secs(30)).await;
    drop(guard);
    let ended = Instant::now();
    assert_eq!(
        a.idle_deadline(&limits()),
        Some(ended + Duration::from_secs(60))
    );
}
