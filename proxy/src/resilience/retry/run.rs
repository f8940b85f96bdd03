//! One call through the retry layer: the attempt loop.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::replay::ReplayBody;
use super::{MAX_RETRY_AFTER, Reason, RetryConfig, policy};
use crate::body::{BoxBody, BoxError};
use crate::errors::{self, ProxyError};
use crate::resilience::attempt::{AttemptDeadline, AttemptTrace};
use crate::resilience::timeout::{Deadline, elapsed, grpc};
use crate::trace::{self, SpanEvent};

type Attempt = Result<Response<BoxBody>, BoxError>;
type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Attempt> + Send>>;

/// The parts of the request every attempt copies.
struct Template {
    head: Request<()>,
    deadline: Option<Instant>,
    grpc: bool,
    idempotent: bool,
}

pub(super) async fn call<S>(inner: S, config: Arc<RetryConfig>, req: Request<BoxBody>) -> Attempt
where
    S: Service<Request<BoxBody>, Response = Response<BoxBody>, Error = BoxError> + Clone + Send,
    S::Future: Send + 'static,
{
    config.budget.deposit();
    let (parts, body) = req.into_parts();
    let template = Template {
        deadline: parts.extensions.get::<Deadline>().map(|d| d.0),
        grpc: errors::is_grpc(&parts.headers),
        idempotent: config.conditions.idempotent(&parts.method, &parts.headers),
        head: Request::from_parts(parts, ()),
    };
    let trace = AttemptTrace::default();
    let replay = if config.max_retries == 0 {
        Err(body)
    } else {
        ReplayBody::try_new(body, config.max_replay_bytes)
    };
    let replay = match replay {
        Ok(replay) => replay,
        // Nothing to retry with: one plain attempt.
        Err(body) => return attempt(inner, &config, &template, &trace, body).await,
    };

    let mut retries = 0;
    loop {
        let body = BoxBody::new(replay.replay());
        let result = attempt(inner.clone(), &config, &template, &trace, body).await;
        let Some((reason, wait)) = should_retry(&config, &template, &result, retries) else {
            return result;
        };
        if !replay.is_replayable() {
            return result;
        }
        if let Some(deadline) = template.deadline
            && Instant::now() + wait >= deadline
        {
            return result;
        }
        if !config.budget.withdraw() {
            config.metrics.exhausted.inc();
            trace::event(template.head.extensions(), SpanEvent::RetryBudgetExhausted);
            tracing::debug!(service = %config.service, reason = %reason.label(), "retry budget exhausted");
            return result;
        }
        // Release the failed attempt (and its connection) before waiting.
        drop(result);
        retries += 1;
        config.metrics.retried(&config.service, reason);
        tracing::debug!(service = %config.service, reason = %reason.label(), retry = retries, ?wait, "retrying");
        tokio::time::sleep(wait).await;
    }
}

/// Whether to retry `result`, and the wait before the retry.
fn should_retry(
    config: &RetryConfig,
    template: &Template,
    result: &Attempt,
    retries: u32,
) -> Option<(Reason, Duration)> {
    if retries >= config.max_retries {
        return None;
    }
    let conditions = &config.conditions;
    let (reason, retry_after) = match result {
        Ok(response) => {
            let reason = conditions.for_response(response, template.idempotent, template.grpc)?;
            let after = config
                .honor_retry_after
                .then(|| policy::retry_after(response))
                .flatten();
            (reason, after)
        }
        Err(error) => {
            let error = error.downcast_ref::<ProxyError>()?;
            (conditions.for_error(error, template.idempotent)?, None)
        }
    };
    let mut wait = config.backoff.wait(retries + 1);
    if let Some(after) = retry_after {
        if template.deadline.is_none() && after > MAX_RETRY_AFTER {
            return None;
        }
        wait = wait.max(after);
    }
    Some((reason, wait))
}

/// Sends one attempt: a copy of the request with `body`, bounded by the
/// per-try timeout.
async fn attempt<S>(
    inner: S,
    config: &RetryConfig,
    template: &Template,
    trace: &AttemptTrace,
    body: BoxBody,
) -> Attempt
where
    S: Service<Request<BoxBody>, Response = Response<BoxBody>, Error = BoxError> + Send,
    S::Future: Send + 'static,
{
    let mut req = Request::new(body);
    *req.method_mut() = template.head.method().clone();
    *req.uri_mut() = template.head.uri().clone();
    *req.version_mut() = template.head.version();
    *req.headers_mut() = template.head.headers().clone();
    *req.extensions_mut() = template.head.extensions().clone();
    req.extensions_mut().insert(trace.clone());

    let now = Instant::now();
    let per_try = config.per_try.map(|t| now + t);
    // Only a per-try timeout sooner than the request deadline is ours to
    // enforce; the request deadline belongs to the timeout layer outside.
    let own_timeout = match (per_try, template.deadline) {
        (Some(p), Some(d)) => (p < d).then_some(p),
        (p, _) => p,
    };
    let attempt_deadline = match (per_try, template.deadline) {
        (Some(p), Some(d)) => Some(p.min(d)),
        (p, d) => p.or(d),
    };
    if let Some(at) = attempt_deadline {
        req.extensions_mut().insert(AttemptDeadline(at));
        if template.grpc {
            let remaining = at.saturating_duration_since(now);
            req.headers_mut()
                .insert(grpc::GRPC_TIMEOUT, grpc::encode(remaining));
        }
    }

    let mut svc = inner.ready_oneshot().await?;
    // Boxed: keeps this future `Send` for any caller (rustc cannot prove it
    // through the generic future otherwise).
    let future: BoxFuture = Box::pin(svc.call(req));
    match own_timeout {
        None => future.await,
        Some(at) => match tokio::time::timeout_at(at, future).await {
            Ok(result) => result,
            Err(_) => {
                config.metrics.per_try_timeouts.inc();
                trace::event(template.head.extensions(), SpanEvent::Timeout("per-try"));
                let after = config.per_try.unwrap_or_default();
                Err(elapsed(&config.service, "per-try", after).into())
            }
        },
    }
}
