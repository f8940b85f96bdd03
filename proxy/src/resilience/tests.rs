use levee_proto::policy::{Document, RouteRequest, parse_documents};

use super::*;

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

fn key() -> ServiceKey {
    ServiceKey {
        name: "payments".into(),
        namespace: "shop".into(),
        port: 8080,
    }
}

const BASE: &str = "    timeouts: {request: 2s, perTry: 500ms}\n    retry: {maxRetries: 2, budget: {percent: 20}}\n    circuitBreaker: {consecutiveFailures: 5}\n    routes:\n      - name: create\n        match: {pathPrefix: /payments, methods: [POST]}\n        timeouts: {request: 5s}\n        retry: {maxRetries: 0}\n";

#[test]
fn routes_get_their_overrides_and_the_rest_the_service_policy() {
    let resilience = Resilience::new(Metrics::new());
    let p = policy(BASE);
    let state = resilience.service(&key(), Some(&p));
    let compiled = state.compiled(Some(&p));
    let create = compiled.route(&RouteRequest::new("POST", "/payments/1"));
    assert_eq!(&*create.name, "create");
    assert_eq!(
        create.request_timeout,
        Some(std::time::Duration::from_secs(5))
    );
    assert_eq!(create.retry.max_retries, 0);
    let other = compiled.route(&RouteRequest::new("GET", "/payments/1"));
    assert_eq!(&*other.name, "default");
    assert_eq!(other.retry.max_retries, 2);
    assert_eq!(
        other.retry.per_try,
        Some(std::time::Duration::from_millis(500))
    );
    assert!(state.breaker().is_some());
    assert!(
        Arc::ptr_eq(&state, &resilience.service(&key(), Some(&p))),
        "one state per service"
    );
}

#[test]
fn no_policy_retries_only_connect_failures_without_a_timeout() {
    let resilience = Resilience::new(Metrics::new());
    let state = resilience.service(&key(), None);
    let route = state.compiled(None).route(&RouteRequest::new("GET", "/"));
    assert_eq!(route.request_timeout, None);
    assert_eq!(route.retry.per_try, None);
    assert_eq!(route.retry.max_retries, 2);
    assert_eq!(
        route.retry.conditions.on.len(),
        2,
        "connect-failure and refused-stream"
    );
    assert!(state.breaker().is_none());
    assert!(state.rate_limit().is_none());
}

#[test]
fn an_update_keeps_the_state_whose_config_did_not_change() {
    let resilience = Resilience::new(Metrics::new());
    let first = policy(BASE);
    let state = resilience.service(&key(), Some(&first));
    let before = state.compiled(Some(&first));
    let budget = before
        .route(&RouteRequest::new("GET", "/"))
        .retry
        .budget
        .clone();
    let breaker = state.breaker().expect("breaker");

    // The same policy re-read (a new Arc): nothing is rebuilt.
    let same = policy(BASE);
    let after = state.compiled(Some(&same));
    let route = after.route(&RouteRequest::new("GET", "/"));
    assert!(Arc::ptr_eq(
        &route,
        &before.route(&RouteRequest::new("GET", "/"))
    ));

    // A different request timeout: routes recompiled, budget and breaker kept.
    let changed = policy(&BASE.replace("request: 2s", "request: 3s"));
    let route = state
        .compiled(Some(&changed))
        .route(&RouteRequest::new("GET", "/"));
    assert_eq!(
        route.request_timeout,
        Some(std::time::Duration::from_secs(3))
    );
    assert!(Arc::ptr_eq(&route.retry.budget, &budget));
    assert!(Arc::ptr_eq(&state.breaker().expect("breaker"), &breaker));

    // A different budget: a fresh budget.
    let rebudgeted = policy(&BASE.replace("percent: 20", "percent: 50"));
    let route = state
        .compiled(Some(&rebudgeted))
        .route(&RouteRequest::new("GET", "/"));
    assert!(!Arc::ptr_eq(&route.retry.budget, &budget));

    // The breaker removed from the policy: no breaker layer any more.
    let unbroken = policy(&BASE.replace("    circuitBreaker: {consecutiveFailures: 5}\n", ""));
    state.compiled(Some(&unbroken));
    assert!(state.breaker().is_none());
}
