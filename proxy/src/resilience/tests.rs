use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use levee_proto::policy::{Document, ResiliencePolicy, RouteRequest, parse_documents};
use tower::service_fn;

use super::*;
use crate::body::{self, BoxError};
use crate::errors::{ErrorKind, ProxyError};
use crate::metrics::{CircuitState, Metrics};

fn policy(outbound: &str) -> Arc<ResiliencePolicy> {
    let yaml = format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: p, namespace: shop}}\n\
         spec:\n  target: {{service: payments, port: 8080}}\n  outbound:\n{outbound}"
    );
    match parse_documents(&yaml).expect("valid policy").pop() {
        Some(Document::Policy(p)) => Arc::new(p),
        other => panic!("not a policy: {other:?}"),
    }
}

/// An endpoint service answering each attempt with the next status of
/// `script` (the last one repeats), counting attempts.
fn scripted(
    script: &'static [u16],
    sent: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<BoxBody>,
    Response = Response<BoxBody>,
    Error = BoxError,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |_req: Request<BoxBody>| {
        let n = sent.fetch_add(1, Ordering::SeqCst);
        let status = script.get(n).or(script.last()).copied().unwrap_or(200);
        async move {
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::from_u16(status).map_err(BoxError::from)?;
            Ok::<_, BoxError>(response)
        }
    })
}

fn destination(policy: Option<&Arc<ResiliencePolicy>>, script: &'static [u16]) -> Destination {
    let sent = Arc::new(AtomicUsize::new(0));
    let d = Destination::new(
        "payments.shop:8080",
        policy,
        &Metrics::new(),
        scripted(script, sent),
    );
    let addrs: Arc<[SocketAddr]> = Arc::from([SocketAddr::from(([127, 0, 0, 1], 9))]);
    d.balancer.set_endpoints(&addrs);
    d
}

const BASE: &str = "    timeouts: {request: 2s, perTry: 500ms}\n    retry: {maxRetries: 2, budget: {percent: 20}}\n    circuitBreaker: {consecutiveFailures: 5}\n    routes:\n      - name: create\n        match: {pathPrefix: /payments, methods: [POST]}\n        timeouts: {request: 5s}\n        retry: {maxRetries: 0}\n";

#[test]
fn routes_get_their_overrides_and_the_rest_the_service_policy() {
    let p = policy(BASE);
    let d = destination(Some(&p), &[200]);
    let routes = d.routes_for(Some(&p));
    let create = &routes
        .route(&RouteRequest::new("POST", "/payments/1"))
        .config;
    assert_eq!(&*create.name, "create");
    assert_eq!(create.request_timeout, Some(Duration::from_secs(5)));
    assert_eq!(create.retry.max_retries, 0);
    let other = &routes
        .route(&RouteRequest::new("GET", "/payments/1"))
        .config;
    assert_eq!(&*other.name, "default");
    assert_eq!(other.retry.max_retries, 2);
    assert_eq!(other.retry.per_try, Some(Duration::from_millis(500)));
    assert!(d.breaker().is_some());
    assert!(routes.has_policy());
    assert!(
        Arc::ptr_eq(&routes, &d.routes_for(Some(&p))),
        "the same policy is not compiled again"
    );
}

#[test]
fn no_policy_retries_only_connect_failures_without_a_timeout() {
    let d = destination(None, &[200]);
    let routes = d.routes_for(None);
    assert!(!routes.has_policy());
    let route = &routes.route(&RouteRequest::new("GET", "/")).config;
    assert_eq!(route.request_timeout, None);
    assert_eq!(route.retry.per_try, None);
    assert_eq!(route.retry.max_retries, 2);
    assert_eq!(
        route.retry.conditions.on.len(),
        2,
        "connect-failure and refused-stream"
    );
    assert!(d.breaker().is_none());
    assert!(d.rate_limiter().is_none());
}

#[test]
fn an_update_keeps_the_state_whose_config_did_not_change() {
    let first = policy(BASE);
    let d = destination(Some(&first), &[200]);
    let before = d.routes_for(Some(&first));
    let get = RouteRequest::new("GET", "/");
    let budget = before.route(&get).config.retry.budget.clone();
    let breaker = d.breaker().expect("breaker");

    // The same policy re-read (a new Arc): nothing is rebuilt.
    let same = policy(BASE);
    let after = d.routes_for(Some(&same));
    assert!(Arc::ptr_eq(
        &after.route(&get).config,
        &before.route(&get).config
    ));

    // A different request timeout: routes recompiled, budget and breaker kept.
    let changed = policy(&BASE.replace("request: 2s", "request: 3s"));
    let routes = d.routes_for(Some(&changed));
    let route = &routes.route(&get).config;
    assert_eq!(route.request_timeout, Some(Duration::from_secs(3)));
    assert!(Arc::ptr_eq(&route.retry.budget, &budget));
    assert!(Arc::ptr_eq(&d.breaker().expect("breaker"), &breaker));

    // A different budget: a fresh budget.
    let rebudgeted = policy(&BASE.replace("percent: 20", "percent: 50"));
    let routes = d.routes_for(Some(&rebudgeted));
    assert!(!Arc::ptr_eq(
        &routes.route(&get).config.retry.budget,
        &budget
    ));

    // The breaker removed from the policy: no breaker layer any more.
    let unbroken = policy(&BASE.replace("    circuitBreaker: {consecutiveFailures: 5}\n", ""));
    d.routes_for(Some(&unbroken));
    assert!(d.breaker().is_none());
}

/// Retries on 503 with a breaker that opens after three failed calls.
const LOGICAL: &str = "    retry: {maxRetries: 2, on: [503], backoff: {base: 1ms, max: 1ms}, budget: {percent: 100}}\n    circuitBreaker: {consecutiveFailures: 3, failureOn: [5xx, timeout]}\n";

async fn send(d: &Destination, policy: &Arc<ResiliencePolicy>) -> Result<StatusCode, ProxyError> {
    let routes = d.routes_for(Some(policy));
    let route = routes.route(&RouteRequest::new("GET", "/"));
    let req = Request::get("http://payments.shop:8080/")
        .body(body::empty())
        .expect("request");
    match route.call(req).await {
        Ok(response) => Ok(response.status()),
        Err(e) => Err(*e.downcast::<ProxyError>().expect("a proxy error")),
    }
}

#[tokio::test(start_paused = true)]
async fn the_service_breaker_judges_calls_after_their_retries() {
    let p = policy(LOGICAL);
    // Every call fails its first attempt and succeeds on the retry: many
    // more failed attempts than the threshold, but no failed call.
    let sent = Arc::new(AtomicUsize::new(0));
    let recovering = Destination::new(
        "payments.shop:8080",
        Some(&p),
        &Metrics::new(),
        service_fn({
            let sent = sent.clone();
            move |_req: Request<BoxBody>| {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut response = Response::new(body::empty());
                    if n.is_multiple_of(2) {
                        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    }
                    Ok::<_, BoxError>(response)
                }
            }
        }),
    );
    let addrs: Arc<[SocketAddr]> = Arc::from([SocketAddr::from(([127, 0, 0, 1], 9))]);
    recovering.balancer.set_endpoints(&addrs);
    for _ in 0..20 {
        assert_eq!(send(&recovering, &p).await, Ok(StatusCode::OK));
    }
    assert_eq!(
        sent.load(Ordering::SeqCst),
        40,
        "each call took two attempts"
    );
    let breaker = recovering.breaker().expect("breaker");
    assert_eq!(breaker.state(), CircuitState::Closed);

    // A dead service: three failed calls (nine attempts) open it, and the
    // next call is refused without an attempt.
    let dead = destination(Some(&p), &[503]);
    for _ in 0..3 {
        assert_eq!(send(&dead, &p).await, Ok(StatusCode::SERVICE_UNAVAILABLE));
    }
    let breaker = dead.breaker().expect("breaker");
    assert_eq!(breaker.state(), CircuitState::Open);
    let refused = send(&dead, &p).await.expect_err("refused");
    assert_eq!(refused.kind, ErrorKind::CircuitOpen);
}

#[tokio::test(start_paused = true)]
async fn a_request_timeout_is_one_failed_call_for_the_service_breaker() {
    let p = policy(&format!("    timeouts: {{request: 100ms}}\n{LOGICAL}"));
    let hanging = Destination::new(
        "payments.shop:8080",
        Some(&p),
        &Metrics::new(),
        service_fn(|_req: Request<BoxBody>| {
            std::future::pending::<Result<Response<BoxBody>, BoxError>>()
        }),
    );
    let addrs: Arc<[SocketAddr]> = Arc::from([SocketAddr::from(([127, 0, 0, 1], 9))]);
    hanging.balancer.set_endpoints(&addrs);
    let breaker = hanging.breaker().expect("breaker");
    for n in 1..=3 {
        let err = send(&hanging, &p).await.expect_err("times out");
        assert_eq!(err.kind, ErrorKind::Timeout, "call {n}");
    }
    assert_eq!(breaker.state(), CircuitState::Open);
}

/// The request deadline still fires on time when each attempt has a sooner
/// per-try timeout (whose timer stands in for the deadline's while armed):
/// two attempts time out per try, the third would outlast the deadline, so
/// it runs under the request deadline alone, which answers at 1 s.
#[tokio::test(start_paused = true)]
async fn the_request_deadline_fires_after_sooner_per_try_timeouts() {
    let p = policy(
        "    timeouts: {request: 1s, perTry: 400ms}\n    retry: {maxRetries: 5, on: [timeout], backoff: {base: 1ms, max: 1ms}, budget: {percent: 100, minPerSecond: 100}}\n",
    );
    let sent = Arc::new(AtomicUsize::new(0));
    let hanging = Destination::new(
        "payments.shop:8080",
        Some(&p),
        &Metrics::new(),
        service_fn({
            let sent = sent.clone();
            move |_req: Request<BoxBody>| {
                sent.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<Response<BoxBody>, BoxError>>()
            }
        }),
    );
    let addrs: Arc<[SocketAddr]> = Arc::from([SocketAddr::from(([127, 0, 0, 1], 9))]);
    hanging.balancer.set_endpoints(&addrs);
    let routes = hanging.routes_for(Some(&p));
    let route = routes.route(&RouteRequest::new("GET", "/"));
    for _ in 0..3 {
        let mut req = Request::get("http://payments.shop:8080/")
            .body(body::empty())
            .expect("request");
        // As the outbound listener sends it: with the call's attempts record.
        call::CallContext::of(&mut req).attempts();
        let start = tokio::time::Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(5), route.call(req)).await;
        let err = answered
            .expect("answered by the request deadline")
            .expect_err("times out");
        let err = err.downcast::<ProxyError>().expect("a proxy error");
        let took = start.elapsed();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(err.detail.starts_with("request timeout"), "{}", err.detail);
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_millis(1010),
            "{took:?}"
        );
    }
    assert_eq!(sent.load(Ordering::SeqCst), 9, "three attempts per call");
}
