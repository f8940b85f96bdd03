use std::time::Duration;

use http_body_util::BodyExt;

use super::*;

const ALL: [ErrorKind; 8] = [
    ErrorKind::CircuitOpen,
    ErrorKind::Timeout,
    ErrorKind::RateLimited,
    ErrorKind::Overloaded,
    ErrorKind::NoEndpoints,
    ErrorKind::UpstreamConnect,
    ErrorKind::UpstreamReset,
    ErrorKind::BadRequest,
];

fn expected(kind: ErrorKind) -> (u16, &'static str, &'static str) {
    match kind {
        ErrorKind::CircuitOpen => (503, "14", "circuit-open"),
        ErrorKind::Timeout => (504, "4", "timeout"),
        ErrorKind::RateLimited => (429, "8", "rate-limited"),
        ErrorKind::Overloaded => (503, "14", "overloaded"),
        ErrorKind::NoEndpoints => (503, "14", "no-endpoints"),
        ErrorKind::UpstreamConnect => (502, "14", "upstream-connect"),
        ErrorKind::UpstreamReset => (502, "14", "upstream-reset"),
        ErrorKind::BadRequest => (400, "13", "bad-request"),
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

#[test]
fn retryable_kinds() {
    let retryable: Vec<_> = ALL
        .into_iter()
        .filter(|k| ProxyError::new(*k, "s", "d").retryable())
        .collect();
    assert_eq!(
        retryable,
        [
            ErrorKind::Timeout,
            ErrorKind::UpstreamConnect,
            ErrorKind::UpstreamReset
        ]
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
