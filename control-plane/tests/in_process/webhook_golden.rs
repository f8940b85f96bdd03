//! The webhooks' answers to every AdmissionReview a real kube-apiserver
//! sent (tests/fixtures/kubernetes/admission/), checked against what it
//! accepted and against the golden files (control-plane/tests/golden/webhook/).

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use levee_control_plane::webhook::inject::{Decision, Injector, Refusal, Scope};
use levee_control_plane::webhook::review::{Review, parse};
use levee_control_plane::webhook::validate;
use levee_tests::harness::admission::{
    POD_CASES, POLICY_CASES, PROXY_CONTROL_PLANE, PROXY_IMAGE, PodOutcome, assert_golden, fixture,
    patched_pod,
};
use serde_json::{Value, json};

fn injector() -> Injector {
    Injector {
        image: PROXY_IMAGE.to_owned(),
        control_plane: PROXY_CONTROL_PLANE.to_owned(),
        token_audience: "levee.dev".to_owned(),
        trace_collector: None,
        access_log: false,
    }
}

fn inject(body: &[u8], scope: Scope) -> Vec<u8> {
    let request = parse::<Pod>(body).expect("a pod AdmissionReview");
    Review::from_response(injector().review(&request, scope)).to_json()
}

#[test]
fn every_recorded_pod_review_gets_the_accepted_envelope_and_the_golden_pod() {
    for (case, outcome) in POD_CASES {
        let body = fixture(&format!("{case}.review-request.json"));
        let ours = inject(&body, Scope::Namespace);
        let recorded = fixture(&format!("{case}.review-response.json"));
        match outcome {
            PodOutcome::AsRecorded => assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&recorded).trim_end(),
                "{case}"
            ),
            PodOutcome::Injected => {
                let request: Value = serde_json::from_slice(&body).unwrap();
                let response: Value = serde_json::from_slice(&ours).unwrap();
                let (patch, pod) =
                    patched_pod(&request, &response).unwrap_or_else(|e| panic!("{case}: {e}"));
                // The same envelope keys, in the same order, as the answer the
                // API server accepted (for the raw-array case: as pod-inject's).
                let accepted = if case == "pod-raw-array-patch" {
                    fixture("pod-inject.review-response.json")
                } else {
                    recorded
                };
                let accepted: Value = serde_json::from_slice(&accepted).unwrap();
                let keys = |v: &Value| -> Vec<String> {
                    v["response"].as_object().unwrap().keys().cloned().collect()
                };
                assert_eq!(keys(&response), keys(&accepted), "{case}");
                assert_golden(&format!("{case}.patch.json"), &patch);
                assert_golden(&format!("{case}.pod.json"), &pod);
            }
        }
    }
}

/// The recorded policies as kubectl stored them are denied (their
/// `retry.on` arrived as `"true"`); with the key as written in the file,
/// the answer is the recorded one, byte for byte. The recorded denial is
/// reproduced byte for byte as it is.
#[test]
fn every_recorded_policy_review_gets_the_recorded_answer_byte_for_byte() {
    for case in POLICY_CASES {
        let body = fixture(&format!("{case}.review-request.json"));
        let recorded = fixture(&format!("{case}.review-response.json"));
        let recorded = String::from_utf8_lossy(&recorded).trim_end().to_owned();
        let answer = |body: &[u8]| {
            let request = parse::<DynamicObject>(body).unwrap();
            String::from_utf8(Review::from_response(validate::review(&request)).to_json()).unwrap()
        };
        let mut request: Value = serde_json::from_slice(&body).unwrap();
        let retry = &mut request["request"]["object"]["spec"]["outbound"]["retry"];
        let Some(mangled) = retry.as_object_mut().and_then(|r| r.remove("true")) else {
            // The recorded denial, with the message `leveectl validate`
            // prints for the file that was applied (the recording's webhook
            // worded it "greater than"; levee-proto says "more than").
            let parsed: Value = serde_json::from_str(&recorded).unwrap();
            let theirs = parsed["response"]["status"]["message"].to_string();
            let leveectl = Value::from(leveectl_validate("22-rp-bad.yaml").join("\n"));
            let expected = recorded.replace(&theirs, &leveectl.to_string());
            assert_ne!(expected, recorded, "the message was replaced");
            assert_eq!(answer(&body), expected, "{case}");
            continue;
        };
        let denied: Value = serde_json::from_str(&answer(&body)).unwrap();
        assert_eq!(denied["response"]["allowed"], false, "{case}");
        assert_eq!(denied["response"]["status"]["code"], 422, "{case}");
        let message = denied["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("spec.outbound.retry.true: spec.outbound.retry: unknown field `true`, expected one of `maxRetries`, `on`,"),
            "{case}: {message}"
        );
        assert!(
            message.ends_with(&format!("\n{}", validate::YAML_ON_HINT)),
            "{message}"
        );
        retry["on"] = mangled;
        assert_eq!(answer(request.to_string().as_bytes()), recorded, "{case}");
    }
}

/// `leveectl validate` of a manifest in tests/fixtures/kubernetes/inputs/,
/// each line without its `FILE: document N (…): ` prefix.
fn leveectl_validate(input: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/kubernetes/inputs")
        .join(input);
    let mut printed = Vec::new();
    levee_control_plane::ctl::apply::validate(&[path], &mut printed)
        .expect_err("leveectl finds problems");
    String::from_utf8(printed)
        .unwrap()
        .lines()
        .map(|line| {
            line.split_once("): ")
                .map_or(line, |(_, rest)| rest)
                .to_owned()
        })
        .collect()
}

/// The denial's message is `leveectl validate`'s lines for the same
/// policy written as a file, without their `FILE: document N (…):` prefix.
#[test]
fn a_denial_says_what_leveectl_validate_says() {
    let mut request: Value = serde_json::from_slice(&fixture(
        "resiliencepolicy-create-denied.review-request.json",
    ))
    .unwrap();
    let object = &mut request["request"]["object"];
    object["spec"]["outbound"]["circuitBreaker"] = json!({"halfOpenProbes": 0});
    object["spec"]["outbound"]["rateLimit"] = json!({"requestsPerSecond": 0});
    let file = format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: reviews, namespace: shop}}\nspec: {}\n",
        object["spec"]
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, file).unwrap();
    let mut printed = Vec::new();
    levee_control_plane::ctl::apply::validate(std::slice::from_ref(&path), &mut printed)
        .expect_err("leveectl finds problems");
    let prefix = format!(
        "{}: document 1 (ResiliencePolicy shop/reviews): ",
        path.display()
    );
    let leveectl: Vec<String> = String::from_utf8(printed)
        .unwrap()
        .lines()
        .map(|line| line.strip_prefix(&prefix).unwrap_or(line).to_owned())
        .collect();
    assert!(leveectl.len() >= 2, "{leveectl:?}");

    let request = parse::<DynamicObject>(request.to_string().as_bytes()).unwrap();
    let response = validate::review(&request);
    assert!(!response.allowed);
    assert_eq!(
        (response.result.code, response.result.reason.as_str()),
        (422, "Invalid")
    );
    assert_eq!(response.result.message, leveectl.join("\n"));
}

#[test]
fn an_injected_pod_comes_back_unchanged() {
    let body = fixture("pod-inject.review-request.json");
    let mut request: Value = serde_json::from_slice(&body).unwrap();
    let response: Value = serde_json::from_slice(&inject(&body, Scope::Namespace)).unwrap();
    let (_, pod) = patched_pod(&request, &response).unwrap();
    request["request"]["object"] = pod;
    let again: Value =
        serde_json::from_slice(&inject(request.to_string().as_bytes(), Scope::Namespace)).unwrap();
    assert_eq!(
        again["response"],
        json!({"uid": request["request"]["uid"], "allowed": true}),
        "no patch, no warning"
    );
}

fn recorded_pod() -> Pod {
    let request = parse::<Pod>(&fixture("pod-inject.review-request.json")).unwrap();
    request.object.unwrap()
}

fn annotate(pod: &mut Pod, key: &str, value: &str) {
    pod.metadata
        .annotations
        .get_or_insert_default()
        .insert(key.to_owned(), value.to_owned());
}

#[test]
fn outside_a_labelled_namespace_only_an_annotated_pod_is_injected() {
    let mut pod = recorded_pod();
    assert_eq!(injector().decide(&pod, Scope::OptIn), Decision::Unchanged);
    annotate(&mut pod, "levee.dev/inject", "enabled");
    assert!(matches!(
        injector().decide(&pod, Scope::OptIn),
        Decision::Inject(_)
    ));
    annotate(&mut pod, "levee.dev/inject", "disabled");
    assert_eq!(
        injector().decide(&pod, Scope::Namespace),
        Decision::Unchanged
    );
}

#[test]
fn probe_ports_and_annotations_reach_init_iptables_and_the_proxy() {
    let mut pod = recorded_pod();
    annotate(&mut pod, "levee.dev/skip-outbound-ports", "5432,443");
    annotate(&mut pod, "levee.dev/skip-inbound-ports", "9100-9199");
    annotate(&mut pod, "levee.dev/proxy-cpu-limit", "1");
    let Decision::Inject(patch) = injector().decide(&pod, Scope::Namespace) else {
        panic!("injected");
    };
    let args = &patch[0]["value"]["args"];
    assert_eq!(
        args,
        &json!([
            "init-iptables",
            "--proxy-uid",
            "2102",
            "--inbound-port",
            "4143",
            "--outbound-port",
            "4140",
            "--admin-port",
            "4191",
            "--skip-inbound-ports",
            "8080,9100-9199",
            "--skip-outbound-ports",
            "443,5432"
        ]),
        "the liveness (8080) and readiness (named `http` = 8080) probe port is skipped"
    );
    assert_eq!(
        patch[1]["value"]["resources"],
        json!({"limits": {"cpu": "1", "memory": "64Mi"}, "requests": {"cpu": "10m", "memory": "16Mi"}})
    );
}

#[test]
fn a_pod_the_injector_cannot_handle_is_admitted_uninjected_with_a_warning() {
    type Change = fn(&mut Pod);
    let cases: [(&str, Change); 5] = [
        (
            "the pod already has a volume named \"levee-trust-bundle\"",
            |pod| {
                pod.spec
                    .as_mut()
                    .unwrap()
                    .volumes
                    .get_or_insert_default()
                    .push(k8s_openapi::api::core::v1::Volume {
                        name: "levee-trust-bundle".to_owned(),
                        ..Default::default()
                    });
            },
        ),
        (
            "annotation levee.dev/proxy-memory-limit: \"a lot\" is not a Kubernetes quantity (e.g. 100m, 64Mi)",
            |pod| annotate(pod, "levee.dev/proxy-memory-limit", "a lot"),
        ),
        (
            "annotation levee.dev/inject: \"yes\" is not enabled or disabled",
            |pod| annotate(pod, "levee.dev/inject", "yes"),
        ),
        (
            "container \"app\" probes port \"health\", which it does not declare",
            |pod| {
                let app = &mut pod.spec.as_mut().unwrap().containers[0];
                let probe = app
                    .readiness_probe
                    .as_mut()
                    .unwrap()
                    .http_get
                    .as_mut()
                    .unwrap();
                probe.port = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                    "health".into(),
                );
            },
        ),
        (
            "container \"app\" runs as uid 2102, the proxy's uid, whose traffic is never captured",
            |pod| {
                pod.spec
                    .as_mut()
                    .unwrap()
                    .security_context
                    .get_or_insert_default()
                    .run_as_user = Some(2102);
            },
        ),
    ];
    for (reason, change) in cases {
        let mut pod = recorded_pod();
        change(&mut pod);
        assert_eq!(
            injector().decide(&pod, Scope::Namespace),
            Decision::Refused(Refusal(reason.to_owned()))
        );
    }
    let body = fixture("pod-hostnetwork-warning.review-request.json");
    let response: Value = serde_json::from_slice(&inject(&body, Scope::Namespace)).unwrap();
    assert_eq!(
        response["response"]["warnings"],
        json!(["levee.dev: pod uses hostNetwork; sidecar not injected"])
    );
}

/// Over `https://` the proxy gets the trust bundle and a projected token,
/// mounted read-only, and the flags naming them; its service account and
/// namespace come from the downward API. Over `http://`: neither volume,
/// and `--insecure-plaintext`.
#[test]
fn the_proxy_gets_its_trust_bundle_and_token_over_https_only() {
    let pod = recorded_pod();
    let Decision::Inject(patch) = injector().decide(&pod, Scope::Namespace) else {
        panic!("injected");
    };
    let proxy = &patch[1]["value"];
    let args: Vec<&str> = proxy["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| *a == name)
            .map(|i| args[i + 1])
            .unwrap_or_else(|| panic!("{name} in {args:?}"))
    };
    assert_eq!(flag("--control-plane"), PROXY_CONTROL_PLANE);
    assert_eq!(flag("--trust-bundle-file"), "/var/run/levee/trust/ca.crt");
    assert_eq!(
        flag("--identity-sa-token-file"),
        "/var/run/levee/identity/token"
    );
    assert!(!args.contains(&"--insecure-plaintext"), "{args:?}");
    assert_eq!(
        proxy["volumeMounts"],
        json!([
            {"name": "levee-trust-bundle", "mountPath": "/var/run/levee/trust", "readOnly": true},
            {"name": "levee-identity-token", "mountPath": "/var/run/levee/identity", "readOnly": true}
        ])
    );
    let env_field = |name: &str| {
        proxy["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(
        env_field("LEVEE_SERVICE_ACCOUNT"),
        Some(json!("spec.serviceAccountName"))
    );
    assert_eq!(
        env_field("LEVEE_NAMESPACE"),
        Some(json!("metadata.namespace"))
    );
    // The recorded pod has its kube-api-access volume: ours are appended.
    let volumes: Vec<&Value> = patch
        .iter()
        .filter(|op| op["path"] == "/spec/volumes/-")
        .map(|op| &op["value"])
        .collect();
    assert_eq!(
        volumes,
        [
            &json!({"name": "levee-trust-bundle", "configMap": {"name": "levee-trust-bundle"}}),
            &json!({"name": "levee-identity-token", "projected": {"sources": [{"serviceAccountToken": {
                "audience": "levee.dev", "expirationSeconds": 3600, "path": "token"}}]}}),
        ]
    );

    let plaintext = Injector {
        control_plane: "http://levee-control-plane.levee-system.svc:8090".to_owned(),
        ..injector()
    };
    let Decision::Inject(patch) = plaintext.decide(&pod, Scope::Namespace) else {
        panic!("injected");
    };
    let proxy = &patch[1]["value"];
    assert_eq!(
        proxy["args"].as_array().unwrap().last(),
        Some(&json!("--insecure-plaintext"))
    );
    assert!(proxy["volumeMounts"].is_null(), "{proxy}");
    assert!(
        !patch
            .iter()
            .any(|op| op["path"].as_str().unwrap().starts_with("/spec/volumes")),
        "{patch:?}"
    );
}

/// The proxy container's plain (not downward-API) variables.
fn plain_env(patch: &[Value]) -> Vec<(String, String)> {
    patch[1]["value"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[test]
fn the_proxy_learns_its_service_and_trace_collector_from_the_pod() {
    let pod = recorded_pod();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let traced = Injector {
        trace_collector: Some("http://otel-collector.observability:4317".to_owned()),
        access_log: false,
        ..injector()
    };
    let Decision::Inject(patch) = traced.decide(&pod, Scope::Namespace) else {
        panic!("injected");
    };
    // The recorded pod is labelled app=<its service>.
    let service = labels
        .get("app.kubernetes.io/name")
        .or_else(|| labels.get("app"))
        .expect("the recorded pod has an app label")
        .clone();
    let own = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        plain_env(&patch),
        own(&[
            ("LEVEE_SERVICE", &service),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://otel-collector.observability:4317"
            ),
            ("OTEL_SERVICE_NAME", &service),
            ("LEVEE_LOG_FORMAT", "json"),
        ])
    );

    // The pod's annotations win; `none` turns tracing off for it.
    let mut pod = recorded_pod();
    annotate(&mut pod, "levee.dev/service", "payments-api");
    annotate(&mut pod, "levee.dev/trace-collector", "none");
    let Decision::Inject(patch) = traced.decide(&pod, Scope::Namespace) else {
        panic!("injected");
    };
    assert_eq!(
        plain_env(&patch),
        own(&[
            ("LEVEE_SERVICE", "payments-api"),
            ("LEVEE_LOG_FORMAT", "json")
        ])
    );

    // A service name the proxy could not use: admitted uninjected, warned.
    let mut pod = recorded_pod();
    annotate(&mut pod, "levee.dev/service", "Payments");
    assert_eq!(
        traced.decide(&pod, Scope::Namespace),
        Decision::Refused(Refusal(
            "annotation levee.dev/service: \"Payments\" is not a Service name (a DNS-1035 label)"
                .to_owned()
        ))
    );
}
