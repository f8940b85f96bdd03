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
        identity: None,
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

fn endpoints_doc(port: u16, addresses: &str, extra: &str) -> (DocKey, Document) {
    let yaml = format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ServiceEndpoints\nmetadata: {{name: payments-{port}, namespace: shop}}\n\
         spec: {{service: payments, port: {port}, addresses: [{addresses}]{extra}}}\n"
    );
    (
        DocKey::new("ServiceEndpoints", "shop", &format!("payments-{port}")),
        doc(&yaml),
    )
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("addr")
}

#[test]
fn an_address_maps_to_the_service_port_whose_virtual_ip_or_endpoint_it_is() {
    let registry = Registry::new();
    let (k, d) = endpoints_doc(
        8080,
        "\"10.0.0.7:8080\"",
        ", virtualIPs: [10.96.0.10, \"fd00:96::10\"], appProtocol: http",
    );
    registry.upsert([(k, 1, d)]);
    registry.register(7, reg(Some(8080), "10.0.0.9:4143"));
    // A virtual IP with the service port (v4 and v6).
    assert_eq!(registry.owner(&addr("10.96.0.10:8080")), Some(key(8080)));
    assert_eq!(registry.owner(&addr("[fd00:96::10]:8080")), Some(key(8080)));
    // A static endpoint, a live proxy's pod IP with its service port, and
    // its inbound address.
    assert_eq!(registry.owner(&addr("10.0.0.7:8080")), Some(key(8080)));
    assert_eq!(registry.owner(&addr("10.0.0.9:8080")), Some(key(8080)));
    assert_eq!(registry.owner(&addr("10.0.0.9:4143")), Some(key(8080)));
    // Unknown: another port of the virtual IP, another IP.
    assert_eq!(registry.owner(&addr("10.96.0.10:9090")), None);
    assert_eq!(registry.owner(&addr("10.0.0.8:8080")), None);
    // A registration for every port names no service port: no claim.
    registry.register(8, reg(None, "10.0.0.11:4143"));
    assert_eq!(registry.owner(&addr("10.0.0.11:4143")), None);
    // The snapshot carries what the port declares.
    let snap = registry.current(&key(8080));
    assert_eq!(snap.app_protocol, Some(AppProtocol::Http));
    assert_eq!(snap.virtual_ips.len(), 2);
}

#[tokio::test]
async fn address_watchers_see_the_owner_appear_move_and_go() {
    let registry = Registry::new();
    let vip = addr("10.96.0.10:8080");
    let pod = addr("10.0.0.9:8080");
    let mut at_vip = registry.subscribe_address(vip);
    let mut at_pod = registry.subscribe_address(pod);
    assert_eq!(*at_vip.borrow_and_update(), None);
    assert_eq!(*at_pod.borrow_and_update(), None);

    // A virtual IP appears.
    let (k, d) = endpoints_doc(8080, "", ", virtualIPs: [10.96.0.10]");
    registry.upsert([(k.clone(), 1, d)]);
    assert!(at_vip.has_changed().expect("open"));
    assert_eq!(*at_vip.borrow_and_update(), Some(key(8080)));
    assert!(!at_pod.has_changed().expect("open"));

    // An endpoint registers, then leaves: the pod address follows.
    registry.register(1, reg(Some(8080), "10.0.0.9:4143"));
    assert_eq!(*at_pod.borrow_and_update(), Some(key(8080)));
    registry.deregister(1);
    assert!(at_pod.has_changed().expect("open"));
    assert_eq!(*at_pod.borrow_and_update(), None);

    // The virtual IP moves to another port of the service: the old
    // address is unknown again.
    let (k2, d2) = endpoints_doc(8080, "", ", virtualIPs: [10.96.0.11]");
    registry.upsert([(k, 2, d2)]);
    assert_eq!(*at_vip.borrow_and_update(), None);
    assert_eq!(registry.owner(&addr("10.96.0.11:8080")), Some(key(8080)));
    registry.remove(&k2);
    assert_eq!(registry.owner(&addr("10.96.0.11:8080")), None);
}

#[test]
fn a_virtual_ip_beats_an_endpoint_claiming_the_same_address() {
    let registry = Registry::new();
    // Port 9090's endpoint is the address port 8080's virtual IP names.
    let (k1, d1) = endpoints_doc(9090, "\"10.96.0.10:8080\"", "");
    let (k2, d2) = endpoints_doc(8080, "", ", virtualIPs: [10.96.0.10]");
    registry.upsert([(k1, 1, d1), (k2.clone(), 2, d2)]);
    assert_eq!(registry.owner(&addr("10.96.0.10:8080")), Some(key(8080)));
    registry.remove(&k2);
    assert_eq!(registry.owner(&addr("10.96.0.10:8080")), Some(key(9090)));
}

#[test]
fn a_static_identity_is_expected_at_every_address_of_its_document() {
    let registry = Registry::new();
    let plain = registry.current(&key(8080)).version;
    let (k, d) = endpoints_doc(
        8080,
        "\"10.0.0.7:8080\", \"10.0.0.8:8080\"",
        ", identity: \"spiffe://levee.local/ns/shop/sa/payments\"",
    );
    registry.upsert([(k, 1, d)]);
    registry.register(7, reg(Some(8080), "10.0.0.9:4143"));
    let snap = registry.current(&key(8080));
    let ids: Vec<(String, &str)> = snap
        .identities
        .iter()
        .map(|(a, id)| (a.to_string(), id.as_str()))
        .collect();
    // The registered proxy's address has no static identity.
    assert_eq!(
        ids,
        [
            (
                "10.0.0.7:8080".to_owned(),
                "spiffe://levee.local/ns/shop/sa/payments"
            ),
            (
                "10.0.0.8:8080".to_owned(),
                "spiffe://levee.local/ns/shop/sa/payments"
            ),
        ]
    );
    assert_ne!(snap.version, plain);
    let update = crate::discovery::session::to_update(&snap, 1);
    assert_eq!(
        update.identities.get("10.0.0.7:8080").map(String::as_str),
        Some("spiffe://levee.local/ns/shop/sa/payments")
    );
}

fn spiffe(sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/shop/sa/{sa}")).expect("a SPIFFE ID")
}

fn identities(snap: &ServiceSnapshot) -> Vec<(String, String)> {
    snap.identities
        .iter()
        .map(|(a, id)| (a.to_string(), id.as_str().to_owned()))
        .collect()
}

#[tokio::test]
async fn a_registered_proxy_s_verified_identity_is_expected_at_its_address_until_it_goes() {
    let registry = Registry::new();
    let mut rx = registry.subscribe(&key(8080));
    // Over plaintext: an endpoint, no identity.
    registry.register(1, reg(Some(8080), "10.0.0.9:4143"));
    let plaintext = rx.borrow_and_update().clone();
    assert_eq!(plaintext.endpoints.len(), 1);
    assert!(plaintext.identities.is_empty());
    registry.deregister(1);
    rx.borrow_and_update();

    // Over mTLS: the certificate's identity, in the content version.
    registry.register(
        2,
        Registration {
            identity: Some(spiffe("payments")),
            ..reg(Some(8080), "10.0.0.9:4143")
        },
    );
    assert!(rx.has_changed().expect("open"));
    let meshed = rx.borrow_and_update().clone();
    assert_eq!(
        identities(&meshed),
        [(
            "10.0.0.9:4143".to_owned(),
            "spiffe://cluster.local/ns/shop/sa/payments".to_owned()
        )]
    );
    assert_eq!(meshed.endpoints, plaintext.endpoints);
    assert_ne!(meshed.version, plaintext.version, "identity is content");
    let update = crate::discovery::session::to_update(&meshed, 1);
    assert_eq!(
        update.identities.get("10.0.0.9:4143").map(String::as_str),
        Some("spiffe://cluster.local/ns/shop/sa/payments")
    );

    // A static document declaring another identity at that address: the
    // verified one wins; the document's other address keeps its own.
    let (k, d) = endpoints_doc(
        8080,
        "\"10.0.0.9:4143\", \"10.0.0.7:8080\"",
        ", identity: \"spiffe://cluster.local/ns/shop/sa/legacy\"",
    );
    registry.upsert([(k, 1, d)]);
    let both = rx.borrow_and_update().clone();
    assert_eq!(
        identities(&both),
        [
            (
                "10.0.0.7:8080".to_owned(),
                "spiffe://cluster.local/ns/shop/sa/legacy".to_owned()
            ),
            (
                "10.0.0.9:4143".to_owned(),
                "spiffe://cluster.local/ns/shop/sa/payments".to_owned()
            ),
        ]
    );

    // Deregistered: the address's identity is the document's again.
    registry.deregister(2);
    assert!(rx.has_changed().expect("open"));
    let after = rx.borrow_and_update().clone();
    assert_eq!(
        after
            .identities
            .get(&"10.0.0.9:4143".parse().expect("addr"))
            .map(SpiffeId::as_str),
        Some("spiffe://cluster.local/ns/shop/sa/legacy")
    );
}

#[tokio::test]
async fn workload_identities_reach_the_endpoints_on_their_ips_in_one_batch() {
    let registry = Registry::new();
    let mut rx = registry.subscribe(&key(8080));
    let (k, d) = endpoints_doc(8080, "\"10.0.0.7:8080\"", "");
    let ips = |sa: &str| Some(BTreeMap::from([(addr("10.0.0.8:1").ip(), spiffe(sa))]));
    // The new endpoint and its IP's identity arrive in the same update.
    let (k2, d2) = endpoints_doc(8080, "\"10.0.0.7:8080\", \"10.0.0.8:8080\"", "");
    registry.apply(&[], vec![(k.clone(), 0, d)], None);
    rx.borrow_and_update();
    registry.apply(&[], vec![(k2, 0, d2)], ips("payments"));
    let first = rx.borrow_and_update().clone();
    assert_eq!(
        identities(&first),
        [(
            "10.0.0.8:8080".to_owned(),
            "spiffe://cluster.local/ns/shop/sa/payments".to_owned()
        )]
    );
    // The same identities again: nothing is published.
    registry.apply(&[], Vec::new(), ips("payments"));
    assert!(!rx.has_changed().expect("open"));
    // Another service account at that IP: republished.
    registry.apply(&[], Vec::new(), ips("other"));
    assert!(rx.has_changed().expect("open"));
    assert_ne!(rx.borrow_and_update().version, first.version);
    // None left: plaintext again.
    registry.apply(&[], Vec::new(), Some(BTreeMap::new()));
    assert!(rx.borrow_and_update().identities.is_empty());
    registry.apply(&[k], Vec::new(), None);
    assert!(rx.borrow_and_update().endpoints.is_empty());
}
