//! What may be retried: the route's `retry.on` / `retry.grpcOn` conditions
//! applied to one attempt's result, the idempotency rule, and `Retry-After`.
//!
//! - Connect failures and refused streams never reached the application, so
//!   they are retried whatever the method.
//! - Resets, per-try timeouts and error responses are retried only for
//!   idempotent requests: GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or any
//!   request with an `Idempotency-Key` header, or all when
//!   `retryNonIdempotent` is set.
//! - gRPC: a `grpc-status` in the response head (a trailers-only response)
//!   listed in `grpcOn` is retried; the operator opted the code in, as in
//!   gRPC's own retry policy. A status in the trailers of a streamed response
//!   is not: the response is already on its way to the caller.
//! - `5xx` and `gateway-error` also cover connect failures, resets and
//!   per-try timeouts (the proxy answers those with 502/504), as in Envoy.

use std::time::Duration;

use http::{HeaderMap, Method, Response};
use levee_proto::policy::{FailureCondition, GrpcCode};

use crate::errors::{ErrorKind, ProxyError};

/// Why an attempt is retried: also the `reason` label of `levee_retries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    ConnectFailure,
    RefusedStream,
    Reset,
    Timeout,
    Status(u16),
    Grpc(GrpcCode),
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

    /// Whether the upstream may have acted on the request.
    fn reached_upstream(self) -> bool {
        !matches!(self, Reason::ConnectFailure | Reason::RefusedStream)
    }
}

/// The retry conditions of one route.
#[derive(Clone, Debug, PartialEq)]
pub struct Conditions {
    pub on: Vec<FailureCondition>,
    pub grpc_on: Vec<GrpcCode>,
    pub retry_non_idempotent: bool,
}

impl Conditions {
    fn has(&self, c: FailureCondition) -> bool {
        self.on.contains(&c)
    }

    /// Whether `5xx`/`gateway-error` (which cover proxy-made 502/504) are listed.
    fn any_gateway(&self) -> bool {
        self.has(FailureCondition::ServerError) || self.has(FailureCondition::GatewayError)
    }

    /// The reason to retry an attempt that failed with `err`, if any.
    pub fn for_error(&self, err: &ProxyError, idempotent: bool) -> Option<Reason> {
        let reason = match err.kind {
            ErrorKind::UpstreamConnect
                if self.has(FailureCondition::ConnectFailure) || self.any_gateway() =>
            {
                Reason::ConnectFailure
            }
            ErrorKind::UpstreamReset
                if is_refused_stream(err) && self.has(FailureCondition::RefusedStream) =>
            {
                Reason::RefusedStream
            }
            ErrorKind::UpstreamReset if self.has(FailureCondition::Reset) || self.any_gateway() => {
                Reason::Reset
            }
            ErrorKind::Timeout if self.has(FailureCondition::Timeout) || self.any_gateway() => {
                Reason::Timeout
            }
            _ => return None,
        };
        (idempotent || !reason.reached_upstream()).then_some(reason)
    }

    /// The reason to retry `response`, if any.
    pub fn for_response<B>(
        &self,
        response: &Response<B>,
        idempotent: bool,
        grpc: bool,
    ) -> Option<Reason> {
        if grpc && let Some(code) = grpc_status(response.headers()) {
            return GrpcCode::from_code(code)
                .filter(|c| self.grpc_on.contains(c))
                .map(Reason::Grpc);
        }
        let status = response.status().as_u16();
        let listed = self.on.iter().any(|c| c.matches_status(status));
        (listed && idempotent).then_some(Reason::Status(status))
    }

    /// Whether a retry of this request may be sent after it reached the upstream.
    pub fn idempotent(&self, method: &Method, headers: &HeaderMap) -> bool {
        self.retry_non_idempotent
            || headers.contains_key("idempotency-key")
            || matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::PUT
                    | Method::DELETE
                    | Method::TRACE
            )
    }
}

/// A `grpc-status` in a header map (the head of a trailers-only response).
pub fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// HTTP/2 REFUSED_STREAM: the server did not process the stream.
fn is_refused_stream(err: &ProxyError) -> bool {
    let detail = err.detail.to_ascii_lowercase();
    detail.contains("refused_stream") || detail.contains("refused stream")
}

/// The server's `Retry-After` on a 429 or 503, in delta-seconds form (an
/// HTTP date is not honoured).
pub fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    if !matches!(response.status().as_u16(), 429 | 503) {
        return None;
    }
    let value = response.headers().get(http::header::RETRY_AFTER)?;
    let secs: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests;
