//! [`Progress`]: a downstream connection's socket that records when bytes
//! last moved either way, so the watchdog can close a connection whose
//! requests are stuck: a client that stops reading a response (the proxy's
//! writes block, hyper stops pulling the body, no body timer can fire) or
//! stops sending a request body the app is not waiting for.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::deadline::deadline_after;

/// When bytes last moved on a connection.
#[derive(Debug)]
pub(super) struct LastIo {
    start: Instant,
    /// Milliseconds after `start` of the last read or write that moved bytes.
    last_ms: AtomicU64,
    /// The last write found the socket full (the peer is not reading).
    write_blocked: AtomicBool,
}

/// What the watchdog makes of a connection's progress.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stall {
    /// Work is pending and no byte moved for the stall timeout.
    Stalled,
    /// Not stalled; look again at this instant.
    LookAt(Instant),
}

impl LastIo {
    pub(super) fn new() -> Self {
        LastIo {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
        }
    }

    /// A connection is stalled when it has work (`busy`: a request being
    /// handled; or a write the peer does not take) and no byte moved
    /// either way for `stall`. A quiet connection without work is not
    /// stalled, only idle (the idle timeout's business).
    pub(super) fn stall(&self, busy: bool, stall: Duration, now: Instant) -> Stall {
        let due = deadline_after(self.last(), stall);
        let working = busy || self.write_blocked.load(Ordering::Relaxed);
        if working && due <= now {
            Stall::Stalled
        } else if due > now {
            Stall::LookAt(due)
        } else {
            // Quiet and idle: work that starts now is stalled at the earliest after `stall`.
            Stall::LookAt(deadline_after(now, stall))
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When bytes last moved.
    pub(super) fn last(&self) -> Instant {
        deadline_after(
            self.start,
            Duration::from_millis(self.last_ms.load(Ordering::Relaxed)),
        )
    }
}

/// A socket whose reads and writes that move bytes touch a [`LastIo`].
pub(super) struct Progress<T> {
    io: T,
    last: Arc<LastIo>,
}

impl<T> Progress<T> {
    pub(super) fn new(io: T, last: Arc<LastIo>) -> Self {
        Progress { io, last }
    }

    /// Records the outcome of a write.
    fn wrote(&self, polled: &Poll<std::io::Result<usize>>) {
        match polled {
            Poll::Pending => self.last.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.last.write_blocked.store(false, Ordering::Relaxed);
                self.last.touch();
            }
            Poll::Ready(_) => {}
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Progress<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Progress<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
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
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_a_connection_with_work_and_no_progress_is_stalled() {
        let stall = Duration::from_secs(1);
        let last = LastIo::new();
        let start = Instant::now();
        // Quiet without work: idle, never stalled; looked at again later.
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        assert_eq!(last.stall(false, stall, now), Stall::LookAt(now + stall));
        // A request in flight and nothing moved for the stall timeout.
        assert_eq!(last.stall(true, stall, now), Stall::Stalled);
        // Bytes moved recently: look again when the stall timeout is up.
        last.touch();
        assert_eq!(
            last.stall(true, stall, now),
            Stall::LookAt(start + Duration::from_secs(6))
        );
        // A write the peer does not take is work even without a request.
        last.write_blocked.store(true, Ordering::Relaxed);
        tokio::time::advance(stall).await;
        assert_eq!(last.stall(false, stall, Instant::now()), Stall::Stalled);
    }
}
