//! The CRD against the committed manifest, the validator and the recorded
//! API-server objects.

use std::path::PathBuf;

use levee_proto::policy::parse_documents;
use serde_json::{Value, json};

use super::rules::{Check, Rule, rules};
use super::{PolicyStatus, crd, crd_yaml};

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

#[test]
fn the_committed_crd_is_the_generated_one() {
    let path = repo_file("deploy/kubernetes/base/crd.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let generated = crd_yaml().expect("the CRD renders");
    assert!(
        committed == generated,
        "{} differs from `leveectl crd`; regenerate it with \
         `cargo run -q -p levee-control-plane --bin leveectl -- crd > deploy/kubernetes/base/crd.yaml`",
        path.display()
    );
}

/// A policy document with `value` (YAML) at `field` under `spec`; the
/// objects on the way get their required fields (a route its name and a
/// match, a rate limit its rate, a backoff or open time a `max`, ...).
fn policy_with(field: &str, value: &str) -> String {
    let value: Value = serde_norway::from_str(value).expect("sample YAML");
    let mut spec = json!({"target": {"service": "svc"}});
    let parts: Vec<&str> = field.split('.').collect();
    let mut node = &mut spec;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let (name, item) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (*part, false),
        };
        let map = node.as_object_mut().expect("an object on the way");
        if last && !item {
            map.insert(name.to_owned(), value);
            break;
        }
        let entry = map.entry(name.to_owned()).or_insert_with(|| match name {
            "routes" => json!([{"name": "r", "match": {"methods": ["GET"]}}]),
            "methods" => json!([]),
            "rateLimit" => json!({"requestsPerSecond": 1}),
            "concurrency" => json!({"maxInFlight": 1}),
            "slowCall" => json!({"duration": "1s"}),
            // So that a `base` at its cap is not longer than the default `max`.
            "open" => json!({"max": "1h"}),
            "backoff" => json!({"max": "1m"}),
            _ => json!({}),
        });
        node = if item {
            let list = entry.as_array_mut().expect("a list");
            if last {
                list.clear();
                list.push(value);
                break;
            }
            &mut list[0]
        } else {
            entry
        };
    }
    let doc = json!({
        "apiVersion": "levee.dev/v1alpha1",
        "kind": "ResiliencePolicy",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": spec,
    });
    serde_norway::to_string(&doc).expect("YAML")
}

#[test]
fn every_rule_has_the_validators_bound() {
    for rule in rules() {
        let accepted = policy_with(rule.field, rule.accept);
        if let Err(errors) = parse_documents(&accepted) {
            panic!(
                "{} {:?}: the validator refuses the accepted sample {}:\n{errors}\n{accepted}",
                rule.field, rule.check, rule.accept
            );
        }
        let rejected = policy_with(rule.field, rule.reject);
        let path = rule.validator_path();
        match parse_documents(&rejected) {
            Ok(_) => panic!(
                "{} {:?}: the validator accepts the rejected sample {}",
                rule.field, rule.check, rule.reject
            ),
            Err(errors) => assert!(
                errors.0.iter().any(|e| e.path.starts_with(&path)),
                "{} {:?}: the validator refuses {} but not at {path}: {errors}",
                rule.field,
                rule.check,
                rule.reject
            ),
        }
    }
}

/// Every `x-kubernetes-validations` entry in the schema, with where it is.
fn cel_rules_in(node: &Value, at: &str, found: &mut Vec<(String, String)>) {
    match node {
        Value::Object(map) => {
            for v in map
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let rule = v["rule"].as_str().unwrap_or_default().to_owned();
                found.push((at.to_owned(), rule));
            }
            for (k, v) in map {
                cel_rules_in(v, &format!("{at}/{k}"), found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| cel_rules_in(v, at, found)),
        _ => {}
    }
}

#[test]
fn every_cel_rule_in_the_crd_comes_from_the_rule_table() {
    let crd = serde_json::to_value(crd().expect("crd")).expect("json");
    let mut found = Vec::new();
    cel_rules_in(&crd, "", &mut found);
    let table: Vec<&Rule> = rules()
        .iter()
        .filter(|r| matches!(r.check, Check::Cel { .. }))
        .collect();
    assert_eq!(found.len(), table.len(), "CEL rules in the CRD: {found:#?}");
    for rule in table {
        let Check::Cel { rule: text, .. } = &rule.check else {
            continue;
        };
        assert!(
            found.iter().any(|(_, t)| t == text),
            "{}: {text} missing",
            rule.field
        );
    }
}

#[test]
fn keys_yaml_11_reads_as_booleans_are_quoted() {
    let yaml = crd_yaml().expect("crd");
    assert!(yaml.contains("\n                      \"on\":\n"), "{yaml}");
    assert!(!yaml.lines().any(|l| l.trim_start() == "on:"), "{yaml}");
    // Still the same document for a YAML 1.2 reader.
    let body: Value = serde_norway::from_str(&yaml).expect("yaml");
    assert_eq!(
        body,
        serde_json::to_value(crd().expect("crd")).expect("json")
    );
}

#[test]
fn no_unsigned_format_reaches_the_api_server() {
    let yaml = crd_yaml().expect("crd");
    assert!(!yaml.contains("format: uint"), "{yaml}");
    // The bounds the formats stood for are still there.
    assert!(yaml.contains("maximum: 65535"), "{yaml}");
}

#[test]
fn the_recorded_status_is_a_policy_status() {
    let path = repo_file("tests/fixtures/kubernetes/watch/resiliencepolicies.watch.jsonl");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let mut seen = 0;
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).expect("watch event");
        let Some(status) = event["object"].get("status") else {
            continue;
        };
        let parsed: PolicyStatus = serde_json::from_value(status.clone()).expect("status");
        assert_eq!(serde_json::to_value(&parsed).expect("json"), *status);
        seen += 1;
    }
    assert!(seen > 0, "no status in {}", path.display());
}

/// The schema as the API server would apply it: each rule's accepted value
/// passes its field's schema (bounds, patterns, CEL rules evaluated by
/// cel-python), the rejected one does not. Together with
/// `every_rule_has_the_validators_bound`, a rule and its validator check
/// refuse the same values at the bound.
#[tokio::test]
async fn every_rule_holds_in_the_schema_with_a_cel_engine() {
    let python = levee_tests::harness::python::python().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let crd_path = dir.path().join("crd.yaml");
    std::fs::write(&crd_path, crd_yaml().expect("crd")).expect("write crd");
    let table: Vec<Value> = rules()
        .iter()
        .map(|r| json!({"field": r.field, "accept": r.accept, "reject": r.reject}))
        .collect();
    let rules_path = dir.path().join("rules.json");
    std::fs::write(&rules_path, serde_json::to_vec(&table).expect("json")).expect("write");
    let out = tokio::process::Command::new(python)
        .arg(repo_file("tests/py/kube_check.py"))
        .arg("rules")
        .arg(&crd_path)
        .arg(&rules_path)
        .output()
        .await
        .expect("run kube_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(ok, rules().len(), "{stdout}");
}
