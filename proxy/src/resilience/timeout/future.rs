//! [`ResponseFuture`]: the inner call raced against the deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Sleep;

use crate::body::BoxError;
use crate::resilience::call::CallAttempts;
use crate::trace::{CallSpan, SpanEvent};

/// What fires the timeout: the sleep, the call's attempts record (whether
/// a sooner timer inside is armed), its counter, the service label, the
/// budget (for the error's detail) and the call's span (for the event).
pub(super) type Timer = (
    Sleep,
    Option<CallAttempts>,
    Counter,
    Arc<str>,
    Duration,
    Option<CallSpan>,
);

pin_project! {
    /// Resolves to the inner response, or to a `timeout` error at the deadline.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        // `sleep` is left unpolled (unregistered) while this record says a
        // sooner timer inside is armed.
        attempts: Option<CallAttempts>,
        fired: Option<(Counter, Arc<str>, Duration, Option<CallSpan>)>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, timer: Option<Timer>) -> Self {
        match timer {
            Some((sleep, attempts, counter, service, after, span)) => ResponseFuture {
                inner,
                sleep: Some(sleep),
                attempts,
                fired: Some((counter, service, after, span)),
            },
            None => ResponseFuture {
                inner,
                sleep: None,
                attempts: None,
                fired: None,
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        // A timer inside, sooner than the deadline, was polled by `inner`
        // just now (or `inner` asked to be polled again): the call will be
        // polled before the deadline, so the deadline's timer need not be
        // in the wheel yet.
        if this
            .attempts
            .as_ref()
            .is_some_and(CallAttempts::sooner_timer_armed)
        {
            return Poll::Pending;
        }
        if let Some(sleep) = this.sleep.as_pin_mut()
            && sleep.poll(cx).is_ready()
        {
            let (counter, service, after, span) = this
                .fired
                .take()
                .unwrap_or_else(|| (Counter::default(), Arc::from(""), Duration::ZERO, None));
            counter.inc();
            if let Some(span) = span {
                span.event(SpanEvent::Timeout("request"));
            }
            return Poll::Ready(Err(super::elapsed(&service, "request", after).into()));
        }
        Poll::Pending
    }
}
