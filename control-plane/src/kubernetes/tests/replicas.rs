//! `status.replicas`: each replica's own entry (server-side apply under its
//! own field manager), the leader's sum of the fresh entries, and the
//! pruning of dead replicas' entries, against the recorded policy list.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::DynamicObject;
use levee_proto::policy::ServiceKey;
use levee_proto::v1;
use levee_tests::harness::eventually;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::mock::{MockApi, Seen, fixture};
use crate::discovery::registry::Registry;
use crate::discovery::status::{SessionStatus, Sessions, SubscriptionStatus};
use crate::kubernetes::reflect::{self, Reflectors};
use crate::kubernetes::status::replicas::{
    Entry, HEARTBEAT, OwnEntries, STALE_AFTER, entries, needs_write, prune, retire_body, rfc3339,
    sum,
};
use crate::kubernetes::status::{ProxyCount, desired, patch, run, write_all};
use crate::kubernetes::translate::{ObjectName, Verdict};

const STATUS_PATH: &str =
    "/apis/levee.dev/v1alpha1/namespaces/shop/resiliencepolicies/payments/status";

fn ago(seconds: i64) -> String {
    rfc3339(Timestamp::now() - SignedDuration::from_secs(seconds))
}

/// The recorded policy list, the payments policy carrying `status`.
fn policies_with(status: Value) -> bytes::Bytes {
    let mut list: Value =
        serde_json::from_slice(&fixture("watch/resiliencepolicies.list.json")).expect("list JSON");
    list["items"][0]["status"] = status;
    bytes::Bytes::from(serde_json::to_vec(&list).expect("JSON"))
}

/// The reflectors over the recorded Services and EndpointSlices and
/// `policies`, synced once, and the registry they feed (they stop when the
/// returned sender drops).
async fn synced(
    policies: bytes::Bytes,
) -> (
    Client,
    Arc<MockApi>,
    Reflectors,
    Arc<Registry>,
    watch::Sender<bool>,
) {
    let (client, api) = MockApi::client();
    api.list(
        "services",
        StatusCode::OK,
        fixture("watch/services.list.json"),
    );
    api.list(
        "endpointslices",
        StatusCode::OK,
        fixture("watch/endpointslices.list.json"),
    );
    api.list("resiliencepolicies", StatusCode::OK, policies);
    let (stop, shutdown) = watch::channel(false);
    let registry = Arc::new(Registry::new());
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
    (client, api, reflectors, registry, stop)
}

fn patches(api: &MockApi) -> Vec<Seen> {
    api.seen()
        .into_iter()
        .filter(|s| s.method == "PATCH")
        .collect()
}

fn payments() -> ObjectName {
    ("shop".to_owned(), "payments".to_owned())
}

#[tokio::test]
async fn the_leader_sums_fresh_entries_and_prunes_a_dead_replicas() {
    // cp-b is alive (written 5 s ago); cp-c died 10 minutes ago.
    let status = json!({"replicas": [
        {"name": "cp-b", "acked": 1, "total": 2, "generation": 3, "heartbeatTime": ago(5)},
        {"name": "cp-c", "acked": 4, "total": 4, "generation": 3, "heartbeatTime": ago(600)},
    ]});
    let (client, api, reflectors, _registry, _stop) = synced(policies_with(status)).await;
    // The leader, cp-a, has two proxies of its own, both up to date.
    let mine = BTreeMap::from([(payments(), ProxyCount { acked: 2, total: 2 })]);
    write_all(&client, &reflectors, "cp-a", &mine).await;

    let sent = patches(&api);
    assert_eq!(sent.len(), 2, "the status, then the prune: {sent:?}");
    assert_eq!(sent[0].uri, format!("{STATUS_PATH}?"));
    assert_eq!(sent[0].content_type, "application/merge-patch+json");
    let body: Value = serde_json::from_slice(&sent[0].body).expect("JSON");
    assert_eq!(
        body["status"]["proxies"],
        json!({"acked": 3, "total": 4, "generation": 3}),
        "cp-a's 2/2 plus cp-b's 1/2; cp-c's stale 4/4 ignored"
    );
    assert!(
        body["status"].get("replicas").is_none(),
        "the leader's merge patch leaves the replicas' entries alone: {body}"
    );
    assert_eq!(sent[1].uri, format!("{STATUS_PATH}?"));
    assert_eq!(sent[1].content_type, "application/json-patch+json");
    let ops: Value = serde_json::from_slice(&sent[1].body).expect("JSON");
    assert_eq!(
        ops,
        json!([
            {"op": "test", "path": "/status/replicas/1/name", "value": "cp-c"},
            {"op": "remove", "path": "/status/replicas/1"},
        ])
    );
}

#[test]
fn the_sum_counts_acked_only_for_the_current_generation() {
    let now = Timestamp::now();
    let entry = |name: &str, acked, total, generation, age: i64| Entry {
        name: name.to_owned(),
        count: ProxyCount { acked, total },
        generation,
        heartbeat: Some(now - SignedDuration::from_secs(age)),
    };
    let list = [
        // Still on generation 2: its proxies count, their ACKs do not.
        entry("cp-b", 3, 3, 2, 1),
        entry("cp-c", 1, 1, 3, 1),
        // The leader's own entry in the list: its live numbers win.
        entry("cp-a", 9, 9, 3, 1),
        // Just past the bound: ignored.
        entry("cp-d", 5, 5, 3, STALE_AFTER.as_secs() as i64 + 1),
    ];
    let mine = ProxyCount { acked: 0, total: 1 };
    assert_eq!(
        sum(&list, "cp-a", mine, 3, now),
        ProxyCount { acked: 1, total: 5 }
    );
    // Pruning: only cp-d, and never the leader itself.
    let ops = prune(&list, "cp-a", now).expect("one stale entry");
    assert_eq!(
        ops[0],
        json!({"op": "test", "path": "/status/replicas/3/name", "value": "cp-d"})
    );
    assert_eq!(ops.as_array().map(Vec::len), Some(2));
    assert_eq!(prune(&list[..3], "cp-a", now), None);
}

#[tokio::test]
async fn a_replica_applies_only_its_own_entry_under_its_own_field_manager() {
    // cp-a's entry is already there; cp-b has none yet.
    let status = json!({"replicas": [
        {"name": "cp-a", "acked": 2, "total": 2, "generation": 3, "heartbeatTime": ago(5)},
    ]});
    let (client, api, reflectors, _registry, _stop) = synced(policies_with(status)).await;
    let mut own = OwnEntries::new("cp-b");
    let counts = BTreeMap::from([(payments(), ProxyCount { acked: 1, total: 2 })]);
    let before = Timestamp::now();
    own.write(&client, &reflectors.policies.state(), &counts)
        .await;

    let sent = patches(&api);
    assert_eq!(sent.len(), 1, "one policy, one apply: {sent:?}");
    let (path, query) = sent[0].uri.split_once('?').expect("a query");
    assert_eq!(path, STATUS_PATH);
    let query: BTreeMap<_, _> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .collect();
    assert_eq!(
        query.get("fieldManager"),
        Some(&"levee-control-plane%2Fcp-b")
    );
    assert_eq!(query.get("force"), Some(&"true"));
    assert_eq!(sent[0].content_type, "application/apply-patch+yaml");
    let mut body: Value = serde_json::from_slice(&sent[0].body).expect("JSON");
    let heartbeat: Timestamp = body["status"]["replicas"][0]["heartbeatTime"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("an RFC 3339 heartbeatTime");
    assert!(heartbeat >= before - SignedDuration::from_secs(1) && heartbeat <= Timestamp::now());
    body["status"]["replicas"][0]["heartbeatTime"] = Value::Null;
    assert_eq!(
        body,
        json!({
            "apiVersion": "levee.dev/v1alpha1",
            "kind": "ResiliencePolicy",
            "metadata": {"name": "payments", "namespace": "shop"},
            "status": {"replicas": [
                {"name": "cp-b", "acked": 1, "total": 2, "generation": 3, "heartbeatTime": null},
            ]},
        }),
        "only cp-b's entry, nothing of the leader's fields or of cp-a"
    );
}

#[tokio::test]
async fn a_replica_writes_nothing_when_nothing_changed() {
    // The cache already holds cp-a's entry with these numbers (a restarted
    // replica remembers nothing else).
    let status = json!({"replicas": [
        {"name": "cp-a", "acked": 2, "total": 2, "generation": 3, "heartbeatTime": ago(5)},
    ]});
    let (client, api, reflectors, _registry, _stop) = synced(policies_with(status)).await;
    let policies = reflectors.policies.state();
    let mut own = OwnEntries::new("cp-a");
    let same = BTreeMap::from([(payments(), ProxyCount { acked: 2, total: 2 })]);
    own.write(&client, &policies, &same).await;
    assert_eq!(patches(&api).len(), 0, "the cached entry already says 2/2");

    // One proxy has not ACKed a new version yet: written once, not twice
    // (the second pass knows its own write, even with the cache behind).
    let changed = BTreeMap::from([(payments(), ProxyCount { acked: 1, total: 2 })]);
    own.write(&client, &policies, &changed).await;
    own.write(&client, &policies, &changed).await;
    assert_eq!(patches(&api).len(), 1);

    // No proxies and no entry of ours: nothing to write.
    let mut other = OwnEntries::new("cp-z");
    other.write(&client, &policies, &BTreeMap::new()).await;
    assert_eq!(patches(&api).len(), 1);
}

#[test]
fn an_entry_is_rewritten_when_its_heartbeat_gets_old_while_it_has_proxies() {
    let now = Timestamp::now();
    let written = |age: u64, total| Entry {
        name: "cp-a".to_owned(),
        count: ProxyCount {
            acked: total,
            total,
        },
        generation: 3,
        heartbeat: Some(now - SignedDuration::from_secs(age as i64)),
    };
    let young = HEARTBEAT.as_secs() - 1;
    let old = HEARTBEAT.as_secs();
    let two = ProxyCount { acked: 2, total: 2 };
    assert!(!needs_write(Some(&written(young, 2)), two, 3, now));
    assert!(needs_write(Some(&written(old, 2)), two, 3, now));
    assert!(
        needs_write(Some(&written(young, 2)), two, 4, now),
        "new generation"
    );
    // Proxies gone: zeros written once, then left to age out.
    assert!(needs_write(
        Some(&written(young, 2)),
        ProxyCount::default(),
        3,
        now
    ));
    assert!(!needs_write(
        Some(&written(old, 0)),
        ProxyCount::default(),
        3,
        now
    ));
    assert!(!needs_write(None, ProxyCount::default(), 3, now));
}

#[test]
fn the_leaders_patch_ignores_the_replicas_entries() {
    let list: Value = serde_json::from_slice(&policies_with(json!({}))).expect("list JSON");
    let mut object: DynamicObject =
        serde_json::from_value(list["items"][0].clone()).expect("a DynamicObject");
    let verdict = Verdict {
        generation: 3,
        outcome: Ok(()),
    };
    let now = Timestamp::now();
    let mut status = desired(
        &object,
        &verdict,
        None,
        ProxyCount { acked: 1, total: 1 },
        now,
    );
    status["replicas"] = json!([{"name": "cp-b", "acked": 1, "total": 1, "generation": 3,
                                 "heartbeatTime": rfc3339(now)}]);
    object.data["status"] = status;
    assert_eq!(entries(&object).len(), 1);
    let again = desired(
        &object,
        &verdict,
        None,
        ProxyCount { acked: 1, total: 1 },
        now,
    );
    assert_eq!(patch(&object, again), None);
    let more = desired(
        &object,
        &verdict,
        None,
        ProxyCount { acked: 1, total: 2 },
        now,
    );
    let body = patch(&object, more).expect("the sum changed");
    assert_eq!(body["status"]["proxies"]["total"], 2);
    assert!(body["status"].get("replicas").is_none());
}

fn session(key: &ServiceKey, acked: &str) -> SessionStatus {
    SessionStatus {
        stream_id: 1,
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
async fn a_stopping_replica_removes_its_entry() {
    let (client, api, reflectors, registry, _stop) = synced(policies_with(json!({}))).await;
    // One proxy on cp-b uses the payments policy (service port 8080).
    let key = ServiceKey {
        name: "payments".into(),
        namespace: "shop".into(),
        port: 8080,
    };
    let sessions = Arc::new(Sessions::default());
    sessions.open(session(&key, &registry.current(&key).version));
    let (_leader_tx, leader) = watch::channel(false);
    let (stop_tx, shutdown) = watch::channel(false);
    let task = tokio::spawn(run(
        client,
        "cp-b".to_owned(),
        reflectors,
        registry,
        sessions,
        leader,
        shutdown,
    ));
    eventually(Duration::from_secs(10), "cp-b's entry", || {
        let sent = patches(&api);
        async move {
            match sent.first() {
                Some(s) if s.body.windows(6).any(|w| w == b"\"cp-b\"") => Ok(()),
                _ => Err(format!("{sent:?}")),
            }
        }
    })
    .await;

    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the writer stops within 10s")
        .expect("the writer did not panic");
    let sent = patches(&api);
    assert_eq!(sent.len(), 2, "the entry, then its removal: {sent:?}");
    let last = &sent[1];
    assert!(last.uri.starts_with(STATUS_PATH), "{}", last.uri);
    assert!(
        last.uri.contains("fieldManager=levee-control-plane%2Fcp-b"),
        "{}",
        last.uri
    );
    assert_eq!(last.content_type, "application/apply-patch+yaml");
    let body: Value = serde_json::from_slice(&last.body).expect("JSON");
    assert_eq!(body, retire_body("shop", "payments"));
    assert!(
        body.get("status").is_none(),
        "an apply without the entry gives it up"
    );
}
