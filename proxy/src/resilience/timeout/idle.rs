//! The `idle` timeout on a response body: when no frame arrives for that
//! long, the body ends with a `timeout` error (the connection is dropped with
//! it) and `levee_timeouts_total{kind="idle"}` counts it. Each frame restarts
//! the wait, so long but live streams are not cut.
//!
//! The wait is counted from the poll that found no frame ready. The timer
//! is made only then (a body whose frames are ready when asked, the common
//! case for small responses, never touches the clock or the timer wheel),
//! and a frame does not re-arm it: it only marks it stale, and the next
//! wait moves it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};

use crate::body::{BoxBody, BoxError};

pin_project! {
    /// A body that fails after `idle` without a frame.
    pub struct IdleTimeoutBody {
        #[pin]
        inner: BoxBody,
        // Made on the first wait (`None` until the body was ever pending).
        #[pin]
        timer: Option<Sleep>,
        // A frame arrived since the timer was last set: its deadline is
        // stale and moves on the next wait.
        stale: bool,
        idle: Duration,
        fired: Counter,
    }
}

impl IdleTimeoutBody {
    pub fn new(inner: BoxBody, idle: Duration, fired: Counter) -> Self {
        IdleTimeoutBody {
            inner,
            timer: None,
            stale: false,
            idle,
            fired,
        }
    }
}

impl Body for IdleTimeoutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.stale = true;
            return Poll::Ready(frame);
        }
        // Waiting for a frame: from now on, at most `idle`.
        if this.timer.is_none() || *this.stale {
            let deadline = crate::deadline::deadline_after(Instant::now(), *this.idle);
            match this.timer.as_mut().as_pin_mut() {
                Some(timer) => timer.reset(deadline),
                None => this.timer.set(Some(tokio::time::sleep_until(deadline))),
            }
            *this.stale = false;
        }
        if let Some(timer) = this.timer.as_pin_mut()
            && timer.poll(cx).is_ready()
        {
            this.fired.inc();
            let message = format!("idle timeout: no data for {:?}", this.idle);
            return Poll::Ready(Some(Err(message.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_live_stream_passes_and_a_silent_one_is_cut() {
        let frames = futures_util::stream::unfold(0u8, |n| async move {
            if n == 3 {
                // Silence far longer than the idle timeout.
                tokio::time::sleep(Duration::from_secs(60)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(800)).await;
            }
            Some((Ok::<_, BoxError>(Frame::data(Bytes::from(vec![n]))), n + 1))
        });
        let counter = Counter::default();
        let mut body = std::pin::pin!(IdleTimeoutBody::new(
            StreamBody::new(frames).boxed(),
            Duration::from_secs(1),
            counter.clone(),
        ));
        for expected in 0..3u8 {
            let frame = body.frame().await.expect("frame").expect("data");
            assert_eq!(frame.into_data().expect("data")[0], expected);
        }
        let err = body.frame().await.expect("frame").expect_err("idle");
        assert!(err.to_string().contains("idle timeout"), "{err}");
        assert_eq!(counter.get(), 1);
    }
}
