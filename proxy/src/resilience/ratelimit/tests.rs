use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use levee_proto::policy::EffectiveRateLimit;
use tower::{BoxError, Layer, ServiceExt, service_fn};

use super::*;
use crate::errors::{self, ErrorKind, ProxyError};
use crate::metrics::Metrics;

fn cfg(rps: u32, burst: u32, per_client: bool) -> EffectiveRateLimit {
    EffectiveRateLimit {
        requests_per_second: rps,
        burst,
        per_client,
    }
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

#[tokio::test(start_paused = true)]
async fn the_layer_answers_429_with_retry_after_and_ratelimit_headers() {
    let metrics = Metrics::new();
    let limiter = Arc::new(RateLimiter::new(&cfg(2, 2, false)));
    let svc = RateLimitLayer::new(limiter, "payments.shop:8080", &metrics).layer(service_fn(
        |_req: Request<()>| async { Ok::<_, BoxError>(Response::new(())) },
    ));
    for _ in 0..2 {
        svc.clone()
            .oneshot(Request::new(()))
            .await
            .expect("within the burst");
    }
    let error = svc
        .clone()
        .oneshot(Request::new(()))
        .await
        .expect_err("over the limit");
    let error = error.downcast::<ProxyError>().expect("ProxyError");
    assert_eq!(error.kind, ErrorKind::RateLimited);
    assert_eq!(error.retry_after, Some(Duration::from_millis(500)));

    let response = errors::to_response(&error, false);
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        header("ratelimit-policy").as_deref(),
        Some("\"levee\";q=2;w=1")
    );
    assert_eq!(header("ratelimit").as_deref(), Some("\"levee\";r=0;t=1"));
    assert_eq!(header("x-levee-error").as_deref(), Some("rate-limited"));
    let grpc = errors::to_response(&error, true);
    assert_eq!(
        grpc.headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()),
        Some("8")
    );

    tokio::time::advance(Duration::from_millis(500)).await;
    svc.oneshot(Request::new(())).await.expect("refilled");
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"levee_rejected_total{direction="outbound",service="payments.shop:8080",reason="rate-limited"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn inbound_total_limit_counts_every_client_together() {
    let metrics = Metrics::new();
    let limit = InboundRateLimit::new(&cfg(10, 5, false), "app", &metrics);
    let admitted = (0..20)
        .filter(|n| limit.check(Some(ip(*n))).is_ok())
        .count();
    assert_eq!(admitted, 5);
    let error = limit.check(None).expect_err("limited");
    assert_eq!(error.kind, ErrorKind::RateLimited);
    assert!(error.quota.is_some());
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"levee_rejected_total{direction="inbound",service="app",reason="rate-limited"} 16"#
        ),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn per_client_buckets_are_independent() {
    let metrics = Metrics::new();
    let limit = InboundRateLimit::new(&cfg(10, 3, true), "app", &metrics);
    for client in [ip(1), ip(2)] {
        for _ in 0..3 {
            limit.check(Some(client)).expect("own burst");
        }
        assert!(limit.check(Some(client)).is_err());
    }
    tokio::time::advance(Duration::from_millis(100)).await;
    limit.check(Some(ip(1))).expect("refilled one");
    assert!(limit.check(Some(ip(1))).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_clients_cannot_grow_the_table_or_evict_known_clients() {
    let metrics = Metrics::new();
    let evicted = metrics.state_evictions(crate::metrics::StateTable::Clients);
    let table = ClientTable::new(&cfg(1, 2, true), 32, evicted.clone());
    // A known, active client.
    table.check(ip(0)).expect("first");
    // 10,000 distinct addresses: the table stays bounded and most of the
    // flood shares the overflow bucket (burst 2, 1/s).
    let admitted = (1..=10_000).filter(|n| table.check(ip(*n)).is_ok()).count();
    assert!(table.len() <= 32, "table grew to {}", table.len());
    assert!(admitted <= 32 + 2, "flood admitted {admitted}");
    // The known client still has its own bucket: one more in its burst, then limited.
    table.check(ip(0)).expect("own burst");
    assert!(table.check(ip(0)).is_err());

    // Once idle clients age out, new ones get their own buckets again.
    tokio::time::advance(Duration::from_secs(5)).await;
    table.check(ip(20_000)).expect("after sweep");
    table.check(ip(20_000)).expect("own burst after sweep");
    assert!(table.len() <= 32);
    assert!(evicted.get() >= 1, "idle clients dropped are counted");
}

#[tokio::test(start_paused = true)]
async fn a_table_holds_exactly_its_capacity_however_the_shards_fill() {
    let metrics = Metrics::new();
    let evicted = metrics.state_evictions(crate::metrics::StateTable::Clients);
    let table = ClientTable::new(&cfg(1, 2, true), 1024, evicted.clone());
    // 1,024 distinct clients, none idle yet: each gets its own bucket (its
    // first call is in its burst, and its second too), although a keyed
    // hash spreads them unevenly over the shards.
    for n in 0..1024 {
        table.check(ip(n)).expect("a new client's first call");
        table.check(ip(n)).expect("a new client's own burst");
    }
    assert_eq!(table.len(), 1024);
    // The 1,025th shares the overflow bucket; the table does not grow.
    table.check(ip(5_000)).expect("overflow burst");
    table.check(ip(5_001)).expect("overflow burst");
    assert!(
        table.check(ip(5_002)).is_err(),
        "the overflow bucket is shared"
    );
    assert_eq!(table.len(), 1024);
    assert_eq!(evicted.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_table_drops_idle_clients_of_any_shard_for_a_newcomer() {
    let metrics = Metrics::new();
    let evicted = metrics.state_evictions(crate::metrics::StateTable::Clients);
    // Room for 4; the 4 known clients go idle. Each newcomer (most land in
    // a shard none of the idle clients is in) gets a bucket of its own.
    let table = ClientTable::new(&cfg(1, 2, true), 4, evicted.clone());
    for n in 0..4 {
        table.check(ip(n)).expect("known client");
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    for n in 100..104 {
        table.check(ip(n)).expect("newcomer's first call");
        table.check(ip(n)).expect("newcomer's own burst");
    }
    assert_eq!(evicted.get(), 4, "every idle client was dropped");
    assert_eq!(table.len(), 4);
    // Full of active clients now: the next newcomer shares the overflow.
    table.check(ip(200)).expect("overflow burst");
    table.check(ip(201)).expect("overflow burst");
    assert!(
        table.check(ip(202)).is_err(),
        "the overflow bucket is shared"
    );
}

#[tokio::test(start_paused = true)]
async fn outbound_admissions_match_rate_times_time_plus_burst() {
    let limiter = RateLimiter::new(&cfg(50, 10, false));
    let mut admitted = 0;
    // 200 requests per second offered for 10 seconds.
    for _ in 0..2000 {
        admitted += usize::from(limiter.check().is_ok());
        tokio::time::advance(Duration::from_millis(5)).await;
    }
    assert!((509..=511).contains(&admitted), "admitted {admitted}");
}

#[tokio::test(start_paused = true)]
async fn the_inbound_layer_keys_per_client_limits_on_the_client_address() {
    let metrics = Metrics::new();
    let limit = Arc::new(InboundRateLimit::new(&cfg(1, 2, true), "app", &metrics));
    let svc = RateLimitLayer::inbound(limit).layer(service_fn(|_req: Request<()>| async {
        Ok::<_, BoxError>(Response::new(()))
    }));
    let from = |n: u32| {
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(crate::server::ClientAddr((ip(n), 40_000).into()));
        req
    };
    for _ in 0..2 {
        svc.clone().oneshot(from(1)).await.expect("own burst");
    }
    let error = svc.clone().oneshot(from(1)).await.expect_err("limited");
    let error = error.downcast::<ProxyError>().expect("ProxyError");
    assert_eq!(error.kind, ErrorKind::RateLimited);
    assert!(error.detail.contains("per-client"), "{}", error.detail);
    // Another client has its own bucket.
    svc.clone().oneshot(from(2)).await.expect("other client");
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"levee_rejected_total{direction="inbound",service="app",reason="rate-limited"} 1"#
        ),
        "{text}"
    );
}
