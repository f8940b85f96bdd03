//! What one attempt's outcome was, and whether a breaker or a retry
//! condition counts it as a failure.
//!
//! Breakers (service and endpoint) and the retry layer see the same
//! [`Outcome`]: a response head is classified by [`classify_response`]
//! (HTTP status, or the [`GrpcStatus`] of a trailers-only gRPC response), an
//! error by [`classify_error`] (its typed [`ErrorKind`], never its text). A
//! caller that hung up is [`Outcome::Cancelled`] and never counts against
//! the upstream.
//!
//! Conditions (`failureOn`, `retry.on`) speak HTTP (`5xx`, `gateway-error`,
//! `"503"`, `reset`, ...). A gRPC status is counted through the HTTP status
//! gRPC's own mapping gives it ([`GrpcStatus::http_status`]: UNAVAILABLE →
//! 503, DEADLINE_EXCEEDED → 504 and `timeout`, ...), as Envoy's outlier
//! detection does; so `5xx` matches exactly the statuses
//! [`GrpcStatus::is_failure`] calls failures, and client-side codes
//! (INVALID_ARGUMENT, NOT_FOUND, ...) are not failures unless listed.
//! Errors are matched by [`error_matches`], the one table both the breaker
//! and the retry conditions use.

use http::Response;
use levee_proto::policy::{FailureCondition, GrpcStatus};

use crate::errors::{ErrorKind, Origin, ProxyError, ResetCause};

/// The outcome of one attempt, as far as the response head (or the error) tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 1xx–3xx response, or gRPC OK.
    Success,
    /// A 4xx or 5xx response.
    HttpStatus(u16),
    /// A non-OK status of a trailers-only gRPC response.
    Grpc(GrpcStatus),
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
            Outcome::Error(kind) => !about_upstream(kind),
            _ => false,
        }
    }

    /// Whether this outcome matches one of `failure_on`.
    pub fn is_failure(&self, failure_on: &[FailureCondition]) -> bool {
        match *self {
            Outcome::Success | Outcome::Cancelled => false,
            Outcome::HttpStatus(status) => failure_on.iter().any(|c| c.matches_status(status)),
            Outcome::Grpc(status) => failure_on.iter().any(|c| grpc_matches(status, *c)),
            Outcome::Error(kind) => failure_on.iter().any(|c| error_matches(kind, *c)),
        }
    }
}

/// Whether an error tells something about the upstream. No endpoint to
/// reach is, for the service, the same as none answering.
fn about_upstream(kind: ErrorKind) -> bool {
    kind.origin() == Origin::Upstream || kind == ErrorKind::NoEndpoints
}

/// Whether a non-OK gRPC status matches `condition`: through gRPC's HTTP
/// mapping, and DEADLINE_EXCEEDED is also a `timeout`.
fn grpc_matches(status: GrpcStatus, condition: FailureCondition) -> bool {
    condition.matches_status(status.http_status())
        || (status == GrpcStatus::DeadlineExceeded && condition == FailureCondition::Timeout)
}

/// Whether an error matches `condition`. `5xx` and `gateway-error` cover
/// every upstream error (the proxy answers them with 502/504), as in Envoy;
/// a refused stream is also a `reset`. The proxy's own refusals match
/// nothing.
pub fn error_matches(kind: ErrorKind, condition: FailureCondition) -> bool {
    use FailureCondition as C;
    if !about_upstream(kind) {
        return false;
    }
    let own = match kind {
        ErrorKind::UpstreamConnect(_) | ErrorKind::NoEndpoints => {
            matches!(condition, C::ConnectFailure)
        }
        ErrorKind::UpstreamReset(ResetCause::RefusedStream) => {
            matches!(condition, C::RefusedStream | C::Reset)
        }
        ErrorKind::UpstreamReset(_) => condition == C::Reset,
        ErrorKind::Timeout => condition == C::Timeout,
        ErrorKind::CircuitOpen
        | ErrorKind::RateLimited
        | ErrorKind::Overloaded
        | ErrorKind::BadRequest
        | ErrorKind::AmbiguousAuthority
        | ErrorKind::LoopDetected
        | ErrorKind::Unauthorized => false,
    };
    own || matches!(condition, C::ServerError | C::GatewayError)
}

/// Classifies a response head. gRPC failures that arrive in trailers after
/// a body are not visible here; only trailers-only responses are. Another
/// Levee proxy's loop refusal is that refusal, ignored like this proxy's
/// own ([`crate::loops::is_loop_refusal`]).
pub fn classify_response<B>(resp: &Response<B>) -> Outcome {
    if crate::loops::is_loop_refusal(resp) {
        return Outcome::Error(ErrorKind::LoopDetected);
    }
    match GrpcStatus::trailers_only(resp) {
        Some(GrpcStatus::Ok) => Outcome::Success,
        Some(status) => Outcome::Grpc(status),
        None if resp.status().as_u16() >= 400 => Outcome::HttpStatus(resp.status().as_u16()),
        None => Outcome::Success,
    }
}

/// Classifies an error returned instead of a response: a [`ProxyError`]
/// says what it was; anything else (an error from outside the forwarder)
/// is treated as a reset of unknown cause.
pub fn classify_error(error: &(dyn std::error::Error + 'static)) -> Outcome {
    match error.downcast_ref::<ProxyError>() {
        Some(err) => Outcome::Error(err.kind),
        None => Outcome::Error(ErrorKind::UpstreamReset(ResetCause::Other)),
    }
}

#[cfg(test)]
mod tests {
    use levee_proto::policy::defaults::FAILURE_ON;

    use super::*;
    use crate::errors::ConnectCause;

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
    fn an_upstream_loop_refusal_is_ignored_not_a_failure() {
        for grpc in [None, Some("9")] {
            let status = if grpc.is_some() { 200 } else { 508 };
            let mut resp = response(status, grpc);
            resp.headers_mut().insert(
                "x-levee-error",
                http::HeaderValue::from_static("loop-detected"),
            );
            let outcome = classify_response(&resp);
            assert_eq!(outcome, Outcome::Error(ErrorKind::LoopDetected));
            assert!(outcome.is_ignored());
            assert!(!outcome.is_failure(&[FailureCondition::ServerError]));
        }
        // Any other 508 is the upstream's own answer.
        assert_eq!(
            classify_response(&response(508, None)),
            Outcome::HttpStatus(508)
        );
    }

    #[test]
    fn a_wrong_endpoint_identity_is_a_connect_failure_and_an_unauthorized_caller_is_not() {
        let identity = ErrorKind::UpstreamConnect(ConnectCause::Identity);
        assert!(error_matches(identity, FailureCondition::ConnectFailure));
        assert!(error_matches(
            ErrorKind::UpstreamConnect(ConnectCause::Tls),
            FailureCondition::ConnectFailure
        ));
        // Never the upstream's failure: not retried, not counted by breakers.
        for condition in [
            FailureCondition::ConnectFailure,
            FailureCondition::ServerError,
            FailureCondition::GatewayError,
        ] {
            assert!(!error_matches(ErrorKind::Unauthorized, condition));
        }
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

    /// The breaker's default `failureOn` counts exactly the gRPC statuses
    /// the one rule calls failures (the same as metrics and traces).
    #[test]
    fn grpc_failures_by_default_are_the_one_rule() {
        for status in GrpcStatus::ALL {
            let outcome = classify_response(&response(200, Some(&status.code().to_string())));
            if status == GrpcStatus::Ok {
                assert_eq!(outcome, Outcome::Success);
                continue;
            }
            assert_eq!(outcome, Outcome::Grpc(status));
            assert_eq!(
                outcome.is_failure(&FAILURE_ON),
                status.is_failure(),
                "{status}"
            );
        }
        assert!(
            Outcome::Grpc(GrpcStatus::Unimplemented).is_failure(&FAILURE_ON),
            "UNIMPLEMENTED maps to 501"
        );
    }

    #[test]
    fn grpc_trailers_only() {
        let unavailable = classify_response(&response(200, Some("14")));
        assert!(unavailable.is_failure(&[FailureCondition::Status(503)]));
        assert!(unavailable.is_failure(&[FailureCondition::GatewayError]));
        let deadline = classify_response(&response(200, Some("4")));
        assert!(deadline.is_failure(&[FailureCondition::Timeout]));
        let exhausted = classify_response(&response(200, Some("8")));
        assert!(exhausted.is_failure(&[FailureCondition::Status(429)]));
        // Unparsable status: UNKNOWN, a failure.
        assert_eq!(
            classify_response(&response(200, Some("x"))),
            Outcome::Grpc(GrpcStatus::Unknown)
        );
        // A gRPC call that got an HTTP error is classified by the HTTP status.
        assert_eq!(
            classify_response(&response(502, Some("14"))),
            Outcome::HttpStatus(502)
        );
    }

    /// Which conditions each error matches: the table breaker and retry share.
    #[test]
    fn error_condition_table() {
        use FailureCondition as C;
        let conditions = [
            C::ConnectFailure,
            C::RefusedStream,
            C::Reset,
            C::Timeout,
            C::ServerError,
            C::GatewayError,
            C::Status(502),
        ];
        let refused = ErrorKind::UpstreamConnect(ConnectCause::Refused);
        let connect_timeout = ErrorKind::UpstreamConnect(ConnectCause::TimedOut);
        let refused_stream = ErrorKind::UpstreamReset(ResetCause::RefusedStream);
        let closed = ErrorKind::UpstreamReset(ResetCause::Closed);
        let cancel = ErrorKind::UpstreamReset(ResetCause::H2(h2::Reason::CANCEL));
        let request_body = ErrorKind::UpstreamReset(ResetCause::RequestBody);
        #[rustfmt::skip]
        let table: [(ErrorKind, [bool; 7]); 12] = [
            //                      connect refused reset  timeout 5xx   gateway "502"
            (refused,               [true,  false, false, false, true,  true,  false]),
            (connect_timeout,       [true,  false, false, false, true,  true,  false]),
            (ErrorKind::NoEndpoints,[true,  false, false, false, true,  true,  false]),
            (refused_stream,        [false, true,  true,  false, true,  true,  false]),
            (closed,                [false, false, true,  false, true,  true,  false]),
            (cancel,                [false, false, true,  false, true,  true,  false]),
            (ErrorKind::Timeout,    [false, false, false, true,  true,  true,  false]),
            (request_body,          [false; 7]),
            (ErrorKind::CircuitOpen,[false; 7]),
            (ErrorKind::RateLimited,[false; 7]),
            (ErrorKind::Overloaded, [false; 7]),
            // A loop is the proxy's own refusal: no breaker counts it.
            (ErrorKind::LoopDetected, [false; 7]),
        ];
        for (kind, expected) in table {
            for (condition, want) in conditions.iter().zip(expected) {
                assert_eq!(
                    error_matches(kind, *condition),
                    want,
                    "{kind:?} {condition}"
                );
            }
            assert_eq!(
                Outcome::Error(kind).is_ignored(),
                expected == [false; 7],
                "{kind:?}"
            );
        }
        assert!(!error_matches(ErrorKind::BadRequest, C::ServerError));
    }

    #[test]
    fn errors_and_cancellation() {
        let refused = ErrorKind::UpstreamConnect(ConnectCause::Refused);
        let err = ProxyError::new(refused, "s", "refused");
        assert_eq!(classify_error(&err), Outcome::Error(refused));
        let other = std::io::Error::other("boom");
        assert_eq!(
            classify_error(&other),
            Outcome::Error(ErrorKind::UpstreamReset(ResetCause::Other))
        );
        assert!(!Outcome::Cancelled.is_failure(&FAILURE_ON));
        assert!(Outcome::Cancelled.is_ignored());
        assert!(!Outcome::HttpStatus(503).is_ignored());
        assert!(!Outcome::Success.is_ignored());
    }
}
