//! The pure translation: policy validation messages, conflicts, and which
//! endpoints are used.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::mock::fixture;
use crate::kubernetes::translate::{cluster_ips, policy, service_endpoints, translate};

fn denied_object() -> DynamicObject {
    let review: Value = serde_json::from_slice(&fixture(
        "admission/resiliencepolicy-create-denied.review-request.json",
    ))
    .expect("JSON");
    serde_json::from_value(review["request"]["object"].clone()).expect("a DynamicObject")
}

#[test]
fn an_invalid_policy_gets_the_validators_field_path_message() {
    // The object the API server sent the validating webhook for
    // inputs/22-rp-bad.yaml. (The recorded denial came from the capture's
    // stand-in webhook, whose wording, "is greater than", is not levee's.)
    assert_eq!(
        policy(&denied_object()),
        Err("spec.outbound.retry.maxRetries: 11 is more than the maximum of 10".to_owned())
    );
}

#[test]
fn of_two_policies_on_one_target_the_older_wins() {
    let list: Value =
        serde_json::from_slice(&fixture("watch/resiliencepolicies.list.json")).expect("JSON");
    let older: DynamicObject = serde_json::from_value(list["items"][0].clone()).expect("object");
    let mut newer = older.clone();
    newer.metadata.name = Some("payments-copy".into());
    newer.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-29T22:00:00Z".parse().expect("time"),
    ));
    let out = translate([&newer, &older], [], [], None);
    let verdict = |name: &str| out.verdicts[&("shop".to_owned(), name.to_owned())].clone();
    assert_eq!(verdict("payments").outcome, Ok(()));
    let refused = verdict("payments-copy").outcome.expect_err("refused");
    assert!(refused.contains("shop/payments"), "{refused}");
    assert_eq!(out.docs.len(), 1);
}

fn service(value: Value) -> Service {
    serde_json::from_value(value).expect("a Service")
}

fn slice(value: Value) -> EndpointSlice {
    serde_json::from_value(value).expect("an EndpointSlice")
}

#[test]
fn terminating_serving_endpoints_serve_only_when_none_is_ready() {
    let svc = service(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}], "clusterIPs": ["10.96.0.9"], "clusterIP": "10.96.0.9"},
    }));
    let draining = slice(json!({
        "metadata": {"name": "web-a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": false, "terminating": true}},
        ],
    }));
    let got = service_endpoints(&svc, &[&draining]);
    assert_eq!(got[&80], ["10.0.0.1:8080".parse().expect("addr")]);
    let ready = slice(json!({
        "metadata": {"name": "web-b", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"port": 8080}],
        // No conditions: ready, as the API says.
        "endpoints": [{"addresses": ["10.0.0.3"]}],
    }));
    let got = service_endpoints(&svc, &[&draining, &ready]);
    assert_eq!(got[&80], ["10.0.0.3:8080".parse().expect("addr")]);
    assert_eq!(
        cluster_ips(&svc),
        ["10.96.0.9".parse::<std::net::IpAddr>().expect("ip")]
    );
}

#[test]
fn dual_stack_cluster_ips_are_kept_as_virtual_ips() {
    let list: Value = serde_json::from_slice(&fixture("watch/services.list.json")).expect("JSON");
    let services: Vec<Service> = serde_json::from_value(list["items"].clone()).expect("Services");
    let out = translate([], services.iter(), [], None);
    let payments = &out.virtual_ips[&("shop".to_owned(), "payments".to_owned())];
    let shown: Vec<String> = payments.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["10.96.0.31", "fd00:10:96::edb1"]);
    // ...and sent: every port's document names them, with the port's
    // appProtocol (http on 80, kubernetes.io/h2c on 9090).
    let mut seen = Vec::new();
    for (_, doc) in out.docs.values() {
        if let levee_proto::policy::Document::Endpoints(e) = doc
            && e.spec.service == "payments"
        {
            let ips: Vec<String> = e.spec.virtual_ips.iter().map(ToString::to_string).collect();
            assert_eq!(
                ips,
                ["10.96.0.31", "fd00:10:96::edb1"],
                "port {}",
                e.spec.port
            );
            seen.push((e.spec.port, e.spec.app_protocol.map(|p| p.as_str())));
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [(80, Some("http")), (9090, Some("kubernetes.io/h2c"))]
    );
}
