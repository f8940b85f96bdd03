//! What may be retried: the route's `retry.on` / `retry.grpcOn` conditions
//! applied to one attempt's result, the idempotency rule, and `Retry-After`.
//!
//! - Connect failures and refused streams never reached the application, so
//!   they are retried whatever the method ([`Retry::Safe`], read from the
//!   error's typed cause).
//! - Resets, per-try timeouts and error responses are retried only for
//!   idempotent requests: GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or any
//!   request with an `Idempotency-Key` header, or all when
//!   `retryNonIdempotent` is set.
//! - gRPC: the [`GrpcStatus`] of a trailers-only response listed in
//!   `grpcOn` is retried; the operator opted the code in, as in
//!   gRPC's own retry policy. A status in the trailers of a streamed response
//!   is not: the response is already on its way to the caller.
//! - Which error matches which condition is [`classify::error_matches`], the
//!   table the breakers use too: `5xx` and `gateway-error` also cover connect
//!   failures, resets and per-try timeouts (the proxy answers those with
//!   502/504), as in Envoy, and a refused stream is also a `reset`.

use std::time::Duration;

use http::{HeaderMap, Method, Response};
use levee_proto::policy::{FailureCondition, GrpcStatus};

use crate::errors::{ErrorKind, ProxyError, ResetCause, Retry};
use crate::resilience::classify;

/// Why an attempt is retried: also the `reason` label of `levee_retries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    ConnectFailure,
    RefusedStream,
    Reset,
    Timeout,
    Status(u16),
    Grpc(GrpcStatus),
}

impl Reason {
    /// The label value: `connect-failure`, `refused-stream`, `reset`,
    /// `timeout`, the HTTP status (`503`) or `grpc-<code name>`.
    pub fn label(self) -> String {
        match self {
            Reason::ConnectFailure => "connect-failure".into(),
            Reason::RefusedStream => "refused-stream".into(),
            Reason::Reset => "reset".into(),
            Reason::Timeout => "timeout".into(),
            Reason::Status(code) => code.to_string(),
            Reason::Grpc(code) => format!("grpc-{}", code.name()),
        }
    }
}

/// The retry conditions of one route.
#[derive(Clone, Debug, PartialEq)]
pub struct Conditions {
    pub on: Vec<FailureCondition>,
    pub grpc_on: Vec<GrpcStatus>,
    pub retry_non_idempotent: bool,
}

impl Conditions {
    /// The reason to retry an attempt that failed with `err`, if any: a
    /// listed condition matches it ([`classify::error_matches`]) and its
    /// [`Retry`] allows this request.
    pub fn for_error(&self, err: &ProxyError, idempotent: bool) -> Option<Reason> {
        let reason = match err.kind {
            ErrorKind::UpstreamConnect(_) => Reason::ConnectFailure,
            ErrorKind::UpstreamReset(ResetCause::RefusedStream) => Reason::RefusedStream,
            ErrorKind::UpstreamReset(_) => Reason::Reset,
            ErrorKind::Timeout => Reason::Timeout,
            _ => return None,
        };
        if !self
            .on
            .iter()
            .any(|c| classify::error_matches(err.kind, *c))
        {
            return None;
        }
        match err.kind.retry() {
            Retry::Safe => Some(reason),
            Retry::IfIdempotent => idempotent.then_some(reason),
            Retry::Never => None,
        }
    }

    /// The reason to retry `response`, if any. Never for another proxy's
    /// loop refusal ([`crate::loops::is_loop_refusal`]).
    pub fn for_response<B>(
        &self,
        response: &Response<B>,
        idempotent: bool,
        grpc: bool,
    ) -> Option<Reason> {
        let outcome = classify::classify_response(response);
        self.for_outcome(outcome, response.status().as_u16(), idempotent, grpc)
    }

    /// The reason to retry a response whose head has HTTP `status` and was
    /// classified as `outcome` ([`classify::classify_response`]; the
    /// balancer does it once per attempt): no header is read again. A
    /// trailers-only gRPC status is retried by `grpcOn` for a gRPC request;
    /// anything else by its HTTP status. (A trailers-only OK is a
    /// `Success`, judged by its HTTP 200: `grpcOn` never lists `ok` and
    /// `on` never a status below 400, validation refuses both.)
    pub fn for_outcome(
        &self,
        outcome: classify::Outcome,
        status: u16,
        idempotent: bool,
        grpc: bool,
    ) -> Option<Reason> {
        use classify::Outcome;
        match outcome {
            // Another proxy's loop refusal (the only error a response head
            // is classified as), or no response at all.
            Outcome::Error(_) | Outcome::Cancelled => None,
            Outcome::Grpc(code) if grpc => {
                self.grpc_on.contains(&code).then_some(Reason::Grpc(code))
            }
            Outcome::Grpc(_) | Outcome::HttpStatus(_) | Outcome::Success => {
                let listed = self.on.iter().any(|c| c.matches_status(status));
                (listed && idempotent).then_some(Reason::Status(status))
            }
        }
    }

    /// Whether a retry of this request may be sent after it reached the upstream.
    pub fn idempotent(&self, method: &Method, headers: &HeaderMap) -> bool {
        // A constant name: a `&str` key would be parsed on every call.
        const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");
        self.retry_non_idempotent
            || matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::PUT
                    | Method::DELETE
                    | Method::TRACE
            )
            || headers.contains_key(IDEMPOTENCY_KEY)
    }
}

/// The longest `Retry-After` taken from a header: a longer one reads as this.
/// A day is longer than any deadline the proxy keeps (request timeouts are
/// capped at 1 h, `grpc-timeout` at a day), so a capped value still stops
/// retries; only the arithmetic on it is kept in range.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(86_400);

/// The server's `Retry-After` on a 429 or 503, in delta-seconds form (an
/// HTTP date is not honoured), capped at [`RETRY_AFTER_CAP`].
pub fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    if !matches!(response.status().as_u16(), 429 | 503) {
        return None;
    }
    let value = response.headers().get(http::header::RETRY_AFTER)?;
    let secs: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests;
