use super::*;
use crate::policy::{DEFAULT_NAMESPACE, parse_documents};

fn policy(name: &str, namespace: Option<&str>, target: &str) -> Document {
    let ns = namespace.map_or_else(String::new, |ns| format!(", namespace: {ns}"));
    let yaml = format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
         metadata: {{name: {name}{ns}}}\nspec: {{target: {target}}}\n"
    );
    parse_documents(&yaml).expect("valid").remove(0)
}

fn endpoints(name: &str, namespace: Option<&str>, port: u16) -> Document {
    let ns = namespace.map_or_else(String::new, |ns| format!(", namespace: {ns}"));
    let yaml = format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ServiceEndpoints\n\
         metadata: {{name: {name}{ns}}}\nspec: {{service: payments, port: {port}}}\n"
    );
    parse_documents(&yaml).expect("valid").remove(0)
}

#[test]
fn the_target_fills_in_the_default_namespace() {
    let unset = policy("a", None, "{service: payments, port: 8080}");
    let written = policy("b", Some("default"), "{service: payments, port: 8080}");
    assert_eq!(unset.target("default"), written.target("default"));
    assert_ne!(unset.target("shop"), written.target("shop"));
    assert_eq!(
        unset.target("shop").to_string(),
        "payments.shop:8080",
        "display"
    );
    let every = policy("c", Some("shop"), "{service: payments}");
    assert_eq!(
        every.target("default").to_string(),
        "payments.shop (every port)"
    );
    assert_eq!(every.target("default").service_key(), None);
    assert_eq!(
        endpoints("e", None, 80).target("shop").service_key(),
        Some(ServiceKey::new("payments", "shop", 80))
    );
}

#[test]
fn a_batch_naming_one_target_with_and_without_the_default_namespace_is_refused() {
    let batch = [
        policy("a", None, "{service: payments, port: 8080}"),
        policy("b", Some("default"), "{service: payments, port: 8080}"),
    ];
    let errors = check_batch(&batch, DEFAULT_NAMESPACE).expect_err("duplicate");
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].document, 2);
    assert_eq!(errors.0[0].path, "spec.target");
    assert_eq!(
        errors.0[0].message,
        "document 1 (ResiliencePolicy a) already is the ResiliencePolicy of payments.default:8080"
    );
    // With another default namespace, they are two services.
    assert_eq!(check_batch(&batch, "shop"), Ok(()));
}

#[test]
fn one_object_per_kind_namespace_and_name_after_defaulting() {
    let batch = [
        policy("p", None, "{service: payments, port: 1}"),
        policy("p", Some("default"), "{service: payments, port: 2}"),
    ];
    let errors = check_batch(&batch, DEFAULT_NAMESPACE).expect_err("same object");
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].path, "metadata.name");
}

#[test]
fn a_port_specific_and_an_every_port_policy_are_not_duplicates() {
    let batch = [
        policy("any", None, "{service: payments}"),
        policy("exact", None, "{service: payments, port: 8080}"),
        // Endpoints are another kind: they share the policy's target freely.
        endpoints("e", None, 8080),
    ];
    assert_eq!(check_batch(&batch, DEFAULT_NAMESPACE), Ok(()));
    let twice = [
        endpoints("a", None, 8080),
        endpoints("b", Some("default"), 8080),
    ];
    let errors = check_batch(&twice, DEFAULT_NAMESPACE).expect_err("two endpoint sets");
    assert_eq!(errors.0[0].path, "spec");
}

#[test]
fn a_policy_naming_the_port_beats_one_for_every_port() {
    let mut index = PolicyIndex::default();
    let any = policy("any", Some("shop"), "{service: payments}");
    let exact = policy("exact", Some("shop"), "{service: payments, port: 8080}");
    // Insertion order does not matter.
    assert_eq!(index.insert(exact.target("default"), "exact"), None);
    assert_eq!(index.insert(any.target("default"), "any"), None);
    assert_eq!(index.len(), 2);
    assert_eq!(
        index.get(&ServiceKey::new("payments", "shop", 8080)),
        Some(&"exact")
    );
    assert_eq!(
        index.get(&ServiceKey::new("payments", "shop", 9090)),
        Some(&"any")
    );
    assert_eq!(index.get(&ServiceKey::new("payments", "other", 8080)), None);
    assert_eq!(index.get(&ServiceKey::new("orders", "shop", 8080)), None);
    assert_eq!(
        index.insert(any.target("default"), "again"),
        Some("any"),
        "a second value for a target replaces the first and says so"
    );
}

#[test]
fn select_policy_follows_the_index_rule_and_the_first_of_equals_wins() {
    let docs = [
        policy("any", None, "{service: payments}"),
        policy("exact", None, "{service: payments, port: 8080}"),
        policy(
            "exact-2",
            Some("default"),
            "{service: payments, port: 8080}",
        ),
    ];
    let policies: Vec<&ResiliencePolicy> = docs
        .iter()
        .filter_map(|d| match d {
            Document::Policy(p) => Some(p),
            Document::Endpoints(_) => None,
        })
        .collect();
    let name = |k: ServiceKey| {
        select_policy(policies.iter().copied(), &k, DEFAULT_NAMESPACE)
            .map(|p| p.metadata.name.as_str())
    };
    assert_eq!(
        name(ServiceKey::new("payments", "default", 8080)),
        Some("exact")
    );
    assert_eq!(name(ServiceKey::new("payments", "default", 1)), Some("any"));
    assert_eq!(name(ServiceKey::new("payments", "shop", 8080)), None);
}
