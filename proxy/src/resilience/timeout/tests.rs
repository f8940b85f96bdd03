use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::{ServiceExt, service_fn};

use super::*;
use crate::body::BoxError;
use crate::errors::{ErrorKind, ProxyError};

/// Answers after `delay`, echoing the deadline it saw (ms from call) in a header.
fn slow(
    delay: Duration,
) -> impl Service<Request<()>, Response = Response<String>, Error = BoxError> + Clone {
    service_fn(move |req: Request<()>| async move {
        let start = Instant::now();
        let seen = CallContext::get(&req)
            .and_then(|c| c.deadline)
            .map(|d| (d - start).as_millis());
        tokio::time::sleep(delay).await;
        Ok::<_, BoxError>(Response::new(format!("{seen:?}")))
    })
}

fn layer(timeout: Option<Duration>, counter: &Counter) -> RequestTimeoutLayer {
    RequestTimeoutLayer::new(timeout, "svc.ns:80".into(), counter.clone())
}

#[tokio::test(start_paused = true)]
async fn a_fast_answer_passes_and_sees_the_deadline() {
    let counter = Counter::default();
    let svc = tower::Layer::layer(
        &layer(Some(Duration::from_secs(2)), &counter),
        slow(Duration::from_millis(10)),
    );
    let response = svc.oneshot(Request::new(())).await.expect("response");
    assert_eq!(response.body(), "Some(2000)");
    assert_eq!(counter.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_ends_the_call_with_a_timeout_error() {
    let counter = Counter::default();
    let svc = tower::Layer::layer(
        &layer(Some(Duration::from_millis(500)), &counter),
        slow(Duration::from_secs(5)),
    );
    let start = Instant::now();
    let err = svc.oneshot(Request::new(())).await.expect_err("timeout");
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    let err = err.downcast::<ProxyError>().expect("proxy error");
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert_eq!(err.service, "svc.ns:80");
    assert_eq!(counter.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_shorter_grpc_timeout_from_the_caller_wins() {
    let counter = Counter::default();
    let svc = tower::Layer::layer(
        &layer(Some(Duration::from_secs(2)), &counter),
        slow(Duration::ZERO),
    );
    let req = Request::builder()
        .header("grpc-timeout", "300m")
        .body(())
        .expect("request");
    assert_eq!(svc.oneshot(req).await.expect("ok").body(), "Some(300)");

    // No policy timeout: the caller's deadline still applies.
    let svc = tower::Layer::layer(&layer(None, &counter), slow(Duration::from_secs(1)));
    let req = Request::builder()
        .header("grpc-timeout", "100m")
        .body(())
        .expect("request");
    assert!(svc.oneshot(req).await.is_err());
    // A longer caller deadline does not extend the policy's.
    let svc = tower::Layer::layer(
        &layer(Some(Duration::from_millis(50)), &counter),
        slow(Duration::ZERO),
    );
    let req = Request::builder()
        .header("grpc-timeout", "10S")
        .body(())
        .expect("request");
    assert_eq!(svc.oneshot(req).await.expect("ok").body(), "Some(50)");
}

#[tokio::test(start_paused = true)]
async fn no_timeout_means_no_deadline() {
    let counter = Counter::default();
    let svc = tower::Layer::layer(&layer(None, &counter), slow(Duration::from_secs(3600)));
    assert_eq!(
        svc.oneshot(Request::new(())).await.expect("ok").body(),
        "None"
    );
}

#[tokio::test(start_paused = true)]
async fn without_the_caller_deadline_only_the_policy_timeout_counts() {
    let counter = Counter::default();
    let layer = layer(Some(Duration::from_secs(2)), &counter).without_caller_deadline();
    let svc = tower::Layer::layer(&layer, slow(Duration::from_millis(500)));
    let req = Request::builder()
        .header("grpc-timeout", "100m")
        .body(())
        .expect("request");
    // The caller's 100 ms neither shortens the deadline nor ends the call.
    assert_eq!(svc.oneshot(req).await.expect("ok").body(), "Some(2000)");
    assert_eq!(counter.get(), 0);

    let layer = RequestTimeoutLayer::new(None, "svc.ns:80".into(), counter.clone())
        .without_caller_deadline();
    let svc = tower::Layer::layer(&layer, slow(Duration::from_millis(500)));
    let req = Request::builder()
        .header("grpc-timeout", "100m")
        .body(())
        .expect("request");
    assert_eq!(svc.oneshot(req).await.expect("ok").body(), "None");
}
