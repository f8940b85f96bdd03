//! Retries (DESIGN.md §2, layer 4): within the request deadline, within the
//! route's retry budget, with full-jitter backoff, for the conditions of
//! [`policy`], replaying the request body ([`replay`]).
//!
//! One call runs as a loop of attempts. The first attempt takes the caller's
//! request itself; only when a retry is possible (`maxRetries` > 0 and a
//! replayable body) is a copy of its head (headers, extensions) kept, and
//! each retry gets a copy of that and a replay of the body. Every attempt
//! gets an [`AttemptDeadline`](super::call::AttemptDeadline) in its
//! [`CallContext`](super::call::CallContext) (the per-try timeout, never
//! past the call's request deadline), and for gRPC the remaining time as
//! `grpc-timeout`. After a
//! failed attempt the loop retries only when all hold: the condition is
//! listed, the request may be repeated (idempotency, replayable body),
//! `maxRetries` is not used up, the wait (backoff, or `Retry-After` when
//! larger and honoured) ends before the deadline, and the budget has a
//! retry left. Otherwise the last real response (or error) is returned; an
//! empty budget is counted in `levee_retry_budget_exhausted_total`.

pub mod backoff;
pub mod budget;
mod layer;
pub mod policy;
pub mod replay;
mod run;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use prometheus_client::metrics::counter::Counter;
use tower::Service;

use crate::body::{BoxBody, BoxError};
use crate::metrics::Metrics;
pub use backoff::Backoff;
pub use budget::{BudgetSettings, RetryBudget};
pub use layer::RetryLayer;
pub use policy::{Conditions, Reason};

/// `Retry-After` longer than this is not waited for when the request has no
/// deadline (with one, the remaining time is the cap).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Everything the retry layer needs for one route.
#[derive(Debug)]
pub struct RetryConfig {
    /// The service label (errors, metrics).
    pub service: Arc<str>,
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub conditions: Conditions,
    pub backoff: Backoff,
    /// Per-attempt timeout.
    pub per_try: Option<Duration>,
    /// Largest body kept for replay.
    pub max_replay_bytes: u64,
    pub honor_retry_after: bool,
    /// Shared by the route's requests; survives policy updates that keep its settings.
    pub budget: Arc<RetryBudget>,
    pub metrics: RetryMetrics,
}

/// The route's retry counters, resolved once.
#[derive(Debug)]
pub struct RetryMetrics {
    metrics: Metrics,
    route: Arc<str>,
    /// `levee_retries_total` by reason label, for the reasons a route is likely to see.
    by_reason: Vec<(String, Counter)>,
    /// `levee_retry_budget_exhausted_total`.
    pub exhausted: Counter,
    /// `levee_timeouts_total{kind="per-try"}`.
    pub per_try_timeouts: Counter,
}

impl RetryMetrics {
    pub fn new(metrics: &Metrics, service: &str, route: &str, conditions: &Conditions) -> Self {
        let mut reasons: Vec<String> = ["connect-failure", "refused-stream", "reset", "timeout"]
            .map(String::from)
            .into();
        reasons.extend((500..=504).map(|s: u16| s.to_string()));
        for c in &conditions.on {
            if let levee_proto::policy::FailureCondition::Status(s) = c {
                reasons.push(s.to_string());
            }
        }
        reasons.extend(conditions.grpc_on.iter().map(|c| Reason::Grpc(*c).label()));
        reasons.sort_unstable();
        reasons.dedup();
        let by_reason = reasons
            .into_iter()
            .map(|r| {
                let counter = metrics.retries(service, route, &r);
                (r, counter)
            })
            .collect();
        RetryMetrics {
            metrics: metrics.clone(),
            route: route.into(),
            by_reason,
            exhausted: metrics.retry_budget_exhausted(service, route),
            per_try_timeouts: metrics.timeouts(service, route, "per-try"),
        }
    }

    /// Counts one retry sent for `reason`.
    pub fn retried(&self, service: &str, reason: Reason) {
        let label = reason.label();
        match self.by_reason.iter().find(|(r, _)| *r == label) {
            Some((_, counter)) => drop(counter.inc()),
            None => drop(self.metrics.retries(service, &self.route, &label).inc()),
        }
    }
}

/// Retries calls to `S` per [`RetryConfig`].
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    config: Arc<RetryConfig>,
}

impl<S> Retry<S> {
    pub fn new(inner: S, config: Arc<RetryConfig>) -> Self {
        Retry { inner, config }
    }
}

impl<S> Service<Request<BoxBody>> for Retry<S>
where
    S: Service<Request<BoxBody>, Response = Response<BoxBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, BoxError>> + Send>>;

    /// Always ready: each attempt waits for the inner service's readiness itself.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<BoxBody>) -> Self::Future {
        Box::pin(run::call(self.inner.clone(), self.config.clone(), req))
    }
}

#[cfg(test)]
mod tests;
