//! The request timeout: one deadline for the whole call, all attempts
//! included (DESIGN.md §2, layer 3).
//!
//! The deadline is `timeouts.request` from the route's policy, shortened by
//! the caller's own `grpc-timeout` when that is sooner. It is stored in the
//! request's [`CallContext`] (`deadline`) so the retry layer inside never starts
//! an attempt after it and tells each attempt how much time is left. When it
//! fires before a response head arrives, the call ends with a `timeout`
//! [`ProxyError`](crate::errors::ProxyError) (504 / DEADLINE_EXCEEDED). The
//! deadline bounds the wait for the response head; a response that has
//! started streaming is not cut (the upstream got the remaining time as its
//! own `grpc-timeout`).
//!
//! While the retry layer's per-try timer, sooner than the deadline, is
//! armed ([`SoonerTimer`](crate::resilience::call::SoonerTimer)), the
//! deadline's timer stays out of the timer wheel: the per-try timer wakes
//! the call first, and the deadline's is registered at the first poll
//! after it is disarmed.
//!
//! The inbound side uses the same layer for `spec.inbound.timeouts.request`,
//! without the caller's `grpc-timeout`
//! ([`RequestTimeoutLayer::without_caller_deadline`]): the local app reads
//! that header itself, and the proxy answers 504 only for its own policy.
//!
//! Calls no policy bounds get the proxy's [`TimeoutDefaults`].

pub mod defaults;
mod error;
mod future;
pub mod grpc;
pub mod idle;
mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;
use tower::Service;

use crate::resilience::call::CallContext;
use crate::trace::CallSpan;

pub use defaults::TimeoutDefaults;
pub use error::elapsed;
pub use future::ResponseFuture;
pub use layer::RequestTimeoutLayer;

/// Enforces the request deadline around `S`.
#[derive(Clone, Debug)]
pub struct RequestTimeout<S> {
    inner: S,
    timeout: Option<Duration>,
    service: Arc<str>,
    /// `levee_timeouts_total{kind="request"}` of the route.
    fired: Counter,
    /// Whether a sooner `grpc-timeout` from the caller shortens the deadline.
    caller_deadline: bool,
}

impl<S> RequestTimeout<S> {
    pub fn new(inner: S, timeout: Option<Duration>, service: Arc<str>, fired: Counter) -> Self {
        RequestTimeout {
            inner,
            timeout,
            service,
            fired,
            caller_deadline: true,
        }
    }
}

impl<S, B> Service<Request<B>> for RequestTimeout<S>
where
    S: Service<Request<B>>,
    S::Error: Into<crate::body::BoxError>,
{
    type Response = S::Response;
    type Error = crate::body::BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let caller = if self.caller_deadline {
            req.headers().get(grpc::GRPC_TIMEOUT).and_then(grpc::parse)
        } else {
            None
        };
        let budget = match (self.timeout, caller) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timer = budget.map(|budget| {
            let mut at = crate::deadline::deadline_after(Instant::now(), budget);
            // An outer deadline (if any) stays in force when it is sooner.
            let call = CallContext::of(&mut req);
            if let Some(outer) = call.deadline {
                at = at.min(outer);
            }
            call.deadline = Some(at);
            let attempts = call.attempts.clone();
            let sleep = tokio::time::sleep_until(at);
            let span = req.extensions().get::<CallSpan>().cloned();
            (
                sleep,
                attempts,
                self.fired.clone(),
                self.service.clone(),
                budget,
                span,
            )
        });
        ResponseFuture::new(self.inner.call(req), timer)
    }
}

#[cfg(test)]
mod tests;
