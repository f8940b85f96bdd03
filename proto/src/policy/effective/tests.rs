//! Route lookup precedence, field-by-field merge and defaults.

use super::*;
use crate::policy::{Document, Duration, OutboundPolicy, RouteRequest, parse_documents};

/// Parses an outbound section written as an indented Rust string literal
/// (the first line at column 0, the others indented alike).
fn outbound(yaml: &str) -> OutboundPolicy {
    let mut lines = yaml.lines();
    let first = lines.next().unwrap_or_default();
    let rest: Vec<&str> = lines.collect();
    let indent = rest
        .iter()
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut text = first.to_owned();
    for line in rest {
        text.push('\n');
        text.push_str(&line[indent..]);
    }
    serde_norway::from_str(&text).expect("outbound yaml")
}

fn design_outbound() -> OutboundPolicy {
    let docs = parse_documents(super::super::parse::tests::DESIGN_EXAMPLE).expect("design example");
    match docs.into_iter().next() {
        Some(Document::Policy(p)) => p.spec.outbound,
        other => panic!("expected a policy, got {other:?}"),
    }
}

#[test]
fn no_policy_means_safe_defaults() {
    let e = OutboundPolicy::default().effective(&RouteRequest::new("GET", "/"));
    assert_eq!(e.route, DEFAULT_ROUTE);
    assert_eq!(e.timeouts.request, None);
    assert_eq!(e.timeouts.per_try, None);
    assert_eq!(e.timeouts.connect, Duration::from_secs(1));
    assert_eq!(e.timeouts.idle, Duration::from_secs(60));
    assert_eq!(e.retry.max_retries, 2);
    assert_eq!(
        e.retry.on,
        vec![
            FailureCondition::ConnectFailure,
            FailureCondition::RefusedStream
        ]
    );
    assert!(e.retry.grpc_on.is_empty());
    assert_eq!(e.retry.backoff_base, Duration::from_millis(25));
    assert_eq!(e.retry.backoff_max, Duration::from_millis(250));
    assert_eq!(e.retry.budget_percent, 20.0);
    assert_eq!(e.retry.budget_min_per_second, 10);
    assert!(!e.retry.retry_non_idempotent);
    assert_eq!(e.retry.max_replay_bytes, 65536);
    assert!(e.retry.honor_retry_after);
    assert_eq!(e.circuit_breaker, None);
    assert_eq!(e.rate_limit, None);
    assert_eq!(e.concurrency, None);
}

#[test]
fn matching_route_overrides_only_what_it_sets() {
    let o = design_outbound();
    let e = o.effective(&RouteRequest::new("POST", "/payments/42"));
    assert_eq!(e.route, "create-payment");
    assert_eq!(e.timeouts.request, Some(Duration::from_secs(5)));
    assert_eq!(
        e.timeouts.per_try,
        Some(Duration::from_millis(500)),
        "inherited"
    );
    assert_eq!(e.retry.max_retries, 0);
    assert_eq!(e.retry.on.len(), 5, "inherited from the service");
    assert_eq!(e.retry.grpc_on, vec![GrpcStatus::Unavailable]);
    assert_eq!(e.rate_limit.map(|r| r.burst), Some(50));
    assert_eq!(e.concurrency.map(|c| c.max_queued), Some(64));
    let b = e.circuit_breaker.expect("breaker");
    assert_eq!(b.slow_call.map(|s| s.percent), Some(80.0));
    assert_eq!(b.open_max, Duration::from_secs(60));

    let e = o.effective(&RouteRequest::new("GET", "/payments/42"));
    assert_eq!(e.route, DEFAULT_ROUTE);
    assert_eq!(e.timeouts.request, Some(Duration::from_secs(2)));
    assert_eq!(e.retry.max_retries, 2);
}

#[test]
fn first_matching_route_wins() {
    let o = outbound(
        "routes:
           - {name: narrow, match: {pathPrefix: /a/b}, retry: {maxRetries: 1}}
           - {name: wide, match: {pathPrefix: /a}, retry: {maxRetries: 5}}
           - {name: never, match: {pathPrefix: /a/b}, retry: {maxRetries: 9}}",
    );
    assert_eq!(
        o.effective(&RouteRequest::new("GET", "/a/b/c")).route,
        "narrow"
    );
    assert_eq!(o.effective(&RouteRequest::new("GET", "/a/x")).route, "wide");
    assert_eq!(
        o.effective(&RouteRequest::new("GET", "/a/x"))
            .retry
            .max_retries,
        5
    );
    assert_eq!(
        o.effective(&RouteRequest::new("GET", "/z")).route,
        DEFAULT_ROUTE
    );
    let (index, _) = o
        .find_route(&RouteRequest::new("GET", "/a/b"))
        .expect("a route");
    assert_eq!(index, 0);
}

#[test]
fn backoff_merges_field_by_field_and_max_defaults_to_ten_times_base() {
    let o = outbound(
        "retry: {backoff: {base: 100ms}}
         routes:
           - {name: a, match: {path: /a}, retry: {backoff: {max: 5s}}}
           - {name: b, match: {path: /b}, retry: {backoff: {base: 10ms}}}",
    );
    let service = o.effective(&RouteRequest::new("GET", "/"));
    assert_eq!(service.retry.backoff_base, Duration::from_millis(100));
    assert_eq!(service.retry.backoff_max, Duration::from_secs(1));
    let a = o.effective(&RouteRequest::new("GET", "/a"));
    assert_eq!(a.retry.backoff_base, Duration::from_millis(100));
    assert_eq!(a.retry.backoff_max, Duration::from_secs(5));
    let b = o.effective(&RouteRequest::new("GET", "/b"));
    assert_eq!(b.retry.backoff_base, Duration::from_millis(10));
    assert_eq!(b.retry.backoff_max, Duration::from_millis(100));
}

#[test]
fn zero_timeout_on_a_route_turns_the_service_timeout_off() {
    let o = outbound(
        "timeouts: {request: 2s, perTry: 1s}
         routes: [{name: stream, match: {grpc: {method: Watch}}, timeouts: {request: 0s}}]",
    );
    let e = o.effective(&RouteRequest::new("POST", "/shop.v1.Feed/Watch"));
    assert_eq!(e.route, "stream");
    assert_eq!(e.timeouts.request, None);
    assert_eq!(e.timeouts.per_try, Some(Duration::from_secs(1)));
}

#[test]
fn empty_lists_override_instead_of_inheriting() {
    let o = outbound(
        "retry: {on: [5xx], grpcOn: [unavailable]}
         routes: [{name: a, match: {path: /a}, retry: {on: [], grpcOn: []}}]",
    );
    let e = o.effective(&RouteRequest::new("GET", "/a"));
    assert!(e.retry.on.is_empty() && e.retry.grpc_on.is_empty());
}

#[test]
fn limits_resolve_their_defaults() {
    let o = outbound(
        "{rateLimit: {requestsPerSecond: 7}, concurrency: {maxInFlight: 3}, circuitBreaker: {}}",
    );
    let e = o.effective(&RouteRequest::new("GET", "/"));
    assert_eq!(
        e.rate_limit,
        Some(EffectiveRateLimit {
            requests_per_second: 7,
            burst: 7,
            per_client: false
        })
    );
    assert_eq!(
        e.concurrency.map(|c| (c.max_in_flight, c.max_queued)),
        Some((3, 0))
    );
    let b = e.circuit_breaker.expect("breaker");
    assert_eq!(b.failure_on, defaults::FAILURE_ON.to_vec());
    assert_eq!(b.consecutive_failures, 5);
    assert_eq!(b.failure_rate_percent, 50.0);
    assert_eq!(b.failure_rate_min_requests, 20);
    assert_eq!(b.slow_call, None);
    assert_eq!(b.half_open_probes, 3);
    assert_eq!(b.max_ejected_percent, 50.0);
}

#[test]
fn inbound_resolves() {
    let i: crate::policy::InboundPolicy = serde_norway::from_str(
        "{rateLimit: {requestsPerSecond: 100, burst: 20, perClient: true}, timeouts: {request: 10s}}",
    )
    .expect("inbound");
    let e = i.effective();
    assert_eq!(
        e.rate_limit.map(|r| (r.burst, r.per_client)),
        Some((20, true))
    );
    assert_eq!(e.concurrency, None);
    assert_eq!(e.request_timeout, Some(Duration::from_secs(10)));
    assert_eq!(
        crate::policy::InboundPolicy::default()
            .effective()
            .request_timeout,
        None
    );
}
