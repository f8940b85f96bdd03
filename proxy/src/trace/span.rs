//! The spans of one request and how the data path reaches them.
//!
//! - [`OutboundSpan`]: the logical outbound call (CLIENT), started at the
//!   outbound edge, which puts a [`CallSpan`] in the request's extensions.
//! - [`AttemptSpan`]: one per attempt, started by the innermost forwarding
//!   step from the [`CallSpan`] the retry layer copied into each attempt; it
//!   writes its own `traceparent`, so the upstream's parent is the attempt.
//!   Attempts are numbered by the call's [`CallAttempts`] record (the
//!   balancer writes it), which also gives the call's `levee.attempts`.
//! - [`ServerSpan`]: the inbound side's SERVER span, child of the caller's.
//! - [`event`]: what the resilience layers call to note a decision
//!   (`circuit-open`, `retry-budget-exhausted`, `rate-limited`, `timeout`)
//!   on the logical span.
//!
//! Unsampled requests get no [`CallSpan`]: every function here is then a
//! type-map miss, and the app's `traceparent` passes through untouched.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Extensions, Request, Response};
use opentelemetry::trace::{SpanContext, SpanKind, SpanRef, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;

use super::attributes::{
    end_cancelled, end_with_error, end_with_response, method_name, request_attributes, version,
};
use super::propagation;
use crate::errors::{ErrorKind, ProxyError};
use crate::resilience::call::{AttemptDeadline, CallAttempts};

/// Request extension: the logical outbound call's span. Cheap to clone (the
/// retry layer copies it into every attempt).
#[derive(Clone)]
pub struct CallSpan(Arc<Call>);

struct Call {
    cx: Context,
    tracer: SdkTracer,
    /// The call's attempts (the same record the request carries).
    attempts: CallAttempts,
}

impl std::fmt::Debug for CallSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSpan")
            .field("span", self.0.cx.span().span_context())
            .finish_non_exhaustive()
    }
}

/// Something a resilience layer decided, recorded as a span event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanEvent {
    /// The service breaker refused the call.
    CircuitOpen,
    /// A retry was wanted but the retry budget had none left.
    RetryBudgetExhausted,
    /// The outbound rate limit refused the call.
    RateLimited,
    /// A timeout fired; the kind as in `levee_timeouts_total` (`request`, `per-try`, ...).
    Timeout(&'static str),
}

impl SpanEvent {
    /// The event's name.
    pub fn name(self) -> &'static str {
        match self {
            SpanEvent::CircuitOpen => "circuit-open",
            SpanEvent::RetryBudgetExhausted => "retry-budget-exhausted",
            SpanEvent::RateLimited => "rate-limited",
            SpanEvent::Timeout(_) => "timeout",
        }
    }
}

/// Adds `event` to the logical span of the request whose extensions these
/// are (no-op when the request is not traced). Carries `levee.attempt`: the
/// number of attempts started so far.
pub fn event(extensions: &Extensions, event: SpanEvent) {
    if let Some(call) = extensions.get::<CallSpan>() {
        call.event(event);
    }
}

impl CallSpan {
    /// Adds `event` to the call's span (for a layer that kept the
    /// [`CallSpan`] rather than the request; see [`event`]).
    pub fn event(&self, event: SpanEvent) {
        add_event(&self.0.cx.span(), event, self.0.attempts.count());
    }
}

fn add_event(span: &SpanRef<'_>, event: SpanEvent, attempt: u32) {
    let mut attributes = vec![KeyValue::new("levee.attempt", i64::from(attempt))];
    if let SpanEvent::Timeout(kind) = event {
        attributes.push(KeyValue::new("levee.timeout.kind", kind));
    }
    span.add_event(event.name(), attributes);
}

/// A span started where a request enters the proxy (the outbound call or
/// the inbound SERVER span), as a child of the request's own trace headers.
struct EdgeSpan {
    cx: Context,
    span_context: SpanContext,
    /// Whether the request carried a parent (W3C or B3).
    had_parent: bool,
}

impl EdgeSpan {
    fn start<B>(tracer: &SdkTracer, req: &Request<B>, kind: SpanKind) -> EdgeSpan {
        let parent = propagation::extract(req.headers());
        let span = tracer
            .span_builder(method_name(req.method()))
            .with_kind(kind)
            .start_with_context(tracer, &parent_context(parent.as_ref()));
        let cx = Context::new().with_span(span);
        let span_context = cx.span().span_context().clone();
        EdgeSpan {
            cx,
            span_context,
            had_parent: parent.is_some(),
        }
    }
}

/// The request's semantic-convention attributes plus Levee's own.
fn set_edge_attributes<B>(cx: &Context, req: &Request<B>, service: &str, policy_version: u64) {
    let mut attributes = request_attributes(req);
    attributes.push(KeyValue::new("levee.service", service.to_owned()));
    attributes.push(KeyValue::new(
        "levee.policy_version",
        version(policy_version),
    ));
    // Inbound over mTLS: who called, as its verified certificate says.
    if let Some(crate::tls::ClientIdentity(id)) = req.extensions().get() {
        attributes.push(KeyValue::new("levee.client.identity", id.to_string()));
    }
    cx.span().set_attributes(attributes);
}

/// The logical outbound call's span, held by the outbound edge until the
/// response head (or an error) is back. Inert when not sampled.
#[must_use = "finish the span with `finish`"]
#[derive(Default)]
pub struct OutboundSpan(Option<CallSpan>);

impl OutboundSpan {
    pub(super) fn start<B>(
        tracer: &SdkTracer,
        req: &mut Request<B>,
        service: &str,
        policy_version: u64,
    ) -> OutboundSpan {
        let edge = EdgeSpan::start(tracer, req, SpanKind::Client);
        let (cx, span_context) = (edge.cx, edge.span_context);
        if !span_context.is_sampled() {
            // A new trace the sampler turned down: say so downstream. An
            // app's own header (W3C or B3) stays as it is.
            if !edge.had_parent {
                propagation::inject(req.headers_mut(), &span_context);
            }
            return OutboundSpan(None);
        }
        set_edge_attributes(&cx, req, service, policy_version);
        // Tunnels skip the attempt layer: the call's own context goes out,
        // and each attempt overwrites it with its own.
        propagation::inject(req.headers_mut(), &span_context);
        let call = CallSpan(Arc::new(Call {
            cx,
            tracer: tracer.clone(),
            attempts: CallAttempts::of(req),
        }));
        req.extensions_mut().insert(call.clone());
        OutboundSpan(Some(call))
    }

    /// The trace id (32 hex digits) when the call is sampled.
    pub fn trace_id(&self) -> Option<String> {
        let call = self.0.as_ref()?;
        Some(format!(
            "{:032x}",
            call.0.cx.span().span_context().trace_id()
        ))
    }

    /// Ends the span with `result`.
    pub fn finish<B>(self, result: &Result<Response<B>, ProxyError>) {
        match result {
            Ok(response) => self.response(response),
            Err(err) => self.error(err),
        }
    }

    /// Ends the span with the upstream's response.
    pub fn response<B>(mut self, response: &Response<B>) {
        if let Some(call) = self.0.take() {
            let span = call.0.cx.span();
            span.set_attribute(attempts(&call));
            end_with_response(&span, response, SpanKind::Client);
        }
    }

    /// Ends the span with a proxy-made error.
    pub fn error(mut self, err: &ProxyError) {
        if let Some(call) = self.0.take() {
            // The rate limit is the outermost layer (never inside a retry):
            // its refusal is always the call's result, noted here.
            if err.kind == ErrorKind::RateLimited {
                call.event(SpanEvent::RateLimited);
            }
            let span = call.0.cx.span();
            span.set_attribute(attempts(&call));
            end_with_error(&span, err);
        }
    }
}

/// Dropped unfinished, the caller went away before the response head.
impl Drop for OutboundSpan {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            let span = call.0.cx.span();
            span.set_attribute(attempts(&call));
            end_cancelled(&span, "cancelled");
        }
    }
}

fn attempts(call: &CallSpan) -> KeyValue {
    KeyValue::new("levee.attempts", i64::from(call.0.attempts.count()))
}

/// One attempt of a traced call, from sending to the response head. Dropped
/// unfinished (a per-try timeout or a caller gone), it ends as `timeout` or
/// `cancelled`.
#[must_use = "finish the span with `finish`"]
pub struct AttemptSpan {
    cx: Context,
    deadline: Option<AttemptDeadline>,
    finished: bool,
}

impl AttemptSpan {
    /// Starts the span of the attempt `req` is, to `endpoint`, and writes
    /// its context as the request's `traceparent`. The attempt's number is
    /// the count in the call's [`CallAttempts`], where the balancer recorded
    /// it. `None` (at the cost of a type-map lookup) when the call is not
    /// traced.
    pub fn start<B>(req: &mut Request<B>, endpoint: SocketAddr) -> Option<AttemptSpan> {
        let call = req.extensions().get::<CallSpan>()?.clone();
        let number = call.0.attempts.count().max(1);
        let attributes = vec![
            KeyValue::new("levee.attempt", i64::from(number)),
            KeyValue::new("levee.endpoint", endpoint.to_string()),
            KeyValue::new("http.request.resend_count", i64::from(number - 1)),
            KeyValue::new("network.peer.address", endpoint.ip().to_string()),
            KeyValue::new("network.peer.port", i64::from(endpoint.port())),
        ];
        let span = call
            .0
            .tracer
            .span_builder("attempt")
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .start_with_context(&call.0.tracer, &call.0.cx);
        let cx = call.0.cx.with_span(span);
        propagation::inject(req.headers_mut(), cx.span().span_context());
        Some(AttemptSpan {
            cx,
            deadline: AttemptDeadline::of(req),
            finished: false,
        })
    }

    /// Ends the span with `result`.
    pub fn finish<B>(self, result: &Result<Response<B>, ProxyError>) {
        match result {
            Ok(response) => self.response(response),
            Err(err) => self.error(err),
        }
    }

    /// Ends the span with the endpoint's response.
    pub fn response<B>(mut self, response: &Response<B>) {
        self.finished = true;
        end_with_response(&self.cx.span(), response, SpanKind::Client);
    }

    /// Ends the span with the attempt's error.
    pub fn error(mut self, err: &ProxyError) {
        self.finished = true;
        end_with_error(&self.cx.span(), err);
    }
}

impl Drop for AttemptSpan {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let cause = match self.deadline {
            Some(deadline) if deadline.has_passed() => "timeout",
            _ => "cancelled",
        };
        end_cancelled(&self.cx.span(), cause);
    }
}

/// The inbound side's SERVER span. Inert when not sampled.
#[must_use = "finish the span with `finish`"]
#[derive(Default)]
pub struct ServerSpan(Option<Context>);

impl ServerSpan {
    pub(super) fn start<B>(
        tracer: &SdkTracer,
        req: &mut Request<B>,
        service: &str,
        policy_version: u64,
    ) -> ServerSpan {
        let edge = EdgeSpan::start(tracer, req, SpanKind::Server);
        let (cx, span_context) = (edge.cx, edge.span_context);
        if !span_context.is_sampled() {
            return ServerSpan(None);
        }
        set_edge_attributes(&cx, req, service, policy_version);
        // The app's own spans become children of this one.
        propagation::inject(req.headers_mut(), &span_context);
        ServerSpan(Some(cx))
    }

    /// Ends the span with `result`.
    pub fn finish<B>(self, result: &Result<Response<B>, ProxyError>) {
        match result {
            Ok(response) => self.response(response),
            Err(err) => self.error(err),
        }
    }

    /// Ends the span with the app's response.
    pub fn response<B>(mut self, response: &Response<B>) {
        if let Some(cx) = self.0.take() {
            end_with_response(&cx.span(), response, SpanKind::Server);
        }
    }

    /// Ends the span with a proxy-made error; the inbound limits' refusals
    /// (`spec.inbound`) are also events.
    pub fn error(mut self, err: &ProxyError) {
        if let Some(cx) = self.0.take() {
            let span = cx.span();
            match err.kind {
                ErrorKind::RateLimited => add_event(&span, SpanEvent::RateLimited, 0),
                ErrorKind::Timeout => add_event(&span, SpanEvent::Timeout("request"), 0),
                _ => {}
            }
            end_with_error(&span, err);
        }
    }
}

/// Dropped unfinished, the caller went away before the response head.
impl Drop for ServerSpan {
    fn drop(&mut self) {
        if let Some(cx) = self.0.take() {
            end_cancelled(&cx.span(), "cancelled");
        }
    }
}

fn parent_context(parent: Option<&SpanContext>) -> Context {
    match parent {
        Some(parent) => Context::new().with_remote_span_context(parent.clone()),
        None => Context::new(),
    }
}
