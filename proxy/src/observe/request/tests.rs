//! The metrics' `outcome` label follows the one gRPC rule, whether the
//! status comes in the head (trailers-only) or in the trailers, and a gRPC
//! stream that ends without any status is a failure.

use std::time::Instant;

use http::HeaderValue;
use http_body_util::StreamBody;
use levee_proto::policy::GrpcStatus;

use super::*;
use crate::metrics::{Direction, Metrics};

const LABELS: &str = r#"direction="outbound",service="svc",route="r""#;

fn count(metrics: &Metrics, code: &str, outcome: &str) -> u64 {
    let series = format!(r#"levee_requests_total{{{LABELS},code="{code}",outcome="{outcome}"}} "#);
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

fn observation(metrics: &Metrics) -> Observation {
    Observation::new(
        metrics.requests(Direction::Outbound, "svc", "r"),
        Instant::now(),
        true,
    )
}

fn trailers(status: Option<&'static str>) -> HeaderMap {
    let mut map = HeaderMap::new();
    if let Some(s) = status {
        map.insert("grpc-status", HeaderValue::from_static(s));
    }
    map
}

/// A 200 gRPC response whose body is one message and then `trailers`.
fn streamed(trailers: Option<HeaderMap>) -> Response<BoxBody> {
    let mut frames: Vec<Result<Frame<Bytes>, BoxError>> =
        vec![Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0")))];
    if let Some(t) = trailers {
        frames.push(Ok(Frame::trailers(t)));
    }
    Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
        frames,
    ))))
}

#[tokio::test]
async fn every_grpc_code_in_the_head_or_the_trailers_follows_the_rule() {
    for status in GrpcStatus::ALL {
        let metrics = Metrics::new();
        let code = status.code().to_string();
        let value = HeaderValue::from(status.code());

        let mut head_only = Response::new(crate::body::empty());
        head_only.headers_mut().insert("grpc-status", value.clone());
        drop(observation(&metrics).response(head_only));

        let mut t = HeaderMap::new();
        t.insert("grpc-status", value);
        let response = observation(&metrics).response(streamed(Some(t)));
        response.into_body().collect().await.expect("body");

        let (want, other) = if status.is_failure() {
            ("failure", "success")
        } else {
            ("success", "failure")
        };
        assert_eq!(count(&metrics, &code, want), 2, "{status}");
        assert_eq!(count(&metrics, &code, other), 0, "{status}");
    }
}

#[tokio::test]
async fn garbage_is_unknown_and_a_missing_status_is_a_failure() {
    let metrics = Metrics::new();
    let response = observation(&metrics).response(streamed(Some(trailers(Some("oops")))));
    response.into_body().collect().await.expect("body");
    assert_eq!(
        count(&metrics, "2", "failure"),
        1,
        "garbage reads as UNKNOWN"
    );

    // The stream ended without trailers: no status at all.
    let response = observation(&metrics).response(streamed(None));
    response.into_body().collect().await.expect("body");
    // Trailers without a grpc-status.
    let response = observation(&metrics).response(streamed(Some(trailers(None))));
    response.into_body().collect().await.expect("body");
    assert_eq!(count(&metrics, "200", "failure"), 2);
}
