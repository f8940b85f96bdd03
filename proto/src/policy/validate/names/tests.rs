use super::*;

fn wire(name: &str, namespace: &str, port: u32) -> v1::ServiceRef {
    v1::ServiceRef {
        name: name.into(),
        namespace: namespace.into(),
        port,
    }
}

fn paths(errors: &PolicyErrors) -> Vec<&str> {
    errors.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn dns_labels_follow_rfc_1123() {
    let longest = "a".repeat(63);
    for good in ["a", "payments", "pay-ments", "a1", "1a", longest.as_str()] {
        assert!(
            check_service_ref("s", &wire(good, "shop", 80)).is_ok(),
            "{good}"
        );
    }
    let too_long = "a".repeat(64);
    for bad in [
        "Payments",
        "pay_ments",
        "-pay",
        "pay-",
        "pay.ments",
        "päy",
        "pay ments",
        too_long.as_str(),
    ] {
        let errors = check_service_ref("s", &wire(bad, "shop", 80)).expect_err(bad);
        assert_eq!(paths(&errors), vec!["s.name"], "{bad}");
        assert!(errors.to_string().contains("DNS label"), "{errors}");
    }
}

#[test]
fn a_service_ref_reports_every_field_and_defaults_the_namespace() {
    let errors = check_service_ref("subscribe.services[1]", &wire("", "Shop", 0))
        .expect_err("three problems");
    assert_eq!(
        paths(&errors),
        vec![
            "subscribe.services[1].name",
            "subscribe.services[1].namespace",
            "subscribe.services[1].port"
        ]
    );
    let key = check_service_ref("s", &wire("payments", "", 8080)).expect("valid");
    assert_eq!(key.to_string(), "payments.default:8080");
}

#[test]
fn hellos_are_checked_field_by_field() {
    let good = v1::Hello {
        service: "web".into(),
        namespace: "shop".into(),
        subscriptions: vec![wire("payments", "shop", 8080)],
        ..Default::default()
    };
    assert!(check_hello(&good).is_ok());
    // A proxy without a service of its own says nothing about it.
    assert!(check_hello(&v1::Hello::default()).is_ok());
    let bad = v1::Hello {
        service: "Web".into(),
        namespace: "shop_1".into(),
        subscriptions: vec![wire("payments", "shop", 8080), wire("a/b", "shop", 80)],
        ..Default::default()
    };
    let errors = check_hello(&bad).expect_err("bad names");
    assert_eq!(
        paths(&errors),
        vec![
            "hello.service",
            "hello.namespace",
            "hello.subscriptions[1].name"
        ]
    );
    assert!(
        errors
            .to_string()
            .contains("hello.service: \"Web\" is not a service name"),
        "{errors}"
    );
}

#[test]
fn document_refs_take_subdomain_names_and_label_namespaces() {
    let reference = |name: &str, namespace: &str| v1::DocumentRef {
        kind: "ResiliencePolicy".into(),
        name: name.into(),
        namespace: namespace.into(),
    };
    assert!(check_document_ref(&reference("payments.v2", "")).is_ok());
    let errors = check_document_ref(&reference("../etc", "Shop")).expect_err("bad");
    assert_eq!(paths(&errors), vec!["ref.name", "ref.namespace"]);
    let errors = check_document_ref(&reference("", "shop")).expect_err("missing");
    assert_eq!(errors.to_string(), "ref.name: missing");
}
