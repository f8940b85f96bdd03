use levee_proto::policy::{Document, parse_documents};

use super::*;

fn key(name: &str, port: u16) -> ServiceKey {
    ServiceKey {
        name: name.into(),
        namespace: "shop".into(),
        port,
    }
}

fn policy(service: &str, port: Option<u16>) -> pb::ResiliencePolicy {
    let port = port.map(|p| format!(", port: {p}")).unwrap_or_default();
    let yaml = format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: {service}-policy, namespace: shop}}\n\
         spec: {{target: {{service: {service}{port}}}, outbound: {{timeouts: {{request: 2s}}}}}}\n"
    );
    match parse_documents(&yaml).expect("valid").remove(0) {
        Document::Policy(p) => pb::ResiliencePolicy::from(&p),
        Document::Endpoints(_) => unreachable!("a policy"),
    }
}

fn update(
    key: &ServiceKey,
    version: &str,
    policy: Option<pb::ResiliencePolicy>,
    endpoints: &[&str],
) -> pb::ServiceUpdate {
    pb::ServiceUpdate {
        identities: Default::default(),
        service: Some(pb::ServiceRef::from(key)),
        version: version.into(),
        nonce: "n".into(),
        policy_revision: 7,
        policy,
        endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
        ..Default::default()
    }
}

const CHECKS: LocalChecks = LocalChecks { outbound: None };

#[test]
fn an_update_becomes_policy_and_endpoints_of_the_snapshot() {
    let payments = key("payments", 8080);
    let orders = key("orders", 80);
    let mut services = Services::default();
    let applied = services.apply(
        &update(
            &payments,
            "7-a",
            Some(policy("payments", Some(8080))),
            &["127.0.0.1:9001", "127.0.0.1:9002"],
        ),
        CHECKS,
    );
    assert_eq!(applied, Ok((payments.clone(), Applied::Changed)));
    // No policy, no endpoints: the service is known but runs on defaults and DNS.
    let applied = services.apply(&update(&orders, "0-b", None, &[]), CHECKS);
    assert_eq!(applied, Ok((orders.clone(), Applied::Changed)));

    let snapshot = services.snapshot("control-plane:test".into());
    assert_eq!(snapshot.source, "control-plane:test");
    assert_eq!(snapshot.policy_revision, Some(7));
    let p = snapshot.policy_for(&payments).expect("payments policy");
    assert_eq!(p.metadata.name, "payments-policy");
    assert!(snapshot.policy_for(&orders).is_none());
    assert_eq!(
        snapshot.endpoints.get(&payments).map(|e| e.len()),
        Some(2),
        "{snapshot:?}"
    );
    assert!(
        !snapshot.endpoints.contains_key(&orders),
        "empty = DNS fallback"
    );
    assert_eq!(snapshot.documents.len(), 1);
}

#[test]
fn a_port_less_policy_serving_two_ports_is_listed_once() {
    let mut services = Services::default();
    for port in [80, 8080] {
        let k = key("payments", port);
        services
            .apply(
                &update(&k, &format!("v{port}"), Some(policy("payments", None)), &[]),
                CHECKS,
            )
            .expect("accepted");
    }
    let snapshot = services.snapshot(String::new());
    assert_eq!(snapshot.documents.len(), 1);
    assert!(snapshot.policy_for(&key("payments", 80)).is_some());
    assert!(snapshot.policy_for(&key("payments", 8080)).is_some());
}

#[test]
fn the_same_version_is_not_reapplied() {
    let k = key("payments", 80);
    let mut services = Services::default();
    let u = update(&k, "1-x", None, &["127.0.0.1:1"]);
    assert_eq!(
        services.apply(&u, CHECKS),
        Ok((k.clone(), Applied::Changed))
    );
    assert_eq!(services.apply(&u, CHECKS), Ok((k, Applied::Unchanged)));
}

#[test]
fn an_invalid_policy_is_refused_and_the_last_good_state_stays() {
    let k = key("payments", 80);
    let mut services = Services::default();
    let good = update(&k, "1-good", Some(policy("payments", Some(80))), &[]);
    services.apply(&good, CHECKS).expect("good");

    let mut broken = policy("payments", Some(80));
    broken.spec = None;
    let refused = services
        .apply(&update(&k, "2-bad", Some(broken), &[]), CHECKS)
        .expect_err("an invalid policy is refused");
    assert_eq!(refused.service, Some(k.clone()));
    assert!(refused.reason.contains("spec"), "{}", refused.reason);
    assert!(refused.reason.contains("missing"), "{}", refused.reason);
    assert_eq!(services.get(&k).map(|s| s.version.as_str()), Some("1-good"));

    // A policy for another service is refused too.
    let other = update(&k, "3-other", Some(policy("orders", Some(80))), &[]);
    let refused = services.apply(&other, CHECKS).expect_err("wrong target");
    assert!(refused.reason.contains("targets orders"), "{refused}");
}

#[test]
fn bad_endpoints_and_loops_are_refused() {
    let k = key("payments", 80);
    let mut services = Services::default();
    let refused = services
        .apply(&update(&k, "1", None, &["nowhere"]), CHECKS)
        .expect_err("not an address");
    assert!(refused.reason.contains("\"nowhere\""), "{refused}");

    let checks = LocalChecks {
        outbound: Some("127.0.0.1:4140".parse().expect("addr")),
    };
    let refused = services
        .apply(&update(&k, "2", None, &["127.0.0.1:4140"]), checks)
        .expect_err("loop");
    assert!(
        refused.reason.contains("own outbound listener"),
        "{refused}"
    );
    // Other spellings of the same listener (compared as addresses).
    for spelling in ["[::ffff:127.0.0.1]:4140", "0.0.0.0:4140", "[::]:4140"] {
        assert!(
            services
                .apply(&update(&k, "2", None, &[spelling]), checks)
                .is_err(),
            "{spelling}"
        );
    }
    let wildcard = LocalChecks {
        outbound: Some("0.0.0.0:4140".parse().expect("addr")),
    };
    for spelling in ["127.0.0.1:4140", "127.0.0.9:4140", "[::1]:4140"] {
        assert!(
            services
                .apply(&update(&k, "3", None, &[spelling]), wildcard)
                .is_err(),
            "{spelling}"
        );
    }
    // Another port on the same host is fine.
    assert!(
        services
            .apply(&update(&k, "4", None, &["127.0.0.1:4143"]), wildcard)
            .is_ok()
    );
    assert!(services.get(&k).is_some());
}

#[test]
fn unreadable_service_refs_are_refused_without_a_key() {
    let mut services = Services::default();
    let mut u = update(&key("payments", 80), "1", None, &[]);
    u.service = Some(pb::ServiceRef {
        name: "payments".into(),
        namespace: String::new(),
        port: 70_000,
    });
    let refused = services.apply(&u, CHECKS).expect_err("bad port");
    assert_eq!(refused.service, None);
    u.service = None;
    assert!(services.apply(&u, CHECKS).is_err());
    assert!(services.is_empty());
}
