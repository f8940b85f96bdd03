use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{ServiceExt, service_fn};

use super::*;
use crate::body;
use crate::errors::{ErrorKind, ProxyError};
use crate::resilience::call::CallContext;

/// What the scripted upstream does on one attempt.
enum Step {
    Status(u16, &'static [(&'static str, &'static str)]),
    Fail(ErrorKind),
    Hang,
}

/// What one attempt looked like to the upstream.
#[derive(Debug)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
    attempt_deadline: bool,
    at: Instant,
}

#[derive(Clone, Default)]
struct Upstream {
    steps: Arc<Mutex<VecDeque<Step>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn new(steps: Vec<Step>) -> Self {
        Upstream {
            steps: Arc::new(Mutex::new(steps.into())),
            seen: Arc::default(),
        }
    }

    fn service(
        &self,
    ) -> impl Service<Request<BoxBody>, Response = Response<BoxBody>, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static {
        let this = self.clone();
        service_fn(move |req: Request<BoxBody>| {
            let this = this.clone();
            async move {
                let (parts, body) = req.into_parts();
                let step = this.steps.lock().expect("lock").pop_front();
                if let Some(Step::Fail(kind)) = step {
                    // A connect failure never reads the body.
                    this.record(&parts, Bytes::new());
                    return Err(ProxyError::new(kind, "svc", "scripted").into());
                }
                let bytes = body.collect().await?.to_bytes();
                this.record(&parts, bytes);
                match step {
                    Some(Step::Status(code, headers)) => {
                        let mut r = Response::new(body::empty());
                        *r.status_mut() = StatusCode::from_u16(code)?;
                        for (k, v) in headers {
                            r.headers_mut()
                                .insert(*k, http::HeaderValue::from_static(v));
                        }
                        Ok(r)
                    }
                    Some(Step::Hang) => std::future::pending().await,
                    _ => Ok(Response::new(body::empty())),
                }
            }
        })
    }

    fn record(&self, parts: &http::request::Parts, body: Bytes) {
        self.seen.lock().expect("lock").push(Seen {
            headers: parts.headers.clone(),
            body,
            attempt_deadline: parts
                .extensions
                .get::<CallContext>()
                .and_then(|c| c.attempt_deadline)
                .is_some(),
            at: Instant::now(),
        });
    }

    fn attempts(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

fn config(on: &[&str], grpc_on: &[&str], max_retries: u32, metrics: &Metrics) -> RetryConfig {
    let conditions = Conditions {
        on: on.iter().map(|c| c.parse().expect("condition")).collect(),
        grpc_on: grpc_on.iter().map(|c| c.parse().expect("code")).collect(),
        retry_non_idempotent: false,
    };
    RetryConfig {
        service: "svc".into(),
        max_retries,
        metrics: RetryMetrics::new(metrics, "svc", "r", &conditions),
        conditions,
        backoff: Backoff {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        },
        per_try: None,
        max_replay_bytes: 1024,
        honor_retry_after: true,
        budget: Arc::new(RetryBudget::new(BudgetSettings {
            percent: 20.0,
            min_per_second: 10,
            window: Duration::from_secs(10),
        })),
    }
}

async fn send(
    upstream: &Upstream,
    config: RetryConfig,
    req: Request<BoxBody>,
) -> Result<Response<BoxBody>, BoxError> {
    Retry::new(upstream.service(), Arc::new(config))
        .oneshot(req)
        .await
}

fn request(method: Method, body: &'static str) -> Request<BoxBody> {
    let mut req = Request::new(body::full(body));
    *req.method_mut() = method;
    req
}

fn count(metrics: &Metrics, needle: &str) -> u64 {
    let text = metrics.encode();
    text.lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn a_503_is_retried_with_the_body_replayed() {
    let metrics = Metrics::new();
    let upstream = Upstream::new(vec![Step::Status(503, &[]), Step::Status(200, &[])]);
    let cfg = config(&["gateway-error"], &[], 2, &metrics);
    let response = send(&upstream, cfg, request(Method::PUT, "payload"))
        .await
        .expect("ok");
    assert_eq!(response.status(), 200);
    let seen = upstream.seen.lock().expect("lock");
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body == "payload"), "{seen:?}");
    assert!(
        seen[1].at - seen[0].at <= Duration::from_millis(25),
        "first backoff ≤ base"
    );
    assert_eq!(
        count(
            &metrics,
            r#"levee_retries_total{service="svc",route="r",reason="503"}"#
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn max_retries_bounds_the_attempts_and_the_last_response_is_returned() {
    let metrics = Metrics::new();
    let upstream = Upstream::new((0..5).map(|_| Step::Status(503, &[])).collect());
    let cfg = config(&["503"], &[], 2, &metrics);
    let response = send(&upstream, cfg, request(Method::GET, ""))
        .await
        .expect("response");
    assert_eq!(response.status(), 503);
    assert_eq!(upstream.attempts(), 3);
}

#[tokio::test(start_paused = true)]
async fn post_is_retried_only_with_an_idempotency_key() {
    let metrics = Metrics::new();
    let upstream = Upstream::new(vec![Step::Status(503, &[]), Step::Status(200, &[])]);
    let cfg = config(&["503"], &[], 2, &metrics);
    let response = send(&upstream, cfg, request(Method::POST, "x"))
        .await
        .expect("response");
    assert_eq!(response.status(), 503);
    assert_eq!(upstream.attempts(), 1);

    let upstream = Upstream::new(vec![Step::Status(503, &[]), Step::Status(200, &[])]);
    let mut req = request(Method::POST, "x");
    req.headers_mut()
        .insert("idempotency-key", "k1".parse().expect("value"));
    let cfg = config(&["503"], &[], 2, &metrics);
    assert_eq!(send(&upstream, cfg, req).await.expect("ok").status(), 200);
    assert_eq!(upstream.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_connect_failure_is_retried_whatever_the_method() {
    let metrics = Metrics::new();
    let upstream = Upstream::new(vec![
        Step::Fail(ErrorKind::UpstreamConnect(
            crate::errors::ConnectCause::Refused,
        )),
        Step::Status(200, &[]),
    ]);
    let cfg = config(&["connect-failure", "refused-stream"], &[], 2, &metrics);
    let response = send(&upstream, cfg, request(Method::POST, "body"))
        .await
        .expect("ok");
    assert_eq!(response.status(), 200);
    let seen = upstream.seen.lock().expect("lock");
    assert_eq!(seen[1].body, "body");
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_returns_the_last_response_and_is_counted() {
    let metrics = Metrics::new();
    let upstream = Upstream::new(vec![Step::Status(503, &[]), Step::Status(200, &[])]);
    let mut cfg = config(&["503"], &[], 2, &metrics);
    cfg.budget = Arc::new(RetryBudget::new(BudgetSettings {
        percent: 0.0,
        min_per_second: 0,
        window: Duration::from_secs(10),
    }));
    let response = send(&upstream, cfg, request(Method::GET, ""))
        .await
        .expect("response");
    assert_eq!(response.status(), 503);
    assert_eq!(upstream.attempts(), 1);
    assert_eq!(
        count(
            &metrics,
            r#"levee_retry_budget_exhausted_total{service="svc",route="r"}"#
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_hits_the_per_try_timeout_and_the_retry_answers() {
    let metrics = Metrics::new();
    let upstream = Upstream::new(vec![Step::Hang, Step::Status(200, &[])]);
    let mut cfg = config(&["timeout"], &[], 2, &metrics);
    cfg.per_try = Some(Duration::from_millis(100));
    let start = Instant::now();
    let response = send(&upstream, cfg, request(Method::GET, ""))
        .await
        .expect("ok");
    assert_eq!(response.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(start.elapsed() <= Duration::from_millis(125));
    assert!(
        upstream
            .seen
            .lock()
            .expect("lock")
            .iter()
            .all(|s| s.attempt_deadline)
    );
    assert_eq!(
        count(
            &metrics,
            r#"levee_timeouts_total{service="svc",route="r",kind="per-try"}"#
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_after_the_request_deadline() {
    let metrics = Metrics::new();
    let upstream = Upstream::new(vec![
        Step::Status(503, &[("retry-after", "1")]),
        Step::Status(200, &[]),
    ]);
    let cfg = config(&["503"], &[], 2, &metrics);
    let mut req = request(Method::GET, "");
    CallContext::of(&mut req).deadline = Some(Instant::now() + Duration::from_millis(500));
    let response = send(&upstream, cfg, req).await.expect("response");
    assert_eq!(response.status(), 503, "waiting 1s would pass the deadline");
    assert_eq!(upstream.attempts(), 1);
}

/// `Retry-After: 18446744073709551615` (u64::MAX seconds) with a request
/// deadline: the wait is compared with the deadline without overflowing
/// `Instant + Duration` (which used to panic), and no retry is made.
#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_before_a_deadline_stops_retries_without_panicking() {
    let metrics = Metrics::new();
    let upstream = Upstream::new(vec![
        Step::Status(503, &[("retry-after", "18446744073709551615")]),
        Step::Status(200, &[]),
    ]);
    let cfg = config(&["503"], &[], 2, &metrics);
    let mut req = request(Method::GET, "");
    CallContext::of(&mut req).deadline = Some(Instant::now() + Duration::from_secs(30));
    let response = send(&upstream, cfg, req).await.expect("response");
    assert_eq!(response.status(), 503);
    assert_eq!(upstream.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_when_longer_than_the_backoff() {
    let metrics = Metrics::new();
    let upstream = Upstream::new(vec![
        Step::Status(429, &[("retry-after", "2")]),
        Step::Status(200, &[]),
    ]);
    let cfg = config(&["429"], &[], 2, &metrics);
    let response = send(&upstream, cfg, request(Method::GET, ""))
        .await
        .expect("ok");
    assert_eq!(response.status(), 200);
    let seen = upstream.seen.lock().expect("lock");
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn grpc_unavailable_is_retried_with_the_remaining_time_sent_along() {
    let metrics = Metrics::new();
    let upstream = Upstream::new(vec![
        Step::Status(
            200,
            &[("grpc-status", "14"), ("content-type", "application/grpc")],
        ),
        Step::Status(200, &[("grpc-status", "0")]),
    ]);
    let cfg = config(&[], &["unavailable"], 2, &metrics);
    let mut req = request(Method::POST, "msg");
    req.headers_mut()
        .insert("content-type", "application/grpc".parse().expect("value"));
    CallContext::of(&mut req).deadline = Some(Instant::now() + Duration::from_secs(1));
    let response = send(&upstream, cfg, req).await.expect("ok");
    assert_eq!(response.headers()["grpc-status"], "0");
    let seen = upstream.seen.lock().expect("lock");
    assert_eq!(seen.len(), 2);
    for s in seen.iter() {
        let sent = timeout::grpc::parse(&s.headers["grpc-timeout"]).expect("grpc-timeout");
        assert!(
            sent <= Duration::from_secs(1) && sent > Duration::from_millis(700),
            "{sent:?}"
        );
    }
    assert_eq!(
        count(
            &metrics,
            r#"levee_retries_total{service="svc",route="r",reason="grpc-unavailable"}"#
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_replay_limit_is_not_retried() {
    let metrics = Metrics::new();
    let upstream = Upstream::new(vec![Step::Status(503, &[]), Step::Status(200, &[])]);
    let mut cfg = config(&["503"], &[], 2, &metrics);
    cfg.max_replay_bytes = 4;
    let response = send(&upstream, cfg, request(Method::PUT, "too large"))
        .await
        .expect("response");
    assert_eq!(response.status(), 503);
    assert_eq!(upstream.attempts(), 1);
}

use crate::resilience::timeout;
