//! [`ResponseFuture`]: one attempt on the chosen endpoint, reporting its
//! latency to the load estimate and its outcome to endpoint health and to
//! the call's record (where the retry layer and the service breaker read
//! it, see [`CallAttempts::outcome`]) — also
//! when dropped early: at or after the attempt's deadline that is a timeout
//! (the endpoint was too slow), before it the caller went away (not the
//! endpoint's fault).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::{EndpointGate, EndpointStats, Pass};
use crate::body::BoxError;
use crate::errors::{ErrorKind, ProxyError};
use crate::resilience::call::{AttemptDeadline, CallAttempts};
use crate::resilience::classify::{Outcome, classify_error, classify_response};

/// What an attempt in flight reports when it ends.
pub(super) struct Report {
    pub endpoint: Arc<EndpointStats>,
    /// The endpoint's position in the balancer's set (the gate's index).
    pub at: usize,
    pub gate: Arc<dyn EndpointGate>,
    /// What the gate granted: a probe's slot is given back or decided here.
    pub pass: Pass,
    pub deadline: Option<AttemptDeadline>,
    pub start: Instant,
    /// The call's record: the outcome is noted there for the layers
    /// outside (classified once per attempt).
    pub attempts: CallAttempts,
}

impl Report {
    fn finish(self, outcome: Outcome) {
        // One clock read for the latency, the load estimate and health.
        let now = Instant::now();
        let latency = now.saturating_duration_since(self.start);
        self.endpoint.load.finish(latency, now);
        self.gate
            .record(self.endpoint.at(self.at), self.pass, &outcome, latency, now);
    }
}

pin_project! {
    /// The inner call, or the balancer's own error (no endpoints).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        failed: Option<ProxyError>,
        report: Option<Report>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(report) = this.project().report.take() {
                let outcome = if report.deadline.is_some_and(|d| d.has_passed()) {
                    Outcome::Error(ErrorKind::Timeout)
                } else {
                    Outcome::Cancelled
                };
                report.finish(outcome);
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, report: Report) -> Self {
        ResponseFuture {
            inner: Some(inner),
            failed: None,
            report: Some(report),
        }
    }

    pub(super) fn failed(err: ProxyError) -> Self {
        ResponseFuture {
            inner: None,
            failed: Some(err),
            report: None,
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let err = this.failed.take().unwrap_or_else(|| {
                ProxyError::new(ErrorKind::NoEndpoints, "", "polled after completion")
            });
            return Poll::Ready(Err(err.into()));
        };
        let result = match inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result.map_err(Into::into),
        };
        if let Some(report) = this.report.take() {
            let outcome = match &result {
                Ok(response) => classify_response(response),
                Err(error) => classify_error(error.as_ref()),
            };
            report.attempts.set_outcome(outcome);
            report.finish(outcome);
        }
        Poll::Ready(result)
    }
}
