//! What one attempt's outcome was, and whether a breaker counts it as a
//! failure.
//!
//! Breakers (service and endpoint) and the retry layer see the same
//! [`Outcome`]: a response head is classified by [`classify_response`]
//! (HTTP status, or `grpc-status` in the headers of a trailers-only gRPC
//! response), an error by [`classify_error`]. A caller that hung up is
//! [`Outcome::Cancelled`] and never counts against the upstream.
//!
//! `failureOn` speaks HTTP (`5xx`, `gateway-error`, `"503"`, `reset`, ...).
//! A gRPC status is counted through the HTTP status gRPC's own mapping
//! gives it (UNAVAILABLE → 503, DEADLINE_EXCEEDED → 504 and `timeout`,
//! INTERNAL/UNKNOWN/DATA_LOSS → 500, ...), as Envoy's outlier detection does;
//! client-side codes (INVALID_ARGUMENT, NOT_FOUND, ...) map to 4xx and are
//! therefore not failures unless listed.

use http::Response;
use http::header::HeaderName;
use levee_proto::policy::FailureCondition;

use crate::errors::{ErrorKind, ProxyError};

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The outcome of one attempt, as far as the response head (or the error) tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 1xx–3xx response, or gRPC OK.
    Success,
    /// A 4xx or 5xx response.
    HttpStatus(u16),
    /// A non-OK `grpc-status` in the response headers (trailers-only response).
    GrpcStatus(i32),
    /// No usable response: connect failure, reset, timeout, ...
    Error(ErrorKind),
    /// The caller went away before the outcome was known: never a failure.
    Cancelled,
}

impl Outcome {
    /// Whether the outcome says nothing about the upstream at all: the caller
    /// hung up, or this proxy refused the call itself (circuit open, rate
    /// limited, overloaded, bad request). Breakers count such calls neither
    /// as failures nor as successes.
    pub fn is_ignored(&self) -> bool {
        match *self {
            Outcome::Cancelled => true,
            Outcome::Error(kind) => error_condition(kind).is_none(),
            _ => false,
        }
    }

    /// Whether this outcome matches one of `failure_on`.
    pub fn is_failure(&self, failure_on: &[FailureCondition]) -> bool {
        match *self {
            Outcome::Success | Outcome::Cancelled => false,
            Outcome::HttpStatus(status) => failure_on.iter().any(|c| c.matches_status(status)),
            Outcome::GrpcStatus(code) => {
                let status = grpc_to_http(code);
                failure_on.iter().any(|c| {
                    c.matches_status(status)
                        || (code == DEADLINE_EXCEEDED && *c == FailureCondition::Timeout)
                })
            }
            Outcome::Error(kind) => {
                let Some(own) = error_condition(kind) else {
                    // Decided by this proxy (circuit open, rate limited, ...):
                    // says nothing about the upstream.
                    return false;
                };
                failure_on
                    .iter()
                    .any(|c| *c == own || *c == FailureCondition::ServerError)
            }
        }
    }
}

const DEADLINE_EXCEEDED: i32 = 4;

/// The condition an error kind is, if it is an upstream failure at all.
/// `5xx` also covers all of these, as in Envoy.
fn error_condition(kind: ErrorKind) -> Option<FailureCondition> {
    match kind {
        // No endpoint to reach is, for the service, the same as none answering.
        ErrorKind::UpstreamConnect | ErrorKind::NoEndpoints => {
            Some(FailureCondition::ConnectFailure)
        }
        ErrorKind::UpstreamReset => Some(FailureCondition::Reset),
        ErrorKind::Timeout => Some(FailureCondition::Timeout),
        ErrorKind::CircuitOpen
        | ErrorKind::RateLimited
        | ErrorKind::Overloaded
        | ErrorKind::BadRequest => None,
    }
}

/// The HTTP status gRPC's status mapping gives a code (as Envoy uses it).
fn grpc_to_http(code: i32) -> u16 {
    match code {
        0 => 200,
        1 => 499,          // CANCELLED
        3 | 9 | 11 => 400, // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
        4 => 504,          // DEADLINE_EXCEEDED
        5 => 404,          // NOT_FOUND
        6 | 10 => 409,     // ALREADY_EXISTS, ABORTED
        7 => 403,          // PERMISSION_DENIED
        8 => 429,          // RESOURCE_EXHAUSTED
        12 => 501,         // UNIMPLEMENTED
        14 => 503,         // UNAVAILABLE
        16 => 401,         // UNAUTHENTICATED
        _ => 500,          // UNKNOWN, INTERNAL, DATA_LOSS, unknown codes
    }
}

/// Classifies a response head. gRPC failures that arrive in trailers after
/// a body are not visible here; only trailers-only responses are.
pub fn classify_response<B>(resp: &Response<B>) -> Outcome {
    let status = resp.status().as_u16();
    if let Some(code) = resp.headers().get(&GRPC_STATUS) {
        let code = std::str::from_utf8(code.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .unwrap_or(2); // unparsable → UNKNOWN
        if status == 200 {
            return if code == 0 {
                Outcome::Success
            } else {
                Outcome::GrpcStatus(code)
            };
        }
    }
    if status >= 400 {
        Outcome::HttpStatus(status)
    } else {
        Outcome::Success
    }
}

/// Classifies an error returned instead of a response: a [`ProxyError`]
/// says what it was; anything else is treated as a reset.
pub fn classify_error(error: &(dyn std::error::Error + 'static)) -> Outcome {
    match error.downcast_ref::<ProxyError>() {
        Some(err) => Outcome::Error(err.kind),
        None => Outcome::Error(ErrorKind::UpstreamReset),
    }
}

#[cfg(test)]
mod tests {
    use levee_proto::policy::defaults::FAILURE_ON;

    use super::*;

    fn response(status: u16, grpc: Option<&str>) -> Response<()> {
        let mut builder = Response::builder().status(status);
        if let Some(code) = grpc {
            builder = builder
                .header("content-type", "application/grpc")
                .header("grpc-status", code);
        }
        builder.body(()).expect("response")
    }

    #[test]
    fn http_statuses() {
        assert_eq!(classify_response(&response(200, None)), Outcome::Success);
        assert_eq!(classify_response(&response(304, None)), Outcome::Success);
        assert_eq!(
            classify_response(&response(404, None)),
            Outcome::HttpStatus(404)
        );
        let o = classify_response(&response(503, None));
        assert_eq!(o, Outcome::HttpStatus(503));
        assert!(o.is_failure(&FAILURE_ON));
        // 4xx are not failures unless listed.
        assert!(!Outcome::HttpStatus(404).is_failure(&FAILURE_ON));
        assert!(Outcome::HttpStatus(409).is_failure(&[FailureCondition::Status(409)]));
        assert!(!Outcome::HttpStatus(500).is_failure(&[FailureCondition::GatewayError]));
        assert!(Outcome::HttpStatus(502).is_failure(&[FailureCondition::GatewayError]));
    }

    #[test]
    fn grpc_trailers_only() {
        assert_eq!(
            classify_response(&response(200, Some("0"))),
            Outcome::Success
        );
        let unavailable = classify_response(&response(200, Some("14")));
        assert_eq!(unavailable, Outcome::GrpcStatus(14));
        assert!(unavailable.is_failure(&FAILURE_ON));
        assert!(unavailable.is_failure(&[FailureCondition::Status(503)]));
        let deadline = classify_response(&response(200, Some("4")));
        assert!(deadline.is_failure(&[FailureCondition::Timeout]));
        let not_found = classify_response(&response(200, Some("5")));
        assert_eq!(not_found, Outcome::GrpcStatus(5));
        assert!(!not_found.is_failure(&FAILURE_ON));
        assert!(
            Outcome::GrpcStatus(13).is_failure(&FAILURE_ON),
            "INTERNAL is a 5xx"
        );
        // Unparsable status: UNKNOWN, a failure.
        assert_eq!(
            classify_response(&response(200, Some("x"))),
            Outcome::GrpcStatus(2)
        );
        // A gRPC call that got an HTTP error is classified by the HTTP status.
        assert_eq!(
            classify_response(&response(502, Some("14"))),
            Outcome::HttpStatus(502)
        );
    }

    #[test]
    fn errors_and_cancellation() {
        let err = ProxyError::new(ErrorKind::UpstreamConnect, "s", "refused");
        let outcome = classify_error(&err);
        assert_eq!(outcome, Outcome::Error(ErrorKind::UpstreamConnect));
        assert!(outcome.is_failure(&[FailureCondition::ConnectFailure]));
        assert!(outcome.is_failure(&[FailureCondition::ServerError]));
        assert!(!outcome.is_failure(&[FailureCondition::Timeout]));
        let other = std::io::Error::other("boom");
        assert_eq!(
            classify_error(&other),
            Outcome::Error(ErrorKind::UpstreamReset)
        );
        assert!(Outcome::Error(ErrorKind::Timeout).is_failure(&[FailureCondition::Timeout]));
        for local in [
            ErrorKind::CircuitOpen,
            ErrorKind::RateLimited,
            ErrorKind::Overloaded,
        ] {
            assert!(!Outcome::Error(local).is_failure(&FAILURE_ON), "{local}");
        }
        assert!(!Outcome::Cancelled.is_failure(&FAILURE_ON));
        assert!(Outcome::Cancelled.is_ignored());
        assert!(Outcome::Error(ErrorKind::Overloaded).is_ignored());
        assert!(!Outcome::Error(ErrorKind::UpstreamReset).is_ignored());
        assert!(!Outcome::HttpStatus(503).is_ignored());
        assert!(!Outcome::Success.is_ignored());
    }
}
