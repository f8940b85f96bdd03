//! Apply and Delete are cancellation-safe: a caller that goes away right
//! after the store commit (tonic drops the handler's future) must not leave
//! the store and the state pushed to proxies disagreeing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{apply, policy_yaml};
use levee_control_plane::admin::AdminService;
use levee_control_plane::discovery::registry::Registry;
use levee_control_plane::discovery::status::Sessions;
use levee_control_plane::metrics::Metrics;
use levee_control_plane::store::{DocKey, PolicyStore};
use levee_proto::policy::ServiceKey;
use levee_proto::v1::{self, policy_admin_server::PolicyAdmin};
use levee_tests::harness::eventually;
use tonic::Request;

fn payments() -> ServiceKey {
    ServiceKey {
        name: "payments".into(),
        namespace: "shop".into(),
        port: 8080,
    }
}

fn policy_key() -> DocKey {
    DocKey::new("ResiliencePolicy", "shop", "payments")
}

/// Polls `call` once (it starts the write), waits until the store shows
/// `committed`, then drops the call before it is polled again: the moment
/// between the commit and the publish.
async fn abandon_after_commit<F: Future>(
    call: F,
    store: &PolicyStore,
    committed: impl Fn(&PolicyStore) -> bool,
) {
    let mut call = std::pin::pin!(call);
    tokio::select! {
        biased;
        _ = &mut call => panic!("the call finished before its commit could be observed"),
        () = std::future::ready(()) => {}
    }
    eventually(Duration::from_secs(5), "the store commit", || async {
        if committed(store) {
            Ok(())
        } else {
            Err("not committed yet".to_owned())
        }
    })
    .await;
    // `call` is dropped here, as tonic drops it when the client disconnects.
}

/// The store and the registry (what proxies are pushed) agree on payments.
async fn pushed_matches_store(store: &PolicyStore, registry: &Registry) {
    eventually(
        Duration::from_secs(3),
        "the pushed state to match the store",
        || async {
            let stored = store
                .get(&policy_key())
                .map_err(|e| e.to_string())?
                .map(|r| r.revision);
            let snapshot = registry.current(&payments());
            let pushed = snapshot.policy.as_ref().map(|_| snapshot.policy_revision);
            if stored == pushed {
                Ok(())
            } else {
                Err(format!("store {stored:?}, pushed {pushed:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn apply_and_delete_abandoned_after_the_commit_still_publish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(PolicyStore::open(dir.path()).expect("store"));
    let registry = Arc::new(Registry::new());
    let admin = AdminService::new(
        store.clone(),
        registry.clone(),
        Arc::new(Sessions::default()),
        Metrics::new(),
    );

    let request = apply(policy_yaml("payments", "payments", "2s"), None);
    abandon_after_commit(admin.apply(Request::new(request)), &store, |s| {
        s.revision().is_ok_and(|r| r == 1)
    })
    .await;
    pushed_matches_store(&store, &registry).await;
    assert!(registry.current(&payments()).policy.is_some());

    let request = v1::DeleteRequest {
        r#ref: Some(v1::DocumentRef {
            kind: "ResiliencePolicy".into(),
            namespace: "shop".into(),
            name: "payments".into(),
        }),
        expected_revision: None,
    };
    abandon_after_commit(admin.delete(Request::new(request)), &store, |s| {
        s.revision().is_ok_and(|r| r == 2)
    })
    .await;
    pushed_matches_store(&store, &registry).await;
    assert!(registry.current(&payments()).policy.is_none());
}
