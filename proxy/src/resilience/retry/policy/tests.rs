use http::{HeaderValue, StatusCode};

use super::*;
use crate::errors::ConnectCause;

fn conditions(on: &[&str], grpc_on: &[&str]) -> Conditions {
    Conditions {
        on: on.iter().map(|c| c.parse().expect("condition")).collect(),
        grpc_on: grpc_on.iter().map(|c| c.parse().expect("code")).collect(),
        retry_non_idempotent: false,
    }
}

/// The detail text is deliberately misleading: only the typed kind counts.
fn error(kind: ErrorKind) -> ProxyError {
    ProxyError::new(kind, "svc", "stream error: REFUSED_STREAM, timed out")
}

const CONNECT: ErrorKind = ErrorKind::UpstreamConnect(ConnectCause::Refused);
const REFUSED: ErrorKind = ErrorKind::UpstreamReset(ResetCause::RefusedStream);
const CLOSED: ErrorKind = ErrorKind::UpstreamReset(ResetCause::Closed);

fn response(status: u16, headers: &[(&'static str, &'static str)]) -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    for (k, v) in headers {
        r.headers_mut().insert(*k, HeaderValue::from_static(v));
    }
    r
}

#[test]
fn the_defaults_retry_only_what_never_reached_the_upstream() {
    let c = conditions(&["connect-failure", "refused-stream"], &[]);
    assert_eq!(
        c.for_error(&error(CONNECT), false),
        Some(Reason::ConnectFailure)
    );
    let timed_out = error(ErrorKind::UpstreamConnect(ConnectCause::TimedOut));
    assert_eq!(c.for_error(&timed_out, false), Some(Reason::ConnectFailure));
    assert_eq!(
        c.for_error(&error(REFUSED), false),
        Some(Reason::RefusedStream)
    );
    assert_eq!(c.for_error(&error(CLOSED), true), None);
    let cancel = error(ErrorKind::UpstreamReset(ResetCause::H2(h2::Reason::CANCEL)));
    assert_eq!(c.for_error(&cancel, true), None);
    assert_eq!(c.for_error(&error(ErrorKind::Timeout), true), None);
    assert_eq!(c.for_response(&response(503, &[]), true, false), None);
}

#[test]
fn statuses_resets_and_timeouts_need_an_idempotent_request() {
    let c = conditions(&["gateway-error", "reset", "409"], &[]);
    assert_eq!(
        c.for_response(&response(503, &[]), true, false),
        Some(Reason::Status(503))
    );
    assert_eq!(
        c.for_response(&response(409, &[]), true, false),
        Some(Reason::Status(409))
    );
    assert_eq!(c.for_response(&response(500, &[]), true, false), None);
    assert_eq!(c.for_response(&response(503, &[]), false, false), None);
    let reset = error(CLOSED);
    assert_eq!(c.for_error(&reset, true), Some(Reason::Reset));
    assert_eq!(c.for_error(&reset, false), None);
    assert_eq!(
        c.for_error(&error(ErrorKind::Timeout), true),
        Some(Reason::Timeout)
    );
    for local in [
        ErrorKind::CircuitOpen,
        ErrorKind::Overloaded,
        ErrorKind::NoEndpoints,
    ] {
        assert_eq!(c.for_error(&error(local), true), None, "{local:?}");
    }
}

#[test]
fn a_refused_stream_is_a_reset_that_any_method_may_retry() {
    let c = conditions(&["reset"], &[]);
    assert_eq!(
        c.for_error(&error(REFUSED), false),
        Some(Reason::RefusedStream)
    );
    assert_eq!(c.for_error(&error(CLOSED), false), None);
    // Not listed at all: no retry, however safe.
    let none = conditions(&["timeout"], &[]);
    assert_eq!(none.for_error(&error(REFUSED), false), None);
    assert_eq!(none.for_error(&error(CONNECT), false), None);
}

#[test]
fn grpc_codes_come_from_a_trailers_only_head() {
    let c = conditions(&[], &["unavailable"]);
    let unavailable = response(200, &[("grpc-status", "14")]);
    assert_eq!(
        c.for_response(&unavailable, false, true),
        Some(Reason::Grpc(GrpcStatus::Unavailable))
    );
    assert_eq!(
        Reason::Grpc(GrpcStatus::Unavailable).label(),
        "grpc-unavailable"
    );
    assert_eq!(
        c.for_response(&response(200, &[("grpc-status", "13")]), false, true),
        None
    );
    assert_eq!(
        c.for_response(&response(200, &[("grpc-status", "0")]), false, true),
        None
    );
    assert_eq!(
        c.for_response(&response(200, &[]), false, true),
        None,
        "status in trailers"
    );
}

#[test]
fn idempotency_follows_the_method_the_key_or_the_policy() {
    let mut c = conditions(&[], &[]);
    let none = HeaderMap::new();
    let mut keyed = HeaderMap::new();
    keyed.insert("idempotency-key", HeaderValue::from_static("abc"));
    for m in [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        assert!(c.idempotent(&m, &none), "{m}");
    }
    assert!(!c.idempotent(&Method::POST, &none));
    assert!(!c.idempotent(&Method::PATCH, &none));
    assert!(c.idempotent(&Method::POST, &keyed));
    c.retry_non_idempotent = true;
    assert!(c.idempotent(&Method::PATCH, &none));
}

#[test]
fn retry_after_is_read_from_429_and_503_in_seconds() {
    let r = response(503, &[("retry-after", "3")]);
    assert_eq!(retry_after(&r), Some(Duration::from_secs(3)));
    assert_eq!(
        retry_after(&response(429, &[("retry-after", "0")])),
        Some(Duration::ZERO)
    );
    assert_eq!(retry_after(&response(500, &[("retry-after", "3")])), None);
    let date = response(503, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
    assert_eq!(retry_after(&date), None);
}

#[test]
fn a_huge_retry_after_is_capped_at_a_day() {
    for huge in ["18446744073709551615", "99999999999", "86401"] {
        let r = response(503, &[("retry-after", huge)]);
        assert_eq!(retry_after(&r), Some(RETRY_AFTER_CAP), "{huge}");
    }
    let day = response(429, &[("retry-after", "86400")]);
    assert_eq!(retry_after(&day), Some(Duration::from_secs(86_400)));
}

/// Another proxy's loop refusal is passed back, never retried: a retry at
/// every hop of a loop would multiply it.
#[test]
fn a_loop_refusal_from_upstream_is_never_retried() {
    let c = conditions(&["5xx", "508"], &["failed-precondition"]);
    let refusal = [("x-levee-error", "loop-detected")];
    assert_eq!(c.for_response(&response(508, &refusal), true, false), None);
    let grpc = [
        ("x-levee-error", "loop-detected"),
        ("content-type", "application/grpc"),
        ("grpc-status", "9"),
    ];
    assert_eq!(c.for_response(&response(200, &grpc), true, true), None);
    // The upstream's own 508 follows the policy.
    assert_eq!(
        c.for_response(&response(508, &[]), true, false),
        Some(Reason::Status(508))
    );
}

/// The retry layer judges the outcome the balancer classified (no header
/// read again): each kind of outcome gives the reason its head would.
#[test]
fn a_classified_outcome_gives_the_reason_its_head_would() {
    use crate::resilience::classify::{Outcome, classify_response};
    let c = conditions(&["5xx"], &["unavailable"]);
    let heads = [
        (response(503, &[]), true, false),
        (response(503, &[]), false, false),
        (response(200, &[("grpc-status", "14")]), false, true),
        (response(200, &[("grpc-status", "14")]), true, false),
        (response(200, &[("grpc-status", "0")]), true, true),
        (response(503, &[("grpc-status", "14")]), true, true),
        (response(200, &[]), true, false),
        (
            response(508, &[("x-levee-error", "loop-detected")]),
            true,
            false,
        ),
    ];
    let reasons: Vec<_> = heads
        .iter()
        .map(|(head, idempotent, grpc)| {
            let outcome = classify_response(head);
            let reason = c.for_outcome(outcome, head.status().as_u16(), *idempotent, *grpc);
            assert_eq!(reason, c.for_response(head, *idempotent, *grpc));
            reason
        })
        .collect();
    assert_eq!(
        reasons,
        [
            Some(Reason::Status(503)),
            None,
            Some(Reason::Grpc(GrpcStatus::Unavailable)),
            // Not a gRPC request: its HTTP 200 is what counts.
            None,
            None,
            // Not trailers-only (HTTP 503): the HTTP status counts.
            Some(Reason::Status(503)),
            None,
            None,
        ]
    );
    // An error outcome (only a loop refusal comes from a head) and a
    // cancelled one are never retried from a response.
    let loop_refusal = Outcome::Error(ErrorKind::LoopDetected);
    assert_eq!(c.for_outcome(loop_refusal, 508, true, false), None);
    assert_eq!(c.for_outcome(Outcome::Cancelled, 503, true, false), None);
}
