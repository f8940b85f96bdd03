//! Policy status: the condition list, proxy counts and the merge patch the
//! leader sends to the status subresource.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use levee_proto::policy::ServiceKey;
use levee_proto::v1;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::mock::{MockApi, fixture, lines};
use crate::discovery::registry::Registry;
use crate::discovery::status::{SessionStatus, Sessions, SubscriptionStatus};
use crate::kubernetes::reflect;
use crate::kubernetes::status::{ProxyCount, desired, patch, proxy_counts, write_all};
use crate::kubernetes::translate::Verdict;

fn payments_listed() -> DynamicObject {
    let list: Value =
        serde_json::from_slice(&fixture("watch/resiliencepolicies.list.json")).expect("list JSON");
    serde_json::from_value(list["items"][0].clone()).expect("a DynamicObject")
}

fn now() -> Timestamp {
    "2026-11-29T21:45:00Z".parse().expect("a timestamp")
}

#[test]
fn accepted_condition_and_proxy_counts_for_the_current_generation() {
    let object = payments_listed();
    let verdict = Verdict {
        generation: 3,
        outcome: Ok(()),
    };
    let status = desired(
        &object,
        &verdict,
        None,
        ProxyCount { acked: 1, total: 2 },
        now(),
    );
    assert_eq!(
        status,
        json!({
            "observedGeneration": 3,
            "conditions": [{
                "type": "Accepted", "status": "True", "reason": "Accepted",
                "message": "policy is valid", "observedGeneration": 3,
                "lastTransitionTime": "2026-11-29T21:45:00Z",
            }],
            "proxies": {"acked": 1, "total": 2, "generation": 3},
        })
    );
    assert_eq!(
        patch(&object, status.clone()),
        Some(json!({ "status": status }))
    );
}

#[test]
fn an_unchanged_condition_keeps_its_transition_time_and_needs_no_patch() {
    // The recorded status write: Accepted True since 21:40:09.
    let event: Value =
        serde_json::from_slice(&lines("watch/resiliencepolicies.watch.jsonl")[1]).expect("JSON");
    let mut object: DynamicObject =
        serde_json::from_value(event["object"].clone()).expect("a DynamicObject");
    let verdict = Verdict {
        generation: 3,
        outcome: Ok(()),
    };
    let status = desired(
        &object,
        &verdict,
        None,
        ProxyCount { acked: 2, total: 2 },
        now(),
    );
    assert_eq!(
        status["conditions"][0]["lastTransitionTime"],
        "2026-11-29T21:40:09Z"
    );
    object.data["status"] = status.clone();
    assert_eq!(patch(&object, status), None, "nothing changed: no write");
    // Refused now: the transition time moves, the message is the validator's.
    let refused = Verdict {
        generation: 4,
        outcome: Err("spec.outbound.retry.maxRetries: 11 is greater than the maximum of 10".into()),
    };
    let status = desired(&object, &refused, None, ProxyCount::default(), now());
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "Invalid");
    assert_eq!(status["conditions"][0]["observedGeneration"], 4);
    assert_eq!(
        status["conditions"][0]["lastTransitionTime"],
        "2026-11-29T21:45:00Z"
    );
}

fn session(id: u64, key: &ServiceKey, acked: &str) -> SessionStatus {
    SessionStatus {
        stream_id: id,
        hello: v1::Hello::default(),
        peer: String::new(),
        connected_at_unix_ms: 0,
        spiffe_id: String::new(),
        cert_not_after_unix: 0,
        subscriptions: BTreeMap::from([(
            key.clone(),
            SubscriptionStatus {
                acked_version: acked.to_owned(),
                ..SubscriptionStatus::default()
            },
        )]),
    }
}

#[tokio::test]
async fn the_leader_patches_the_status_subresource() {
    let (client, api) = MockApi::client();
    api.recorded_lists();
    let registry = Arc::new(Registry::new());
    let (_stop, shutdown) = watch::channel(false);
    let reflectors = reflect::start(
        client.clone(),
        registry.clone(),
        Duration::from_secs(3600),
        shutdown,
    );
    let mut synced = reflectors.synced.clone();
    tokio::time::timeout(Duration::from_secs(10), synced.wait_for(|(n, _)| *n > 0))
        .await
        .expect("synced within 10s")
        .expect("sync loop alive");

    // Two proxies use the payments policy: one ACKed the current version.
    let key = ServiceKey {
        name: "payments".into(),
        namespace: "shop".into(),
        port: 8080,
    };
    let current = registry.current(&key).version;
    let sessions = Sessions::default();
    sessions.open(session(1, &key, &current));
    sessions.open(session(2, &key, "0-00000000"));
    let counts = proxy_counts(&registry, &sessions);
    assert_eq!(
        counts.get(&("shop".to_owned(), "payments".to_owned())),
        Some(&ProxyCount { acked: 1, total: 2 })
    );

    write_all(&client, &reflectors, "cp-a", &counts).await;
    let patches: Vec<_> = api
        .seen()
        .into_iter()
        .filter(|s| s.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1, "one policy, one patch");
    let sent = &patches[0];
    assert_eq!(
        sent.uri,
        "/apis/levee.dev/v1alpha1/namespaces/shop/resiliencepolicies/payments/status?"
    );
    assert_eq!(sent.content_type, "application/merge-patch+json");
    let body: Value = serde_json::from_slice(&sent.body).expect("JSON patch");
    assert_eq!(body["status"]["conditions"][0]["type"], "Accepted");
    assert_eq!(body["status"]["conditions"][0]["status"], "True");
    assert_eq!(body["status"]["conditions"][0]["observedGeneration"], 3);
    assert_eq!(body["status"]["conditions"][1]["type"], "ResolvedRefs");
    assert_eq!(
        body["status"]["proxies"],
        json!({"acked": 1, "total": 2, "generation": 3})
    );
}
