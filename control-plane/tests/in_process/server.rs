//! The server around the API: admin authentication, persistence across a
//! restart, `--addr-file`, and the HTTP endpoints.

use crate::common::{TestControlPlane, apply, endpoints, http_get, policy_yaml};
use levee_proto::v1;
use levee_tests::harness::yaml;
use tonic::Code;

#[tokio::test]
async fn token_is_required_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("write token");
    let data = dir.path().join("data");
    let cp = TestControlPlane::start(
        &data,
        &["--admin-token-file", token_file.to_str().expect("utf-8")],
    )
    .await;

    for token in [None, Some("wrong")] {
        let mut admin = cp.admin(token).await;
        let err = admin
            .apply(apply(policy_yaml("a", "payments", "1s"), None))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::Unauthenticated, "token {token:?}");
        let err = admin
            .status(v1::StatusRequest {})
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let mut admin = cp.admin(Some("s3cret-token")).await;
    let list = admin
        .list(v1::ListRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.revision, 0, "refused calls changed nothing");
    admin
        .apply(apply(policy_yaml("a", "payments", "1s"), None))
        .await
        .expect("authorized apply");

    // Discovery needs no admin token.
    let mut watch = cp
        .watch(v1::Hello {
            subscriptions: vec![crate::common::service("payments", "shop", 8080)],
            ..Default::default()
        })
        .await;
    assert_eq!(watch.next_update().await.policy_revision, 1);
    let (_, metrics) = http_get(cp.addrs.http, "/metrics").await;
    assert!(
        metrics.contains("levee_cp_admin_requests_rejected_total{reason=\"unauthenticated\"} 4"),
        "{metrics}"
    );
    drop((admin, watch));
    cp.stop().await;
}

#[tokio::test]
async fn applied_documents_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;
    admin
        .apply(apply(policy_yaml("a", "payments", "1s"), None))
        .await
        .expect("apply");
    admin
        .apply(apply(
            yaml::documents(&[endpoints(&["127.0.0.1:9001"])]),
            None,
        ))
        .await
        .expect("apply");
    drop(admin);
    cp.stop().await;

    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;
    let list = admin
        .list(v1::ListRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.revision, 2);
    assert_eq!(list.documents.len(), 2);
    // The restarted registry serves the stored state to proxies.
    let mut watch = cp
        .watch(v1::Hello {
            subscriptions: vec![crate::common::service("payments", "shop", 8080)],
            ..Default::default()
        })
        .await;
    let update = watch.next_update().await;
    assert_eq!(update.policy_revision, 1);
    assert_eq!(update.endpoints, ["127.0.0.1:9001"]);
    let next = admin
        .apply(apply(policy_yaml("a", "payments", "2s"), None))
        .await
        .expect("apply");
    assert_eq!(
        next.into_inner().revision,
        3,
        "revisions continue after a restart"
    );
    drop((admin, watch));
    cp.stop().await;
}

#[tokio::test]
async fn http_serves_live_ready_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr_file = dir.path().join("addrs.json");
    let cp = TestControlPlane::start(
        &dir.path().join("data"),
        &["--addr-file", addr_file.to_str().expect("utf-8")],
    )
    .await;
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&addr_file).expect("addr file"))
            .expect("json");
    assert_eq!(written["grpc"], cp.addrs.grpc.to_string());
    assert_eq!(written["http"], cp.addrs.http.to_string());
    let mut admin = cp.admin(None).await;
    admin
        .apply(apply(policy_yaml("a", "payments", "1s"), None))
        .await
        .expect("apply");
    assert_eq!(http_get(cp.addrs.http, "/live").await.0, 200);
    let (code, body) = http_get(cp.addrs.http, "/ready").await;
    assert_eq!(code, 200, "{body}");
    let (code, metrics) = http_get(cp.addrs.http, "/metrics").await;
    assert_eq!(code, 200);
    for needle in [
        "levee_cp_store_operations_total{op=\"apply\",result=\"ok\"} 1",
        "levee_cp_store_revision 1",
        "levee_cp_connected_proxies 0",
        "levee_cp_push_latency_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
    assert_eq!(http_get(cp.addrs.http, "/nope").await.0, 404);
    drop(admin);
    cp.stop().await;
}
