//! PolicyAdmin over a real socket: apply/get/list/delete, validation,
//! compare-and-set, typed documents.

use crate::common::{TestControlPlane, apply, endpoints, policy, policy_yaml};
use levee_control_plane::admin::errors::violations;
use levee_proto::v1;
use levee_tests::harness::yaml;
use tonic::Code;

fn reference(kind: &str, name: &str) -> Option<v1::DocumentRef> {
    Some(v1::DocumentRef {
        kind: kind.into(),
        namespace: "shop".into(),
        name: name.into(),
    })
}

#[tokio::test]
async fn apply_get_list_delete_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;

    let batch = yaml::documents(&[
        policy("payments", "payments", "2s"),
        endpoints(&["127.0.0.1:9001"]),
    ]);
    let applied = admin
        .apply(apply(batch.clone(), None))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(applied.revision, 1);
    let actions: Vec<_> = applied.documents.iter().map(|d| d.action()).collect();
    assert_eq!(
        actions,
        [v1::ApplyAction::Created, v1::ApplyAction::Created]
    );

    // Same content again: unchanged, same revision.
    let again = admin
        .apply(apply(batch, None))
        .await
        .expect("reapply")
        .into_inner();
    assert_eq!(again.revision, 1);
    assert_eq!(again.documents[0].action(), v1::ApplyAction::Unchanged);

    let got = admin
        .get(v1::GetRequest {
            r#ref: reference("ResiliencePolicy", "payments"),
        })
        .await
        .expect("get")
        .into_inner();
    let doc = got.document.expect("document");
    assert_eq!(doc.revision, 1);
    assert!(doc.yaml.contains("namespace: shop"), "{}", doc.yaml);
    assert!(doc.yaml.contains("request: 2s"), "{}", doc.yaml);

    let changed = admin
        .apply(apply(policy_yaml("payments", "payments", "3s"), None))
        .await
        .expect("change");
    let changed = changed.into_inner();
    assert_eq!(changed.revision, 2);
    assert_eq!(changed.documents[0].action(), v1::ApplyAction::Configured);

    let all = admin
        .list(v1::ListRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.revision, 2);
    assert_eq!(all.documents.len(), 2);
    let policies = admin
        .list(v1::ListRequest {
            kind: "ResiliencePolicy".into(),
            namespace: String::new(),
        })
        .await
        .expect("list policies")
        .into_inner();
    assert_eq!(policies.documents.len(), 1);
    assert_eq!(policies.documents[0].revision, 2);

    let deleted = admin
        .delete(v1::DeleteRequest {
            r#ref: reference("ResiliencePolicy", "payments"),
            expected_revision: None,
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.revision, 3);
    let missing = admin
        .get(v1::GetRequest {
            r#ref: reference("ResiliencePolicy", "payments"),
        })
        .await
        .expect_err("gone");
    assert_eq!(missing.code(), Code::NotFound);
    let again = admin
        .delete(v1::DeleteRequest {
            r#ref: reference("ResiliencePolicy", "payments"),
            expected_revision: None,
        })
        .await
        .expect_err("gone");
    assert_eq!(again.code(), Code::NotFound);
    drop(admin);
    cp.stop().await;
}

#[tokio::test]
async fn invalid_batch_lists_every_problem_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;
    let bad = "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: bad, namespace: shop}\n\
               spec:\n  target: {service: payments}\n  outbound:\n    retry: {backoff: {base: \"25\"}}\n";
    let unknown = "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: other, namespace: shop}\n\
                   spec:\n  target: {service: orders}\n  outbound:\n    timeoutz: {request: 1s}\n";
    let batch = format!(
        "{}---\n{bad}---\n{unknown}",
        policy_yaml("good", "payments", "1s")
    );
    let err = admin.apply(apply(batch, None)).await.expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("spec.outbound.retry.backoff.base"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("timeoutz"), "{}", err.message());
    let found = violations(&err);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].document, 2);
    assert_eq!(found[0].path, "spec.outbound.retry.backoff.base");
    assert_eq!(found[1].document, 3);

    // Duplicates in one batch are rejected too.
    let dup = yaml::documents(&[
        policy("good", "payments", "1s"),
        policy("good", "payments", "2s"),
    ]);
    let err = admin.apply(apply(dup, None)).await.expect_err("duplicate");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("metadata.name"), "{}", err.message());

    let list = admin
        .list(v1::ListRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.revision, 0);
    assert!(
        list.documents.is_empty(),
        "nothing may be stored: {:?}",
        list.documents
    );

    // A second policy for a service port that a stored policy already targets.
    admin
        .apply(apply(policy_yaml("first", "payments", "1s"), None))
        .await
        .expect("apply");
    let err = admin
        .apply(apply(policy_yaml("second", "payments", "2s"), None))
        .await
        .expect_err("clash");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("spec.target"), "{}", err.message());
    assert!(err.message().contains("shop/first"), "{}", err.message());
    drop(admin);
    cp.stop().await;
}

/// One target written with and without the default namespace is one
/// target: the batch is refused as a whole. A port-specific and an
/// every-port policy of one service are two targets.
#[tokio::test]
async fn a_batch_naming_one_target_with_and_without_the_default_namespace_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;
    let policy = |metadata: &str, target: &str| {
        format!(
            "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {metadata}\n\
             spec: {{target: {target}}}\n"
        )
    };
    let exact = "{service: payments, port: 8080}";
    let batch = format!(
        "{}---\n{}",
        policy("{name: a}", exact),
        policy("{name: b, namespace: default}", exact)
    );
    let err = admin
        .apply(apply(batch, None))
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), Code::InvalidArgument);
    let found = violations(&err);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].document, 2);
    assert_eq!(found[0].path, "spec.target");
    assert!(
        found[0].message.contains("payments.default:8080"),
        "{}",
        found[0].message
    );
    let list = admin
        .list(v1::ListRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(list.documents.is_empty(), "{:?}", list.documents);

    let batch = format!(
        "{}---\n{}",
        policy("{name: every-port}", "{service: payments}"),
        policy("{name: b, namespace: default}", exact)
    );
    let applied = admin
        .apply(apply(batch, None))
        .await
        .expect("two targets")
        .into_inner();
    assert_eq!(applied.documents.len(), 2);
    drop(admin);
    cp.stop().await;
}

#[tokio::test]
async fn stale_expected_revision_is_a_conflict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;
    admin
        .apply(apply(policy_yaml("a", "payments", "1s"), Some(0)))
        .await
        .expect("CAS at 0");
    let err = admin
        .apply(apply(policy_yaml("b", "orders", "1s"), Some(0)))
        .await
        .expect_err("stale");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("revision 1"), "{}", err.message());
    let stale_delete = admin
        .delete(v1::DeleteRequest {
            r#ref: reference("ResiliencePolicy", "a"),
            expected_revision: Some(0),
        })
        .await
        .expect_err("stale delete");
    assert_eq!(stale_delete.code(), Code::FailedPrecondition);
    let list = admin
        .list(v1::ListRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!((list.revision, list.documents.len()), (1, 1));
    admin
        .apply(apply(policy_yaml("b", "orders", "1s"), Some(1)))
        .await
        .expect("CAS at 1");
    drop(admin);
    cp.stop().await;
}

#[tokio::test]
async fn typed_documents_are_validated_like_yaml() {
    use levee_proto::policy::{Document, parse_documents};
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;
    let typed: Vec<v1::Document> = parse_documents(&policy_yaml("typed", "payments", "2s"))
        .expect("valid")
        .iter()
        .map(v1::Document::from)
        .collect();
    let request = v1::ApplyRequest {
        documents: typed.clone(),
        ..Default::default()
    };
    let applied = admin
        .apply(request)
        .await
        .expect("typed apply")
        .into_inner();
    assert_eq!(applied.revision, 1);
    let got = admin
        .get(v1::GetRequest {
            r#ref: reference("ResiliencePolicy", "typed"),
        })
        .await
        .expect("get")
        .into_inner();
    let stored = parse_documents(&got.document.expect("doc").yaml).expect("stored yaml parses");
    assert!(matches!(&stored[..], [Document::Policy(p)] if p.spec.target.service == "payments"));

    // A typed document with a problem: rejected with its number and path.
    let mut broken = typed[0].clone();
    if let Some(v1::document::Kind::Policy(p)) = &mut broken.kind {
        p.spec
            .as_mut()
            .and_then(|s| s.target.as_mut())
            .expect("target")
            .service = "Not A Label".into();
    }
    let request = v1::ApplyRequest {
        documents: vec![typed[0].clone(), broken],
        ..Default::default()
    };
    let err = admin.apply(request).await.expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let found = violations(&err);
    assert!(found.iter().all(|v| v.document == 2), "{found:?}");
    assert!(
        found.iter().any(|v| v.path.starts_with("spec.target")),
        "{found:?}"
    );

    let both = v1::ApplyRequest {
        yaml: policy_yaml("x", "orders", "1s"),
        documents: typed,
        ..Default::default()
    };
    assert_eq!(
        admin.apply(both).await.expect_err("both").code(),
        Code::InvalidArgument
    );
    drop(admin);
    cp.stop().await;
}
