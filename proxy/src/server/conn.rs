//! One downstream connection: hyper's auto (HTTP/1.1 or HTTP/2) server with
//! upgrades, an idle watchdog, and graceful/hard shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Handler, Limits, Shutdown};

/// The HTTP server settings shared by every connection of a listener.
pub(super) fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's floor is 8 KiB; a head larger than the buffer gets 431.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(1024)
        .adaptive_window(true)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// When the connection last had work, for the idle watchdog.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `start` at which a request last began or ended.
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection may be closed as idle, or `None` while busy.
    fn idle_deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        // Until a first request arrives, the header read timeout applies.
        let limit = if self.requests.load(Ordering::Relaxed) == 0 {
            limits.header_read_timeout
        } else {
            limits.idle_timeout
        };
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(last + limit)
    }
}

/// Decrements the in-flight count when a request's handling ends or is dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

pub(super) async fn serve_connection<H: Handler>(
    stream: TcpStream,
    handler: Arc<H>,
    builder: &auto::Builder<TokioExecutor>,
    limits: &Limits,
    shutdown: &Shutdown,
) {
    let activity = Arc::new(Activity {
        start: Instant::now(),
        in_flight: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        last_ms: AtomicU64::new(0),
    });
    let seen = activity.clone();
    // Recorded on every request for per-client limits (inbound rate limit).
    let peer = stream.peer_addr().ok().map(super::ClientAddr);
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if let Some(peer) = peer {
            req.extensions_mut().insert(peer);
        }
        seen.requests.fetch_add(1, Ordering::Relaxed);
        seen.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(seen.clone());
        let handler = handler.clone();
        async move {
            let response = handler.handle(req).await;
            drop(guard);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    // The first look comes after whichever limit can fire first.
    let mut check_at = Instant::now() + limits.header_read_timeout.min(limits.idle_timeout);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "downstream connection ended with an error");
                }
                return;
            }
            () = shutdown.graceful.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            () = tokio::time::sleep_until(check_at), if !draining => {
                match activity.idle_deadline(limits) {
                    Some(deadline) if deadline <= Instant::now() => {
                        tracing::debug!("closing idle downstream connection");
                        conn.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    Some(deadline) => check_at = deadline,
                    // Busy: look again later; closing waits for requests anyway.
                    None => check_at = Instant::now() + limits.idle_timeout,
                }
            }
            () = shutdown.hard.cancelled() => {
                tracing::debug!("dropping downstream connection at the end of the grace period");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
