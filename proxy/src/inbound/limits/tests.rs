//! The inbound stack against policy updates, on tokio's paused clock: what
//! an update keeps (a used-up burst, held bulkhead slots) and what it
//! starts over (a changed limit).

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use levee_proto::policy::parse_documents;
use tower::{Service, service_fn};

use super::*;
use crate::body;
use crate::errors::{ErrorKind, ProxyError};
use crate::metrics::Metrics;
use crate::server::ClientAddr;
use crate::snapshot::Snapshot;

/// `spec.inbound` of `echo.test` is `inbound`.
fn install(shared: &Shared, inbound: &str) {
    let yaml = format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: echo, namespace: test}}\n\
         spec:\n  target: {{service: echo}}\n  inbound: {inbound}\n"
    );
    let documents = parse_documents(&yaml).expect("valid policy");
    let snapshot = Snapshot::from_documents(documents, "test", "test").expect("snapshot");
    shared.install(snapshot);
}

/// The limits of `echo` in front of an app that answers 200 after `delay`.
fn limits(
    shared: &Arc<Shared>,
    delay: Duration,
) -> InboundLimits<
    impl Service<
        Request<BoxBody>,
        Response = Response<BoxBody>,
        Error = BoxError,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
> {
    let app = service_fn(move |_req: Request<BoxBody>| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, BoxError>(Response::new(body::empty()))
    });
    let key = ServiceKey::from_authority("echo", &shared.namespace, 8080).ok();
    InboundLimits::new(
        shared.clone(),
        key,
        "echo".into(),
        app,
        crate::resilience::timeout::TimeoutDefaults::off(),
    )
}

fn request(client: [u8; 4]) -> Request<BoxBody> {
    let mut req = Request::new(body::empty());
    req.extensions_mut()
        .insert(ClientAddr(SocketAddr::from((client, 40_000))));
    req
}

/// The status the caller would see: 200, or the proxy error's.
async fn status<A>(limits: &InboundLimits<A>, client: [u8; 4]) -> StatusCode
where
    A: ProxyService,
{
    match limits.call(request(client)).await {
        Ok(response) => response.status(),
        Err(error) => error
            .downcast::<ProxyError>()
            .expect("ProxyError")
            .kind
            .status(),
    }
}

const CLIENT: [u8; 4] = [127, 0, 0, 2];

#[tokio::test(start_paused = true)]
async fn an_update_that_keeps_the_rate_limit_keeps_the_used_up_burst() {
    let shared = Arc::new(Shared::new("test".into(), Metrics::new()));
    install(&shared, "{rateLimit: {requestsPerSecond: 1, burst: 2}}");
    let limits = limits(&shared, Duration::ZERO);
    for _ in 0..2 {
        assert_eq!(status(&limits, CLIENT).await, StatusCode::OK);
    }
    assert_eq!(status(&limits, CLIENT).await, StatusCode::TOO_MANY_REQUESTS);

    // A new policy version that touches only the request timeout.
    install(
        &shared,
        "{rateLimit: {requestsPerSecond: 1, burst: 2}, timeouts: {request: 5s}}",
    );
    assert_eq!(shared.snapshot.load().version, 2);
    assert_eq!(
        status(&limits, CLIENT).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the burst used up before the update is still used up"
    );
    // The limiter refills at its own pace, as if nothing happened.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(status(&limits, CLIENT).await, StatusCode::OK);
    assert_eq!(status(&limits, CLIENT).await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(start_paused = true)]
async fn an_update_that_changes_the_rate_limit_starts_a_fresh_burst() {
    let shared = Arc::new(Shared::new("test".into(), Metrics::new()));
    install(&shared, "{rateLimit: {requestsPerSecond: 1, burst: 2}}");
    let limits = limits(&shared, Duration::ZERO);
    for _ in 0..2 {
        assert_eq!(status(&limits, CLIENT).await, StatusCode::OK);
    }
    assert_eq!(status(&limits, CLIENT).await, StatusCode::TOO_MANY_REQUESTS);

    install(&shared, "{rateLimit: {requestsPerSecond: 1, burst: 3}}");
    for i in 0..3 {
        assert_eq!(status(&limits, CLIENT).await, StatusCode::OK, "request {i}");
    }
    assert_eq!(status(&limits, CLIENT).await, StatusCode::TOO_MANY_REQUESTS);

    // Removed: every request passes.
    install(&shared, "{timeouts: {request: 5s}}");
    for _ in 0..10 {
        assert_eq!(status(&limits, CLIENT).await, StatusCode::OK);
    }
}

#[tokio::test(start_paused = true)]
async fn the_stack_is_built_once_per_policy_version() {
    let shared = Arc::new(Shared::new("test".into(), Metrics::new()));
    let limits = limits(&shared, Duration::ZERO);
    // Nothing loaded yet: the bare app.
    assert_eq!(limits.current.load().version, 0);
    assert_eq!(status(&limits, CLIENT).await, StatusCode::OK);
    install(&shared, "{rateLimit: {requestsPerSecond: 1, burst: 1}}");
    let _ = limits.stack();
    let built = limits.current.load_full();
    assert_eq!(built.version, 1);
    let _ = limits.stack();
    assert!(
        Arc::ptr_eq(&built, &limits.current.load_full()),
        "the same version reuses the built stack"
    );
}

#[tokio::test(start_paused = true)]
async fn an_update_keeps_the_bulkhead_and_the_calls_holding_its_slots() {
    let shared = Arc::new(Shared::new("test".into(), Metrics::new()));
    install(&shared, "{concurrency: {maxInFlight: 1, maxQueued: 0}}");
    let limits = Arc::new(limits(&shared, Duration::from_secs(10)));
    let held = tokio::spawn({
        let limits = limits.clone();
        async move { status(&limits, CLIENT).await }
    });
    // Let the first call take the slot.
    tokio::task::yield_now().await;
    assert_eq!(
        status(&limits, CLIENT).await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    install(
        &shared,
        "{concurrency: {maxInFlight: 1, maxQueued: 0}, timeouts: {request: 20s}}",
    );
    let refused = limits.call(request(CLIENT)).await;
    let error = refused
        .expect_err("the slot is still held")
        .downcast::<ProxyError>()
        .expect("ProxyError");
    assert_eq!(error.kind, ErrorKind::Overloaded);
    assert_eq!(held.await.expect("join"), StatusCode::OK);
    assert_eq!(status(&limits, CLIENT).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn the_request_timeout_includes_the_queued_wait_and_answers_504() {
    let shared = Arc::new(Shared::new("test".into(), Metrics::new()));
    install(
        &shared,
        "{concurrency: {maxInFlight: 1, maxQueued: 1}, timeouts: {request: 3s}}",
    );
    let limits = Arc::new(limits(&shared, Duration::from_secs(2)));
    let first = tokio::spawn({
        let limits = limits.clone();
        async move { status(&limits, CLIENT).await }
    });
    tokio::task::yield_now().await;
    // Queued 2 s behind the first call, then 2 s of its own: past 3 s.
    let start = tokio::time::Instant::now();
    let error = limits
        .call(request(CLIENT))
        .await
        .expect_err("timed out")
        .downcast::<ProxyError>()
        .expect("ProxyError");
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert_eq!(error.service, "echo");
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(first.await.expect("join"), StatusCode::OK);
    let text = shared.metrics.encode();
    assert!(
        text.contains(r#"levee_timeouts_total{service="echo",route="default",kind="request"} 1"#),
        "{text}"
    );
}
