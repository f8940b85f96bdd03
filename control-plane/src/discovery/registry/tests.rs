use super::*;
use levee_proto::policy::parse_documents;

fn doc(yaml: &str) -> Document {
    parse_documents(yaml).expect("valid").remove(0)
}

fn policy(name: &str, port: Option<u16>, timeout: &str) -> (DocKey, Document) {
    let port = port.map(|p| format!(", port: {p}")).unwrap_or_default();
    let yaml = format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  target: {{service: payments{port}}}\n  outbound:\n    timeouts: {{request: {timeout}}}\n"
    );
    (DocKey::new("ResiliencePolicy", "shop", name), doc(&yaml))
}

fn key(port: u16) -> ServiceKey {
    ServiceKey {
        name: "payments".into(),
        namespace: "shop".into(),
        port,
    }
}

fn reg(port: Option<u16>, addr: &str) -> Registration {
    Registration {
        service: "payments".into(),
        namespace: "shop".into(),
        port,
        addr: addr.parse().expect("addr"),
    }
}

#[test]
fn a_policy_naming_the_port_beats_one_without() {
    let registry = Registry::new();
    let (k1, d1) = policy("any-port", None, "1s");
    let (k2, d2) = policy("exact", Some(8080), "2s");
    registry.upsert([(k1, 3, d1), (k2, 4, d2)]);
    let exact = registry.current(&key(8080));
    assert_eq!(
        exact.policy.as_ref().map(|p| p.metadata.name.as_str()),
        Some("exact")
    );
    assert_eq!(exact.policy_revision, 4);
    let other = registry.current(&key(9090));
    assert_eq!(
        other.policy.as_ref().map(|p| p.metadata.name.as_str()),
        Some("any-port")
    );
    assert!(other.version.starts_with("3-"), "{}", other.version);
}

#[test]
fn endpoints_merge_static_and_registered_sorted_without_duplicates() {
    let registry = Registry::new();
    let endpoints = doc(
        "apiVersion: levee.dev/v1alpha1\nkind: ServiceEndpoints\nmetadata: {name: payments, namespace: shop}\n\
         spec: {service: payments, port: 8080, addresses: [\"127.0.0.1:9002\", \"127.0.0.1:9001\"]}\n",
    );
    registry.upsert([(
        DocKey::new("ServiceEndpoints", "shop", "payments"),
        1,
        endpoints,
    )]);
    registry.register(1, reg(Some(8080), "127.0.0.1:9001"));
    registry.register(2, reg(None, "127.0.0.1:4143"));
    registry.register(3, reg(Some(7070), "127.0.0.1:5000"));
    let snap = registry.current(&key(8080));
    let got: Vec<String> = snap.endpoints.iter().map(|e| e.to_string()).collect();
    assert_eq!(got, ["127.0.0.1:4143", "127.0.0.1:9001", "127.0.0.1:9002"]);
}

#[tokio::test]
async fn watchers_see_changes_and_identical_content_is_not_resent() {
    let registry = Registry::new();
    let mut rx = registry.subscribe(&key(8080));
    let first = rx.borrow_and_update().clone();
    assert!(first.policy.is_none());
    assert!(first.endpoints.is_empty());

    registry.register(7, reg(Some(8080), "127.0.0.1:4143"));
    assert!(rx.has_changed().expect("open"), "registration must publish");
    let second = rx.borrow_and_update().clone();
    assert_ne!(second.version, first.version);

    // Another service's change and a no-op leave this watcher alone.
    registry.register(
        8,
        Registration {
            service: "orders".into(),
            ..reg(None, "127.0.0.1:1")
        },
    );
    registry.deregister(99);
    assert!(!rx.has_changed().expect("open"));

    registry.deregister(7);
    assert!(rx.has_changed().expect("open"));
    assert_eq!(
        rx.borrow_and_update().version,
        first.version,
        "same content, same version"
    );
}

#[test]
fn channels_without_receivers_are_dropped() {
    let registry = Registry::new();
    let rx = registry.subscribe(&key(8080));
    assert_eq!(registry.watched(), 1);
    drop(rx);
    registry.register(1, reg(None, "127.0.0.1:1"));
    assert_eq!(registry.watched(), 0);
}

#[tokio::test]
async fn a_policy_moved_to_another_service_leaves_the_old_one() {
    let registry = Registry::new();
    let (k, d) = policy("moving", Some(8080), "1s");
    registry.upsert([(k.clone(), 1, d)]);
    let mut payments = registry.subscribe(&key(8080));
    assert!(payments.borrow_and_update().policy.is_some());
    let orders = doc(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: moving, namespace: shop}\n\
         spec:\n  target: {service: orders, port: 8080}\n",
    );
    registry.upsert([(k, 2, orders)]);
    assert!(
        payments.has_changed().expect("open"),
        "the old service must be republished"
    );
    assert!(payments.borrow_and_update().policy.is_none());
    let orders_key = ServiceKey {
        name: "orders".into(),
        ..key(8080)
    };
    assert_eq!(registry.current(&orders_key).policy_revision, 2);
}
