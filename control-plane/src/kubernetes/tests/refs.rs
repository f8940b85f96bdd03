//! The `ResolvedRefs` condition against the recorded Services and policies:
//! the recorded payments policy targets 8080, the targetPort, while its
//! Service's port is 80.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use levee_proto::policy::ServiceKey;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::mock::{MockApi, fixture, lines};
use crate::discovery::registry::Registry;
use crate::kubernetes::reflect::{self, Reflectors};
use crate::kubernetes::status::refs::resolution;
use crate::kubernetes::status::{ProxyCount, desired, write_all};
use crate::kubernetes::translate::Verdict;

fn recorded_service(name: &str) -> Service {
    let list: Value =
        serde_json::from_slice(&fixture("watch/services.list.json")).expect("list JSON");
    let item = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["metadata"]["name"] == name)
        .cloned()
        .expect("a recorded Service");
    serde_json::from_value(item).expect("a Service")
}

async fn start() -> (
    Arc<MockApi>,
    kube::Client,
    Arc<Registry>,
    Reflectors,
    watch::Sender<bool>,
) {
    let (client, api) = MockApi::client();
    api.recorded_lists();
    let registry = Arc::new(Registry::new());
    let (stop, shutdown) = watch::channel(false);
    let reflectors = reflect::start(
        client.clone(),
        registry.clone(),
        Duration::from_secs(3600),
        shutdown,
    );
    wait_synced(&reflectors, 1).await;
    (api, client, registry, reflectors, stop)
}

async fn wait_synced(reflectors: &Reflectors, at_least: u64) {
    let mut synced = reflectors.synced.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        synced.wait_for(|(n, _)| *n >= at_least),
    )
    .await
    .expect("synced within 10s")
    .expect("sync loop alive");
}

/// The bodies of the merge patches sent for policy `name`.
fn status_patches(api: &MockApi, name: &str) -> Vec<Value> {
    let path = format!("/resiliencepolicies/{name}/status?");
    api.seen()
        .into_iter()
        .filter(|s| s.method == "PATCH" && s.uri.ends_with(&path))
        .filter(|s| s.content_type == "application/merge-patch+json")
        .map(|s| serde_json::from_slice(&s.body).expect("JSON"))
        .collect()
}

#[tokio::test]
async fn a_policy_on_the_target_port_is_port_not_found_and_stays_applied() {
    let (api, client, registry, reflectors, _stop) = start().await;
    write_all(&client, &reflectors, "cp-a", &BTreeMap::new()).await;

    let sent = status_patches(&api, "payments");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let conditions = &sent[0]["status"]["conditions"];
    assert_eq!(conditions[0]["type"], "Accepted");
    assert_eq!(conditions[0]["status"], "True");
    let refs = &conditions[1];
    assert_eq!(refs["type"], "ResolvedRefs");
    assert_eq!(refs["status"], "False");
    assert_eq!(refs["reason"], "PortNotFound");
    assert_eq!(
        refs["message"],
        "Service shop/payments has no TCP port 8080 (its ports: 80, 9090); 8080 is the \
         targetPort of Service port 80: a policy targets the port callers use, write port 80"
    );
    assert_eq!(refs["observedGeneration"], 3);
    // Still applied, as in the Gateway API: discovery serves it on 8080.
    let key = ServiceKey {
        name: "payments".into(),
        namespace: "shop".into(),
        port: 8080,
    };
    assert!(registry.current(&key).policy.is_some());
}

#[tokio::test]
async fn a_policy_added_on_an_existing_service_port_resolves() {
    let (api, client, _registry, reflectors, _stop) = start().await;
    // The recorded watch: ADDED policy `reviews`, target reviews:9080.
    let events = lines("watch/resiliencepolicies.watch.jsonl");
    api.push("resiliencepolicies", events[0].clone()).await;
    let mut synced = reflectors.synced.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        synced.wait_for(|(_, t)| t.verdicts.len() == 2),
    )
    .await
    .expect("reviews synced within 10s")
    .expect("sync loop alive");
    write_all(&client, &reflectors, "cp-a", &BTreeMap::new()).await;

    let sent = status_patches(&api, "reviews");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0]["status"]["conditions"][1],
        json!({
            "type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs",
            "message": "Service shop/reviews has port 9080", "observedGeneration": 1,
            "lastTransitionTime": sent[0]["status"]["conditions"][1]["lastTransitionTime"],
        })
    );
}

#[test]
fn a_missing_service_is_backend_not_found_and_no_port_means_every_port() {
    let gone = resolution("shop", "ratings", Some(9090), None);
    assert!(!gone.resolved);
    assert_eq!(gone.reason, "BackendNotFound");
    assert_eq!(
        gone.message,
        "Service shop/ratings does not exist; the policy applies once it does"
    );
    let payments = recorded_service("payments");
    let every = resolution("shop", "payments", None, Some(&payments));
    assert!(every.resolved);
    assert_eq!(every.reason, "ResolvedRefs");
    let grpc = resolution("shop", "payments", Some(9090), Some(&payments));
    assert!(grpc.resolved, "9090 is a Service port (and its targetPort)");
    // A number that is neither: no targetPort hint.
    let other = resolution("shop", "payments", Some(81), Some(&payments));
    assert_eq!(other.reason, "PortNotFound");
    assert_eq!(
        other.message,
        "Service shop/payments has no TCP port 81 (its ports: 80, 9090)"
    );
    // A named targetPort is not a number a policy can name.
    let reviews = recorded_service("reviews");
    assert_eq!(
        resolution("shop", "reviews", Some(9080), Some(&reviews)).reason,
        "ResolvedRefs"
    );
}

#[test]
fn resolved_refs_moves_its_transition_time_only_when_its_status_changes() {
    let list: Value =
        serde_json::from_slice(&fixture("watch/resiliencepolicies.list.json")).expect("JSON");
    let mut object: DynamicObject =
        serde_json::from_value(list["items"][0].clone()).expect("a DynamicObject");
    let verdict = Verdict {
        generation: 3,
        outcome: Ok(()),
    };
    let then: Timestamp = "2026-11-29T21:45:00Z".parse().expect("time");
    let later: Timestamp = "2026-11-29T21:50:00Z".parse().expect("time");
    let missing = resolution("shop", "payments", Some(80), None);
    object.data["status"] = desired(
        &object,
        &verdict,
        Some(&missing),
        ProxyCount::default(),
        then,
    );
    // Still missing five minutes later: same time.
    let same = desired(
        &object,
        &verdict,
        Some(&missing),
        ProxyCount::default(),
        later,
    );
    assert_eq!(
        same["conditions"][1]["lastTransitionTime"],
        "2026-11-29T21:45:00Z"
    );
    // The Service appears: True, and the time moves; Accepted's does not.
    let found = resolution(
        "shop",
        "payments",
        Some(80),
        Some(&recorded_service("payments")),
    );
    let now = desired(
        &object,
        &verdict,
        Some(&found),
        ProxyCount::default(),
        later,
    );
    assert_eq!(now["conditions"][1]["status"], "True");
    assert_eq!(
        now["conditions"][1]["lastTransitionTime"],
        "2026-11-29T21:50:00Z"
    );
    assert_eq!(
        now["conditions"][0]["lastTransitionTime"],
        "2026-11-29T21:45:00Z"
    );
}
