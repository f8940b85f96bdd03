//! `kill -9` of the real `levee-control-plane` in the middle of a stream of
//! applies. A client task applies numbered policies one after another
//! through the `PolicyAdmin` gRPC API and records each one that got an
//! answer; the control plane is killed at a random point (an apply is
//! always in flight) and restarted on the same data directory. Then every
//! answered apply is stored with the revision it was answered with and its
//! content intact (checked with `List` and `leveectl get`), the only other
//! documents are the applies that were in flight, and revisions only go up:
//! the store revision after a restart is not lower than the last answered
//! one, and the next apply gets a higher one. Three kill/restart rounds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use levee_proto::v1;
use levee_proto::v1::policy_admin_client::PolicyAdminClient;
use levee_tests::harness::{ControlPlane, eventually};
use tonic::transport::{Channel, Endpoint};

const NAMESPACE: &str = "durability";
const ROUNDS: usize = 3;
/// Generous for a debug build on a busy 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn name(i: u32) -> String {
    format!("p-{i}")
}

/// Policy number `i` (below 1000): its own name and target, and a timeout
/// of `i` ms (which the canonical form keeps as written).
fn policy(i: u32) -> String {
    format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
         metadata: {{name: p-{i}, namespace: {NAMESPACE}}}\n\
         spec:\n  target: {{service: svc-{i}, port: 8080}}\n  \
         outbound:\n    timeouts: {{request: {i}ms}}\n"
    )
}

async fn admin(cp: &ControlPlane) -> PolicyAdminClient<Channel> {
    let channel = Endpoint::from_shared(cp.grpc_url())
        .expect("url")
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connecting to the control plane");
    PolicyAdminClient::new(channel)
}

/// What the applier saw.
#[derive(Default)]
struct Applies {
    /// `(policy number, revision)` of every answered apply, in order.
    answered: Mutex<Vec<(u32, u64)>>,
    /// Set just before the control plane is killed.
    killed: AtomicBool,
}

impl Applies {
    fn answered(&self) -> Vec<(u32, u64)> {
        self.answered.lock().expect("lock").clone()
    }
}

/// Applies policies `first`, `first + 1`, … one after another until a call
/// fails; returns the failed number, the error, and whether the kill had
/// already been sent when it failed.
async fn apply_until_failure(
    mut client: PolicyAdminClient<Channel>,
    first: u32,
    applies: Arc<Applies>,
) -> (u32, tonic::Status, bool) {
    for i in first.. {
        let request = v1::ApplyRequest {
            yaml: policy(i),
            ..Default::default()
        };
        match client.apply(request).await {
            Ok(answer) => {
                let revision = answer.into_inner().revision;
                applies.answered.lock().expect("lock").push((i, revision));
            }
            Err(status) => return (i, status, applies.killed.load(Ordering::SeqCst)),
        }
    }
    unreachable!("the control plane is killed long before u32::MAX applies")
}

/// The stored policies of [`NAMESPACE`]: name → (revision, yaml), and the store revision.
async fn stored(cp: &ControlPlane) -> (BTreeMap<String, (u64, String)>, u64) {
    let list = admin(cp)
        .await
        .list(v1::ListRequest {
            kind: "ResiliencePolicy".into(),
            namespace: NAMESPACE.into(),
        })
        .await
        .expect("List after the restart")
        .into_inner();
    let documents = list
        .documents
        .into_iter()
        .map(|d| {
            let name = d.r#ref.map(|r| r.name).unwrap_or_default();
            (name, (d.revision, d.yaml))
        })
        .collect();
    (documents, list.revision)
}

/// `leveectl get policies -n NAMESPACE -o json`: the names and the store revision.
async fn leveectl_get(cp: &ControlPlane) -> (Vec<String>, u64) {
    let out = cp
        .leveectl(&["get", "policies", "-n", NAMESPACE, "-o", "json"])
        .await
        .expect("leveectl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "leveectl get: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let names = json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            item["document"]["metadata"]["name"]
                .as_str()
                .expect("a name")
                .to_owned()
        })
        .collect();
    (names, json["revision"].as_u64().expect("revision"))
}

#[tokio::test]
async fn every_answered_apply_survives_kill_9_mid_stream() {
    let data = tempfile::Builder::new()
        .prefix("levee-durability-")
        .tempdir()
        .expect("temp dir");
    let mut cp = ControlPlane::builder().data_dir(data.path()).start().await;
    let mut all: Vec<(u32, u64)> = Vec::new();
    let mut in_flight: Vec<u32> = Vec::new();
    // The store revision the next answer must exceed.
    let mut floor = 0;
    let mut next = 1;
    for round in 1..=ROUNDS {
        let applies = Arc::new(Applies::default());
        let applier = tokio::spawn(apply_until_failure(admin(&cp).await, next, applies.clone()));
        let kill_after = rand::random_range(10..40);
        eventually(DEADLINE, "applies to be answered", || {
            let n = applies.answered.lock().expect("lock").len();
            async move {
                if n >= kill_after {
                    Ok(())
                } else {
                    Err(format!("{n} of {kill_after} answered"))
                }
            }
        })
        .await;
        applies.killed.store(true, Ordering::SeqCst);
        cp.kill9().await;
        let (failed, error, after_kill) = tokio::time::timeout(DEADLINE, applier)
            .await
            .expect("the applier stops once the control plane is gone")
            .expect("the applier does not panic");
        assert!(
            after_kill,
            "round {round}: apply {failed} failed before the kill: {error}"
        );
        let answered = applies.answered();
        assert!(answered.len() >= kill_after, "round {round}: {answered:?}");
        assert!(
            answered[0].1 > floor,
            "round {round}: first revision {} not above {floor}",
            answered[0].1
        );
        for pair in answered.windows(2) {
            assert!(
                pair[0].1 < pair[1].1,
                "round {round}: revisions go up: {pair:?}"
            );
        }
        let last_answered = answered.last().map_or(0, |a| a.1);
        all.extend(&answered);
        in_flight.push(failed);
        // Never reuse the in-flight number: it may or may not have been stored.
        next = failed + 1;

        let restarted = cp.restart_on_same_data().await;
        drop(std::mem::replace(&mut cp, restarted));
        let (documents, revision) = stored(&cp).await;
        for (i, answered_revision) in &all {
            let Some((revision, yaml)) = documents.get(&name(*i)) else {
                panic!(
                    "round {round}: answered apply {i} (revision {answered_revision}) is missing; \
                     stored: {:?}",
                    documents.keys().collect::<Vec<_>>()
                );
            };
            assert_eq!(revision, answered_revision, "round {round}: policy {i}");
            assert!(
                yaml.contains(&format!("request: {i}ms\n")),
                "round {round}: policy {i}: {yaml}"
            );
        }
        let answered_names: Vec<String> = all.iter().map(|(i, _)| name(*i)).collect();
        for stored_name in documents.keys() {
            assert!(
                answered_names.contains(stored_name)
                    || in_flight.iter().any(|i| &name(*i) == stored_name),
                "round {round}: {stored_name} was never applied"
            );
        }
        assert!(
            revision >= last_answered,
            "round {round}: the store is at revision {revision}, below the last answered {last_answered}"
        );
        let (names, leveectl_revision) = leveectl_get(&cp).await;
        assert_eq!(leveectl_revision, revision, "round {round}");
        assert_eq!(
            names.len(),
            documents.len(),
            "round {round}: leveectl get lists what List does"
        );
        eprintln!(
            "round {round}: {} applies answered before kill -9 (apply {failed} in flight: {}), \
             store revision {revision} after the restart",
            answered.len(),
            if documents.contains_key(&name(failed)) {
                "stored"
            } else {
                "not stored"
            }
        );
        floor = revision;
    }

    // Revisions keep going up after the last restart.
    let after = admin(&cp)
        .await
        .apply(v1::ApplyRequest {
            yaml: policy(next),
            ..Default::default()
        })
        .await
        .expect("apply after the restart")
        .into_inner();
    assert!(
        after.revision > floor,
        "revision {} after a restart at {floor}",
        after.revision
    );
}
