//! The Kubernetes manifests (`deploy/kubernetes/`) and the ResiliencePolicy
//! CRD, offline (no API server can run here): `kubectl kustomize` renders
//! the demo overlay (which includes the base), every rendered object
//! validates with `kubernetes-validate` in strict mode for the three newest
//! Kubernetes versions it knows, and ResiliencePolicy objects validate
//! against the CRD's own schema and CEL rules (`tests/py/kube_check.py`,
//! in the harness's Python environment). `kubectl apply` itself is out of
//! reach; docs/kubernetes.md says what is verified how.

use std::path::{Path, PathBuf};
use std::time::Duration;

use levee_tests::harness::python;
use serde_json::Value;
use tokio::process::Command;

/// The versions docs/kubernetes.md names (kubernetes-validate 1.37.0's three newest).
const VERSIONS: [&str; 3] = ["1.35", "1.36", "1.37"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `cmd` (killed after 120 s) and returns its stdout; panics with
/// both outputs unless it succeeds.
async fn output(mut cmd: Command, what: &str) -> String {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within 120 s"))
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn kube_check(args: &[&Path]) -> String {
    let mut cmd = Command::new(python::python().await);
    cmd.arg(repo().join("tests/py/kube_check.py")).args(args);
    output(cmd, "kube_check.py").await
}

async fn render(overlay: &str) -> String {
    let mut cmd = Command::new(python::kubectl().await);
    cmd.arg("kustomize").arg(repo().join(overlay));
    output(cmd, "kubectl kustomize").await
}

fn crd() -> PathBuf {
    repo().join("deploy/kubernetes/base/crd.yaml")
}

#[tokio::test]
async fn the_demo_overlay_renders_and_every_object_validates() {
    let rendered = render("deploy/kubernetes/examples/demo").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("demo.yaml");
    std::fs::write(&file, &rendered).expect("write");

    let known = kube_check(&[Path::new("versions")]).await;
    let known: Vec<&str> = known.split_whitespace().collect();
    assert_eq!(
        known[known.len() - 3..],
        VERSIONS,
        "update docs/kubernetes.md"
    );

    let crd = crd();
    let mut args: Vec<&Path> = vec![Path::new("manifests"), &crd, &file];
    args.extend(VERSIONS.iter().map(Path::new));
    let report = kube_check(&args).await;

    let objects: Vec<Value> = serde_norway::Deserializer::from_str(&rendered)
        .map(|d| serde::Deserialize::deserialize(d).expect("a rendered object"))
        .collect();
    let mut kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "MutatingWebhookConfiguration",
        "Namespace",
        "PodDisruptionBudget",
        "ResiliencePolicy",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(&kind), "no {kind} rendered: {kinds:?}");
    }
    // One line per built-in object and version, one per policy; all "ok".
    let policies = objects
        .iter()
        .filter(|o| o["kind"] == "ResiliencePolicy")
        .count();
    let expected = (objects.len() - policies) * VERSIONS.len() + policies;
    let ok = report.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(ok, expected, "{report}");
}

#[tokio::test]
async fn the_control_plane_has_least_privilege() {
    let rendered = render("deploy/kubernetes/base").await;
    let mut grants = Vec::new();
    for object in serde_norway::Deserializer::from_str(&rendered) {
        let object: Value = serde::Deserialize::deserialize(object).expect("object");
        if !matches!(object["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for rule in object["rules"].as_array().expect("rules") {
            let words = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            };
            for (resource, verb) in words("resources").iter().flat_map(|r| {
                words("verbs")
                    .into_iter()
                    .map(move |v| (r.clone(), v))
                    .collect::<Vec<_>>()
            }) {
                let names = words("resourceNames").join(",");
                grants.push(format!("{resource} {verb} {names}").trim().to_owned());
            }
            assert!(!words("apiGroups").contains(&"*".to_owned()), "{rule}");
        }
    }
    grants.sort();
    let expected = [
        "configmaps create levee-trust-bundle",
        "configmaps patch levee-trust-bundle",
        "endpointslices get",
        "endpointslices list",
        "endpointslices watch",
        "leases create",
        "leases get levee-control-plane",
        "leases update levee-control-plane",
        "mutatingwebhookconfigurations get levee-sidecar-injector",
        "mutatingwebhookconfigurations patch levee-sidecar-injector",
        "namespaces list",
        "namespaces watch",
        "pods list",
        "pods watch",
        "resiliencepolicies get",
        "resiliencepolicies list",
        "resiliencepolicies watch",
        "resiliencepolicies/status patch",
        "resiliencepolicies/status update",
        "services get",
        "services list",
        "services watch",
        "tokenreviews create",
        "validatingwebhookconfigurations get levee-policy-validator",
        "validatingwebhookconfigurations patch levee-policy-validator",
    ];
    assert_eq!(grants, expected);
}

/// The documents of a YAML file as leveectl reads them (YAML 1.2), as JSON.
fn leveectl_reading(path: &Path, into: &Path) -> PathBuf {
    let text = std::fs::read_to_string(path).expect("read");
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("docs");
    let out = into.join(format!("{name}.json"));
    std::fs::write(&out, serde_json::to_vec(&docs).expect("json")).expect("write");
    out
}

/// The ```` ```yaml ```` blocks of a Markdown file that hold a policy.
fn policy_blocks(markdown: &Path, into: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(markdown).expect("read");
    let stem = markdown
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("md");
    let mut files = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match &mut block {
            None if line.trim() == "```yaml" => block = Some(String::new()),
            None => {}
            Some(b) if line.trim_start().starts_with("```") => {
                if b.contains("kind: ResiliencePolicy") {
                    let file = into.join(format!("{stem}-{}.yaml", files.len()));
                    std::fs::write(&file, b.as_bytes()).expect("write");
                    files.push(file);
                }
                block = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    files
}

#[tokio::test]
async fn every_example_policy_fits_the_crd_and_the_invalid_one_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut examples = vec![
        repo().join("deploy/examples/payments.yaml"),
        repo().join("deploy/kubernetes/examples/demo/policy.yaml"),
    ];
    for doc in ["docs/policy.md", "docs/kubernetes.md"] {
        examples.extend(policy_blocks(&repo().join(doc), dir.path()));
    }
    assert!(examples.len() >= 4, "examples lost: {examples:?}");
    let fixtures = repo().join("tests/fixtures/kubernetes/inputs");
    let recorded = [
        fixtures.join("20-rp-payments.yaml"),
        fixtures.join("21-rp-payments-v2.yaml"),
    ];
    let bad = fixtures.join("22-rp-bad.yaml");

    // As kubectl reads the examples (YAML 1.1), and as leveectl reads the
    // recorded ones.
    let mut args: Vec<PathBuf> = vec!["policies".into(), crd()];
    args.extend(examples.iter().cloned());
    args.extend(recorded.iter().map(|f| leveectl_reading(f, dir.path())));
    args.push(leveectl_reading(&bad, dir.path()));
    // As kubectl reads the recorded ones.
    args.extend(recorded.iter().cloned());
    let args: Vec<&Path> = args.iter().map(PathBuf::as_path).collect();
    let report = kube_check(&args).await;

    let line = |file: &Path| -> Vec<&str> {
        let file = file.to_string_lossy();
        report
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(&file))
            .collect()
    };
    for file in &examples {
        let lines = line(file);
        assert!(
            !lines.is_empty() && lines.iter().all(|l| l.starts_with("ok ")),
            "{}: {lines:?}",
            file.display()
        );
    }
    for file in &recorded {
        let json = dir
            .path()
            .join(file.with_extension("json").file_name().expect("name"));
        assert_eq!(line(&json).len(), 1, "{report}");
        assert!(line(&json)[0].starts_with("ok "), "{report}");
        // The recorded inputs write `on:` bare: kubectl sends it as "true",
        // which the CRD refuses as unknown (docs/kubernetes.md).
        let yaml = line(file);
        assert!(
            yaml.len() == 1
                && yaml[0].starts_with("invalid ")
                && yaml[0].contains("'true' was unexpected"),
            "{report}"
        );
    }
    let bad_json = dir.path().join("22-rp-bad.json");
    let bad = line(&bad_json);
    assert!(
        bad.len() == 1
            && bad[0].starts_with("invalid ")
            && bad[0]
                .contains("spec.outbound.retry.maxRetries: 11 is greater than the maximum of 10"),
        "{report}"
    );
}
