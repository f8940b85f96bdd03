use std::time::Duration;

use http_body_util::BodyExt;

use super::*;

const ALL: [ErrorKind; 16] = [
    ErrorKind::CircuitOpen,
    ErrorKind::Timeout,
    ErrorKind::RateLimited,
    ErrorKind::Overloaded,
    ErrorKind::NoEndpoints,
    ErrorKind::UpstreamConnect(ConnectCause::Refused),
    ErrorKind::UpstreamConnect(ConnectCause::TimedOut),
    ErrorKind::UpstreamConnect(ConnectCause::Tls),
    ErrorKind::UpstreamConnect(ConnectCause::Identity),
    ErrorKind::UpstreamReset(ResetCause::RefusedStream),
    ErrorKind::UpstreamReset(ResetCause::Closed),
    ErrorKind::UpstreamReset(ResetCause::RequestBody),
    ErrorKind::BadRequest,
    ErrorKind::AmbiguousAuthority,
    ErrorKind::LoopDetected,
    ErrorKind::Unauthorized,
];

fn expected(kind: ErrorKind) -> (u16, &'static str, &'static str) {
    match kind {
        ErrorKind::CircuitOpen => (503, "14", "circuit-open"),
        ErrorKind::Timeout => (504, "4", "timeout"),
        ErrorKind::RateLimited => (429, "8", "rate-limited"),
        ErrorKind::Overloaded => (503, "14", "overloaded"),
        ErrorKind::NoEndpoints => (503, "14", "no-endpoints"),
        ErrorKind::UpstreamConnect(ConnectCause::Identity) => (502, "14", "upstream-identity"),
        ErrorKind::UpstreamConnect(_) => (502, "14", "upstream-connect"),
        ErrorKind::UpstreamReset(ResetCause::RequestBody) | ErrorKind::BadRequest => {
            (400, "13", "bad-request")
        }
        ErrorKind::UpstreamReset(_) => (502, "14", "upstream-reset"),
        ErrorKind::AmbiguousAuthority => (400, "13", "ambiguous-authority"),
        ErrorKind::LoopDetected => (508, "9", "loop-detected"),
        ErrorKind::Unauthorized => (403, "7", "unauthorized"),
    }
}

fn header<'a>(r: &'a Response<BoxBody>, name: &str) -> Option<&'a str> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header"))
}

#[tokio::test]
async fn http_form_for_every_kind() {
    for kind in ALL {
        let (status, _, name) = expected(kind);
        let err = ProxyError::new(kind, "payments.shop:8080", "because \"reasons\"");
        let r = to_response(&err, false);
        assert_eq!(r.status().as_u16(), status, "{kind:?}");
        assert_eq!(header(&r, "x-levee-error"), Some(name));
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert_eq!(header(&r, "retry-after"), None);
        let bytes = r.into_body().collect().await.expect("body").to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json body");
        assert_eq!(json["error"], name);
        assert_eq!(json["service"], "payments.shop:8080");
        assert_eq!(json["detail"], "because \"reasons\"");
    }
}

#[tokio::test]
async fn grpc_form_for_every_kind() {
    for kind in ALL {
        let (_, code, name) = expected(kind);
        let err = ProxyError::new(kind, "svc.ns:80", "détail 100%");
        let r = to_response(&err, true);
        assert_eq!(r.status(), StatusCode::OK, "{kind:?}");
        assert_eq!(header(&r, "content-type"), Some("application/grpc"));
        assert_eq!(header(&r, "grpc-status"), Some(code));
        assert_eq!(header(&r, "x-levee-error"), Some(name));
        let message = header(&r, "grpc-message").expect("grpc-message");
        assert_eq!(message, format!("{name}: d%C3%A9tail 100%25"));
        // Trailers-only: no body at all.
        let collected = r.into_body().collect().await.expect("body");
        assert!(collected.to_bytes().is_empty());
    }
}

#[test]
fn retry_after_rounds_up_to_seconds() {
    let err = ProxyError::new(ErrorKind::CircuitOpen, "s", "open")
        .with_retry_after(Duration::from_millis(1500));
    assert_eq!(header(&to_response(&err, false), "retry-after"), Some("2"));
    assert_eq!(header(&to_response(&err, true), "retry-after"), Some("2"));
    let err = ProxyError::new(ErrorKind::RateLimited, "s", "slow down")
        .with_retry_after(Duration::from_secs(3));
    assert_eq!(header(&to_response(&err, false), "retry-after"), Some("3"));
}

/// Where each error comes from and what may follow it: a connect failure
/// or a refused stream never reached the application (any method may be
/// retried); a reset or a timeout may have; the proxy's own refusals are
/// never retried.
#[test]
fn origin_and_retry_of_every_kind() {
    use ErrorKind as K;
    let expected = |kind: ErrorKind| match kind {
        K::UpstreamConnect(_) | K::UpstreamReset(ResetCause::RefusedStream) => {
            (Origin::Upstream, Retry::Safe)
        }
        K::UpstreamReset(ResetCause::RequestBody)
        | K::BadRequest
        | K::AmbiguousAuthority
        | K::Unauthorized => (Origin::Downstream, Retry::Never),
        K::UpstreamReset(_) | K::Timeout => (Origin::Upstream, Retry::IfIdempotent),
        K::CircuitOpen | K::RateLimited | K::Overloaded | K::NoEndpoints | K::LoopDetected => {
            (Origin::Proxy, Retry::Never)
        }
    };
    for kind in ALL {
        assert_eq!((kind.origin(), kind.retry()), expected(kind), "{kind:?}");
    }
    let cancel = K::UpstreamReset(ResetCause::H2(h2::Reason::CANCEL));
    assert_eq!(cancel.retry(), Retry::IfIdempotent);
    assert_eq!(
        K::UpstreamConnect(ConnectCause::Handshake).retry(),
        Retry::Safe
    );
}

#[test]
fn causes_name_upstream_failures_only() {
    let cause = |kind: ErrorKind| kind.cause();
    assert_eq!(
        cause(ErrorKind::UpstreamConnect(ConnectCause::Refused)),
        Some("connect-refused")
    );
    assert_eq!(
        cause(ErrorKind::UpstreamConnect(ConnectCause::TimedOut)),
        Some("connect-timeout")
    );
    assert_eq!(
        cause(ErrorKind::UpstreamReset(ResetCause::RefusedStream)),
        Some("refused-stream")
    );
    assert_eq!(cause(ErrorKind::Timeout), None);
    assert_eq!(cause(ErrorKind::CircuitOpen), None);
}

#[test]
fn connect_causes_come_from_the_io_error_kind() {
    use std::io::{Error, ErrorKind as Io};
    // The message says "timed out" on purpose: only the kind counts.
    let refused = Error::new(Io::ConnectionRefused, "timed out");
    assert_eq!(ConnectCause::of_io(&refused), ConnectCause::Refused);
    let timed_out = Error::new(Io::TimedOut, "whatever");
    assert_eq!(ConnectCause::of_io(&timed_out), ConnectCause::TimedOut);
    let unreachable = Error::new(Io::HostUnreachable, "no route");
    assert_eq!(
        ConnectCause::of_io(&unreachable),
        ConnectCause::Other(Io::HostUnreachable)
    );
}

#[test]
fn grpc_detection() {
    let mut h = http::HeaderMap::new();
    assert!(!is_grpc(&h));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/grpc+proto"),
    );
    assert!(is_grpc(&h));
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    assert!(!is_grpc(&h));
}
