//! One call through the retry layer: the attempt loop.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::replay::ReplayBody;
use super::{MAX_RETRY_AFTER, Reason, RetryConfig, policy};
use crate::body::{BoxBody, BoxError};
use crate::deadline::deadline_after;
use crate::errors::{self, ProxyError};
use crate::resilience::call::{AttemptDeadline, CallAttempts, CallContext};
use crate::resilience::timeout::{elapsed, grpc};
use crate::trace::{CallSpan, SpanEvent};

type Attempt = Result<Response<BoxBody>, BoxError>;
type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Attempt> + Send>>;

/// What every attempt of one call needs to know about it.
struct Call {
    deadline: Option<Instant>,
    /// The call's attempts record (always there once a retry may follow).
    attempts: Option<CallAttempts>,
    grpc: bool,
    idempotent: bool,
    /// The logical span, for events (`None`: not traced).
    span: Option<CallSpan>,
}

pub(super) async fn call<S>(inner: S, config: Arc<RetryConfig>, req: Request<BoxBody>) -> Attempt
where
    S: Service<Request<BoxBody>, Response = Response<BoxBody>, Error = BoxError> + Clone + Send,
    S::Future: Send + 'static,
{
    config.budget.deposit();
    let (mut parts, body) = req.into_parts();
    let context = parts.extensions.get::<CallContext>();
    let mut call = Call {
        deadline: context.and_then(|c| c.deadline),
        attempts: context.and_then(|c| c.attempts.clone()),
        grpc: errors::is_grpc(&parts.headers),
        idempotent: config.conditions.idempotent(&parts.method, &parts.headers),
        span: parts.extensions.get::<CallSpan>().cloned(),
    };
    let replay = if config.max_retries == 0 {
        Err(body)
    } else {
        ReplayBody::try_new(body, config.max_replay_bytes)
    };
    let replay = match replay {
        Ok(replay) => replay,
        // Nothing to retry with: one plain attempt, on the caller's request.
        Err(body) => return attempt(inner, &config, &call, Request::from_parts(parts, body)).await,
    };
    // A retry may follow: the balancer must see where the last attempt went.
    if call.attempts.is_none() {
        let context = parts.extensions.get_or_insert_default::<CallContext>();
        call.attempts = Some(context.attempts().clone());
    }
    // The first attempt takes the caller's head; this copy is what retries
    // are made from (one copy per call, plus one per retry sent).
    let head = Request::from_parts(parts, ());
    let template = copy_head(&head);
    let mut next = head;

    let mut retries = 0;
    loop {
        let body = BoxBody::new(replay.replay());
        let result = attempt(inner.clone(), &config, &call, next.map(|()| body)).await;
        let Some((reason, wait)) = should_retry(&config, &call, &result, retries) else {
            return result;
        };
        if !replay.is_replayable() {
            return result;
        }
        if let Some(deadline) = call.deadline
            && deadline_after(Instant::now(), wait) >= deadline
        {
            return result;
        }
        if !config.budget.withdraw() {
            config.metrics.exhausted.inc();
            if let Some(span) = &call.span {
                span.event(SpanEvent::RetryBudgetExhausted);
            }
            tracing::debug!(service = %config.service, reason = %reason.label(), "retry budget exhausted");
            return result;
        }
        // Release the failed attempt (and its connection) before waiting.
        drop(result);
        retries += 1;
        config.metrics.retried(&config.service, reason);
        tracing::debug!(service = %config.service, reason = %reason.label(), retry = retries, ?wait, "retrying");
        next = copy_head(&template);
        tokio::time::sleep(wait).await;
    }
}

/// A copy of a request head (method, URI, version, headers, extensions).
fn copy_head(head: &Request<()>) -> Request<()> {
    let mut copy = Request::new(());
    *copy.method_mut() = head.method().clone();
    *copy.uri_mut() = head.uri().clone();
    *copy.version_mut() = head.version();
    *copy.headers_mut() = head.headers().clone();
    *copy.extensions_mut() = head.extensions().clone();
    copy
}

/// Whether to retry `result`, and the wait before the retry.
fn should_retry(
    config: &RetryConfig,
    call: &Call,
    result: &Attempt,
    retries: u32,
) -> Option<(Reason, Duration)> {
    if retries >= config.max_retries {
        return None;
    }
    let conditions = &config.conditions;
    let (reason, retry_after) = match result {
        Ok(response) => {
            // Classified once, by the balancer, when the record has it.
            let reason = match call.attempts.as_ref().and_then(CallAttempts::outcome) {
                Some(outcome) => conditions.for_outcome(
                    outcome,
                    response.status().as_u16(),
                    call.idempotent,
                    call.grpc,
                ),
                None => conditions.for_response(response, call.idempotent, call.grpc),
            }?;
            let after = config
                .honor_retry_after
                .then(|| policy::retry_after(response))
                .flatten();
            (reason, after)
        }
        Err(error) => {
            let error = error.downcast_ref::<ProxyError>()?;
            (conditions.for_error(error, call.idempotent)?, None)
        }
    };
    let mut wait = config.backoff.wait(retries + 1);
    if let Some(after) = retry_after {
        if call.deadline.is_none() && after > MAX_RETRY_AFTER {
            return None;
        }
        wait = wait.max(after);
    }
    Some((reason, wait))
}

/// Sends one attempt, `req`, bounded by the per-try timeout.
async fn attempt<S>(
    inner: S,
    config: &RetryConfig,
    call: &Call,
    mut req: Request<BoxBody>,
) -> Attempt
where
    S: Service<Request<BoxBody>, Response = Response<BoxBody>, Error = BoxError> + Send,
    S::Future: Send + 'static,
{
    // The clock is read only when there is a deadline to compute.
    let now = (config.per_try.is_some() || call.deadline.is_some()).then(Instant::now);
    let per_try = config
        .per_try
        .zip(now)
        .map(|(t, now)| deadline_after(now, t));
    // Only a per-try timeout sooner than the request deadline is ours to
    // enforce; the request deadline belongs to the timeout layer outside.
    let own_timeout = match (per_try, call.deadline) {
        (Some(p), Some(d)) => (p < d).then_some(p),
        (p, _) => p,
    };
    let attempt_deadline = match (per_try, call.deadline) {
        (Some(p), Some(d)) => Some(p.min(d)),
        (p, d) => p.or(d),
    };
    if let Some(at) = attempt_deadline {
        CallContext::of(&mut req).attempt_deadline = Some(AttemptDeadline(at));
        if call.grpc
            && let Some(now) = now
        {
            let remaining = at.saturating_duration_since(now);
            req.headers_mut()
                .insert(grpc::GRPC_TIMEOUT, grpc::encode(remaining));
        }
    }

    let mut svc = inner.ready_oneshot().await?;
    // Boxed: keeps this future `Send` for any caller (rustc cannot prove it
    // through the generic future otherwise).
    let future: BoxFuture = Box::pin(svc.call(req));
    let Some(at) = own_timeout else {
        return future.await;
    };
    // Sooner than the request deadline: while this timer is armed, the
    // request timeout layer outside keeps its own out of the timer wheel.
    let _armed = call
        .attempts
        .as_ref()
        .filter(|_| call.deadline.is_some())
        .map(CallAttempts::arm_sooner_timer);
    match tokio::time::timeout_at(at, future).await {
        Ok(result) => result,
        Err(_) => {
            config.metrics.per_try_timeouts.inc();
            if let Some(span) = &call.span {
                span.event(SpanEvent::Timeout("per-try"));
            }
            let after = config.per_try.unwrap_or_default();
            Err(elapsed(&config.service, "per-try", after).into())
        }
    }
}
