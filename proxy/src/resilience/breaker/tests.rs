use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use tower::{BoxError, Layer, ServiceExt, service_fn};

use super::machine::tests::config;
use super::*;
use crate::body::BoxBody;

/// An upstream answering with the status in `status`, counting calls.
fn upstream(
    status: Arc<AtomicU16>,
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<()>,
    Response = Response<BoxBody>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<BoxBody>, BoxError>>,
> + Clone {
    service_fn(move |_req: Request<()>| {
        let status = status.load(Ordering::SeqCst);
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let response = Response::builder()
                .status(status)
                .body(crate::body::empty())
                .map_err(BoxError::from)?;
            Ok(response)
        }
    })
}

async fn call<S>(svc: &S) -> Result<Response<BoxBody>, BoxError>
where
    S: tower::Service<Request<()>, Response = Response<BoxBody>, Error = BoxError> + Clone,
{
    svc.clone().oneshot(Request::new(())).await
}

#[tokio::test(start_paused = true)]
async fn opens_fails_fast_and_closes_through_half_open() {
    let metrics = Metrics::new();
    let breaker = Arc::new(ServiceBreaker::new(
        "payments.shop:8080",
        &config(),
        &metrics,
    ));
    let status = Arc::new(AtomicU16::new(503));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc =
        ServiceBreakerLayer::new(breaker.clone()).layer(upstream(status.clone(), calls.clone()));

    for _ in 0..3 {
        let response = call(&svc).await.expect("upstream answers");
        assert_eq!(response.status(), 503);
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    // Fail fast: the upstream is not called.
    let error = call(&svc).await.expect_err("open breaker rejects");
    let error = error.downcast::<ProxyError>().expect("a ProxyError");
    assert_eq!(error.kind, ErrorKind::CircuitOpen);
    let retry_after = error.retry_after.expect("retry after");
    assert!(retry_after > Duration::from_millis(800) && retry_after <= Duration::from_secs(1));
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // The upstream recovers; after the open time, two probes close the breaker.
    status.store(200, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(1)).await;
    call(&svc).await.expect("probe 1");
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    call(&svc).await.expect("probe 2");
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    let text = metrics.encode();
    for expected in [
        r#"levee_circuit_state{service="payments.shop:8080",endpoint=""} 0"#,
        r#"levee_circuit_transitions_total{service="payments.shop:8080",endpoint="",to="open"} 1"#,
        r#"levee_circuit_transitions_total{service="payments.shop:8080",endpoint="",to="half-open"} 1"#,
        r#"levee_circuit_transitions_total{service="payments.shop:8080",endpoint="",to="closed"} 1"#,
        r#"levee_rejected_total{direction="outbound",service="payments.shop:8080",reason="circuit-open"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_cancelled_calls_are_not_failures() {
    let metrics = Metrics::new();
    let breaker = Arc::new(ServiceBreaker::new("s", &config(), &metrics));
    let status = Arc::new(AtomicU16::new(404));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBreakerLayer::new(breaker.clone()).layer(upstream(status, calls));
    for _ in 0..10 {
        call(&svc).await.expect("404 passes");
    }
    assert_eq!(breaker.state(), CircuitState::Closed);

    // A caller that hangs up (the future is dropped) does not count.
    let hanging =
        ServiceBreakerLayer::new(breaker.clone()).layer(service_fn(|_req: Request<()>| {
            std::future::pending::<Result<Response<BoxBody>, BoxError>>()
        }));
    for _ in 0..10 {
        let pending = hanging.clone().oneshot(Request::new(()));
        let timed_out = tokio::time::timeout(Duration::from_millis(1), pending).await;
        assert!(timed_out.is_err());
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn errors_count_and_state_survives_an_unchanged_config() {
    let metrics = Metrics::new();
    let breaker = Arc::new(ServiceBreaker::new("s", &config(), &metrics));
    let failing =
        ServiceBreakerLayer::new(breaker.clone()).layer(service_fn(|_req: Request<()>| async {
            Err::<Response<BoxBody>, BoxError>(Box::new(ProxyError::new(
                ErrorKind::UpstreamConnect(crate::errors::ConnectCause::Refused),
                "s",
                "refused",
            )))
        }));
    for _ in 0..3 {
        let error = call(&failing).await.expect_err("connect failure");
        let error = error.downcast::<ProxyError>().expect("ProxyError");
        assert_eq!(
            error.kind,
            ErrorKind::UpstreamConnect(crate::errors::ConnectCause::Refused)
        );
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    breaker.update_config(&config());
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "same config keeps state"
    );
    let mut changed = config();
    changed.consecutive_failures = 10;
    breaker.update_config(&changed);
    assert_eq!(
        breaker.state(),
        CircuitState::Closed,
        "new config starts over"
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_rejects_beyond_its_probes() {
    let metrics = Metrics::new();
    let breaker = Arc::new(ServiceBreaker::new("s", &config(), &metrics));
    for _ in 0..3 {
        breaker
            .try_acquire()
            .expect("closed")
            .record(&Outcome::HttpStatus(500));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    let p1 = breaker.try_acquire().expect("probe 1");
    let p2 = breaker.try_acquire().expect("probe 2");
    let error = breaker.try_acquire().expect_err("probes all out");
    assert_eq!(error.kind, ErrorKind::CircuitOpen);
    drop(p1); // cancelled: frees its slot
    let p3 = breaker.try_acquire().expect("slot freed");
    p2.record(&Outcome::Success);
    p3.record(&Outcome::Error(ErrorKind::Timeout));
    assert_eq!(breaker.state(), CircuitState::Open);
    // The second trip stays open longer than the first.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(breaker.try_acquire().is_err());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(breaker.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_at_its_deadline_is_a_timeout() {
    use crate::resilience::call::CallContext;

    let metrics = Metrics::new();
    let breaker = Arc::new(ServiceBreaker::new("s", &config(), &metrics));
    let hanging =
        ServiceBreakerLayer::new(breaker.clone()).layer(service_fn(|_req: Request<()>| {
            std::future::pending::<Result<Response<BoxBody>, BoxError>>()
        }));
    // Dropped before the deadline: the caller hung up, not a failure.
    for _ in 0..5 {
        let mut req = Request::new(());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        CallContext::of(&mut req).deadline = Some(deadline);
        let call = hanging.clone().oneshot(req);
        assert!(
            tokio::time::timeout(Duration::from_millis(10), call)
                .await
                .is_err()
        );
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    // Dropped by an outer timeout (at the deadline): a timeout failure.
    for _ in 0..3 {
        let mut req = Request::new(());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(10);
        CallContext::of(&mut req).deadline = Some(deadline);
        let call = hanging.clone().oneshot(req);
        assert!(tokio::time::timeout_at(deadline, call).await.is_err());
    }
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn local_rejections_are_neither_failures_nor_probe_successes() {
    let metrics = Metrics::new();
    let breaker = Arc::new(ServiceBreaker::new("s", &config(), &metrics));
    for _ in 0..10 {
        breaker
            .try_acquire()
            .expect("closed")
            .record(&Outcome::Error(ErrorKind::Overloaded));
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    for _ in 0..3 {
        breaker
            .try_acquire()
            .expect("closed")
            .record(&Outcome::HttpStatus(502));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 0..5 {
        breaker
            .try_acquire()
            .expect("the probe slot comes back each time")
            .record(&Outcome::Error(ErrorKind::Overloaded));
    }
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
}

/// An upstream answering 200 with a body that fails after its first chunk
/// (a process killed mid-response), or that ends cleanly.
fn streaming(fail: bool) -> Response<BoxBody> {
    use http_body_util::{BodyExt, StreamBody};
    let mut frames: Vec<Result<http_body::Frame<bytes::Bytes>, BoxError>> = vec![Ok(
        http_body::Frame::data(bytes::Bytes::from_static(b"part")),
    )];
    if fail {
        frames.push(Err("connection reset mid-body".into()));
    }
    let body = StreamBody::new(futures_util::stream::iter(frames));
    Response::new(BodyExt::boxed(body))
}

#[tokio::test(start_paused = true)]
async fn a_body_that_fails_mid_stream_is_a_failure_and_a_clean_one_a_success() {
    use http_body_util::BodyExt;

    let metrics = Metrics::new();
    let breaker = Arc::new(ServiceBreaker::new("s", &config(), &metrics));
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let svc = {
        let fail = fail.clone();
        ServiceBreakerLayer::new(breaker.clone()).layer(service_fn(move |_req: Request<()>| {
            let fail = fail.load(Ordering::SeqCst);
            async move { Ok::<_, BoxError>(streaming(fail)) }
        }))
    };
    // Clean bodies, read to the end: successes.
    for _ in 0..5 {
        let response = call(&svc).await.expect("head");
        response.into_body().collect().await.expect("a clean body");
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    // The head says 200; the body breaks: failures, the breaker opens.
    fail.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let response = call(&svc).await.expect("head");
        assert_eq!(response.status(), 200);
        assert!(response.into_body().collect().await.is_err());
    }
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_body_read_to_its_known_length_is_a_success_without_a_final_poll() {
    use http_body_util::BodyExt;

    let metrics = Metrics::new();
    let breaker = Arc::new(ServiceBreaker::new("s", &config(), &metrics));
    // Open it, then let the open time pass: the next calls are probes.
    for _ in 0..3 {
        breaker
            .try_acquire()
            .expect("closed")
            .record(&Outcome::HttpStatus(500));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    let svc = ServiceBreakerLayer::new(breaker.clone()).layer(service_fn(
        |_req: Request<()>| async move {
            Ok::<_, BoxError>(Response::new(crate::body::full("eleven byte")))
        },
    ));
    for _ in 0..2 {
        let mut body = call(&svc).await.expect("head").into_body();
        // As hyper's server does: poll until the body says it ended, then drop.
        while !http_body::Body::is_end_stream(&body) {
            body.frame().await.expect("a frame").expect("no error");
        }
        drop(body);
    }
    assert_eq!(
        breaker.state(),
        CircuitState::Closed,
        "both probes succeeded"
    );
}

/// Slow answers (200s, after 600 ms) trip a breaker whose config judges
/// slow calls, timed from admission to the response head; the same answers
/// leave a breaker without `slowCall` closed (its calls are not timed).
#[tokio::test(start_paused = true)]
async fn slow_calls_trip_only_a_breaker_that_judges_them() {
    use levee_proto::policy::EffectiveSlowCall;

    let slow_upstream = service_fn(|_req: Request<()>| async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        Ok::<_, BoxError>(Response::new(crate::body::empty()))
    });
    let mut judging = config();
    judging.consecutive_failures = 0;
    judging.slow_call = Some(EffectiveSlowCall {
        duration: Duration::from_millis(500).into(),
        percent: 80.0,
    });
    let mut lenient = judging.clone();
    lenient.slow_call = None;
    for (cfg, trips) in [(judging, true), (lenient, false)] {
        let breaker = Arc::new(ServiceBreaker::new(
            "payments.shop:8080",
            &cfg,
            &Metrics::new(),
        ));
        let svc = ServiceBreakerLayer::new(breaker.clone()).layer(slow_upstream);
        for _ in 0..10 {
            let response = call(&svc).await.expect("upstream answers");
            assert_eq!(response.status(), 200);
            // The outcome is recorded when the body ends.
            drop(response);
        }
        let expected = if trips {
            CircuitState::Open
        } else {
            CircuitState::Closed
        };
        assert_eq!(breaker.state(), expected, "slowCall judged: {trips}");
    }
}
