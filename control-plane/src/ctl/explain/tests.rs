use super::*;

fn policy(yaml: &str) -> ResiliencePolicy {
    match parse_documents(yaml).expect("valid").remove(0) {
        Document::Policy(p) => p,
        Document::Endpoints(_) => panic!("not a policy"),
    }
}

const PAYMENTS: &str = "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
metadata: {name: payments, namespace: shop}\nspec:\n  target: {service: payments}\n  outbound:\n    \
timeouts: {request: 2s}\n    retry: {maxRetries: 3}\n    routes:\n      - name: create\n        \
match: {pathPrefix: /payments, methods: [POST]}\n        timeouts: {request: 5s}\n        retry: {maxRetries: 0}\n";

fn source(e: &Explanation, path: &str) -> (String, Value) {
    let f = e
        .fields
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no {path} in {e:?}"));
    (f.source.clone(), f.value.clone())
}

#[test]
fn route_service_and_default_values_are_labelled() {
    let p = policy(PAYMENTS);
    let e = explain_policy(Some(&p), &RouteRequest::new("POST", "/payments/1"));
    assert_eq!(e.route, "create");
    assert_eq!(e.policy.as_deref(), Some("shop/payments"));
    assert_eq!(
        source(&e, "outbound.timeouts.request"),
        ("route create".into(), json!("5s"))
    );
    assert_eq!(
        source(&e, "outbound.retry.maxRetries"),
        ("route create".into(), json!(0))
    );
    assert_eq!(source(&e, "outbound.timeouts.connect").0, "default");
    assert_eq!(
        source(&e, "inbound.requestTimeout"),
        ("default".into(), Value::Null)
    );
}

#[test]
fn unmatched_route_uses_service_values() {
    let p = policy(PAYMENTS);
    let e = explain_policy(Some(&p), &RouteRequest::new("GET", "/payments/1"));
    assert_eq!(e.route, "default");
    assert_eq!(
        source(&e, "outbound.timeouts.request"),
        ("service".into(), json!("2s"))
    );
    assert_eq!(
        source(&e, "outbound.retry.maxRetries"),
        ("service".into(), json!(3))
    );
}

#[test]
fn no_policy_is_all_defaults() {
    let e = explain_policy(None, &RouteRequest::new("GET", "/"));
    assert!(e.policy.is_none());
    assert!(e.fields.iter().all(|f| f.source == "default"), "{e:?}");
    assert!(
        e.fields
            .iter()
            .any(|f| f.path == "outbound.retry.maxRetries")
    );
}
