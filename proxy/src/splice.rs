//! Splicing two byte streams: copies both ways (each end of stream passed
//! on as a half-close of the other side's write half) until both
//! directions are done, either side fails, no byte moved either way for an
//! idle timeout, or a stop token fires; optionally counts the bytes each
//! way. Upgraded HTTP connections and `CONNECT` tunnels
//! ([`crate::forward`]) and opaque TCP passthrough ([`crate::transparent`])
//! are splices.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deadline::deadline_after;

/// Bytes copied per read, each way.
const BUFFER: usize = 16 * 1024;

/// How a splice ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SpliceEnd {
    /// Both sides finished (or one failed).
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// The stop token fired (the grace period of a shutdown ended).
    Shutdown,
}

/// Copies both ways until both sides are done, one fails, `idle` passes
/// without a byte either way, or `stop` fires; `counted` counts the bytes
/// read from `a` (first) and from `b`. Dropping the streams on return
/// closes both sides.
pub async fn splice<A, B>(
    a: A,
    b: B,
    idle: Duration,
    stop: &CancellationToken,
    counted: Option<(Counter, Counter)>,
) -> SpliceEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let (a_bytes, b_bytes) = counted.unzip();
    let mut a = Watched {
        io: a,
        activity: activity.clone(),
        bytes: a_bytes,
    };
    let mut b = Watched {
        io: b,
        activity: activity.clone(),
        bytes: b_bytes,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER);
    let mut copy = std::pin::pin!(copy);
    let mut check_at = deadline_after(Instant::now(), idle);
    loop {
        tokio::select! {
            result = copy.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "splice ended with an error");
                }
                return SpliceEnd::Closed;
            }
            () = tokio::time::sleep_until(check_at) => {
                let idle_at = deadline_after(activity.last(), idle);
                if idle_at <= Instant::now() {
                    return SpliceEnd::Idle;
                }
                check_at = idle_at;
            }
            () = stop.cancelled() => return SpliceEnd::Shutdown,
        }
    }
}

/// When bytes last moved through a splice.
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last read that returned bytes.
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        deadline_after(
            self.start,
            Duration::from_millis(self.last_ms.load(Ordering::Relaxed)),
        )
    }
}

/// One end of a splice; every read that returns bytes counts as activity
/// (whatever is read is written to the other end), and in `bytes`.
struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
    bytes: Option<Counter>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if matches!(polled, Poll::Ready(Ok(()))) && read > 0 {
            self.activity.touch();
            if let Some(bytes) = &self.bytes {
                bytes.inc_by(read as u64);
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_closes_after_the_idle_timeout_and_a_busy_one_does_not() {
        let (mut client, a) = tokio::io::duplex(1024);
        let (b, mut server) = tokio::io::duplex(1024);
        let stop = CancellationToken::new();
        let idle = Duration::from_secs(10);
        let started = Instant::now();
        let tunnel = tokio::spawn(async move { splice(a, b, idle, &stop, None).await });
        // Bytes every 6 s for 30 s: never 10 s of silence.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"ping").await.expect("write");
            let mut got = [0u8; 4];
            server.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"ping");
        }
        assert!(!tunnel.is_finished(), "a busy tunnel stays open");
        let end = tunnel.await.expect("tunnel task");
        assert_eq!(end, SpliceEnd::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(40));
        // Both ends see the close.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.expect("eof"), 0);
        assert_eq!(server.read_to_end(&mut rest).await.expect("eof"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cuts_a_tunnel() {
        let (_client, a) = tokio::io::duplex(64);
        let (b, _server) = tokio::io::duplex(64);
        let stop = CancellationToken::new();
        stop.cancel();
        let end = splice(a, b, Duration::from_secs(300), &stop, None).await;
        assert_eq!(end, SpliceEnd::Shutdown);
    }
}
