//! One bad record in the store must not stop the control plane: records
//! written with redb directly (unreadable bytes, an unreadable key, a
//! document that no longer validates) are quarantined and reported, and
//! the rest are served.

use redb::{Database, TableDefinition};

use crate::common::{TestControlPlane, apply, http_get, policy_yaml, service};
use levee_control_plane::store::DB_FILE;
use levee_proto::v1;

/// The store's documents table, as the store defines it.
const DOCUMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");

#[tokio::test]
async fn corrupt_records_are_quarantined_reported_and_the_rest_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;
    for (name, service) in [("payments", "payments"), ("orders", "orders")] {
        admin
            .apply(apply(policy_yaml(name, service, "2s"), None))
            .await
            .expect("apply");
    }
    drop(admin);
    cp.stop().await;

    {
        let db = Database::create(dir.path().join(DB_FILE)).expect("open redb");
        let txn = db.begin_write().expect("write txn");
        {
            let mut table = txn.open_table(DOCUMENTS).expect("documents");
            table
                .insert("ResiliencePolicy/shop/orders", b"\xff not json".as_slice())
                .expect("corrupt orders");
            table
                .insert("garbage-key", br#"{"revision":1,"yaml":""}"#.as_slice())
                .expect("bad key");
            let invalid = serde_json::json!({
                "revision": 2,
                "yaml": "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: stale, namespace: shop}\nspec: {target: {service: Not_A_Name}}\n",
            });
            table
                .insert(
                    "ResiliencePolicy/shop/stale",
                    invalid.to_string().as_bytes(),
                )
                .expect("invalid document");
        }
        txn.commit().expect("commit");
    }

    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;
    let list = admin
        .list(v1::ListRequest::default())
        .await
        .expect("list works")
        .into_inner();
    let names: Vec<String> = list
        .documents
        .iter()
        .filter_map(|d| d.r#ref.as_ref().map(|r| r.name.clone()))
        .collect();
    assert_eq!(names, vec!["payments"]);
    assert_eq!(list.revision, 2, "quarantine does not change the revision");

    let status = admin
        .status(v1::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let quarantined: Vec<&str> = status.quarantined.iter().map(|q| q.key.as_str()).collect();
    assert_eq!(
        quarantined,
        vec![
            "ResiliencePolicy/shop/orders",
            "ResiliencePolicy/shop/stale",
            "garbage-key"
        ]
    );
    assert!(
        status.quarantined[1].reason.contains("spec.target.service"),
        "{:?}",
        status.quarantined[1]
    );
    let (_, metrics) = http_get(cp.addrs.http, "/metrics").await;
    assert!(
        metrics.contains("levee_cp_store_quarantined_records 3\n"),
        "{metrics}"
    );
    let (ready, _) = http_get(cp.addrs.http, "/ready").await;
    assert_eq!(ready, 200);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_leveectl"))
        .args(["--server", &cp.url(), "status"])
        .env_remove("LEVEE_TOKEN")
        .env_remove("LEVEE_SERVER")
        .output()
        .await
        .expect("leveectl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("quarantined store record ResiliencePolicy/shop/orders: store: record"),
        "{stdout}"
    );

    // The good policy is still pushed.
    let mut watch = cp
        .watch(v1::Hello {
            subscriptions: vec![service("payments", "shop", 8080)],
            ..Default::default()
        })
        .await;
    let update = watch.next_update().await;
    assert!(update.policy.is_some(), "{update:?}");
    // orders can be applied again, over its quarantined copy.
    admin
        .apply(apply(policy_yaml("orders", "orders", "1s"), None))
        .await
        .expect("re-apply orders");
    drop((admin, watch));
    cp.stop().await;
}
