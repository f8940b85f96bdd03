//! The leader's trust bundle copies: one server-side apply of ConfigMap
//! `levee-trust-bundle` per namespace labelled `levee.dev/inject=enabled`.
//! No namespace list was recorded: the list is made from the recorded
//! cluster's own manifest (tests/fixtures/kubernetes/inputs/00-namespaces.yaml).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use k8s_openapi::api::core::v1::Namespace;
use levee_tests::harness::eventually;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::mock::{MockApi, Seen, fixture};
use crate::kubernetes::trust_bundle::{Copier, REAPPLY, config_map, run};

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// The recorded cluster's namespaces as a label-selected LIST would
/// return them (`shop` is labelled; `levee-system` is not), plus a
/// labelled namespace being deleted.
fn namespace_list() -> Bytes {
    let text = String::from_utf8(fixture("inputs/00-namespaces.yaml").to_vec()).expect("UTF-8");
    let mut items: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .filter(|doc: &Value| {
            doc["kind"] == "Namespace" && doc["metadata"]["labels"]["levee.dev/inject"] == "enabled"
        })
        .collect();
    assert_eq!(items.len(), 1, "the recorded cluster labels shop only");
    items.push(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "old-shop", "labels": {"levee.dev/inject": "enabled"},
                     "deletionTimestamp": "2026-11-29T21:40:00Z"},
        "status": {"phase": "Terminating"},
    }));
    let list = json!({
        "apiVersion": "v1", "kind": "NamespaceList",
        "metadata": {"resourceVersion": "300"},
        "items": items,
    });
    Bytes::from(serde_json::to_vec(&list).expect("JSON"))
}

fn applies(api: &MockApi) -> Vec<Seen> {
    api.seen()
        .into_iter()
        .filter(|s| s.method == "PATCH" && s.uri.contains("/configmaps/"))
        .collect()
}

/// Waits (10 s deadline) until `check` holds for the mock's requests.
async fn until(api: &MockApi, what: &str, check: impl Fn(&[Seen]) -> bool) {
    eventually(Duration::from_secs(10), what, || {
        let seen = api.seen();
        let held = check(&seen);
        async move {
            if held {
                Ok(())
            } else {
                Err(format!("{} requests", seen.len()))
            }
        }
    })
    .await;
}

fn namespaces_watched(seen: &[Seen]) -> bool {
    seen.iter()
        .any(|s| s.uri.starts_with("/api/v1/namespaces?") && s.uri.contains("watch=true"))
}

#[tokio::test]
async fn the_leader_applies_the_bundle_in_each_labelled_namespace() {
    let (client, api) = MockApi::client();
    api.list("namespaces", StatusCode::OK, namespace_list());
    let (leader_tx, leader) = watch::channel(false);
    let (_stop, shutdown) = watch::channel(false);
    tokio::spawn(run(client, PEM.to_owned(), leader, shutdown));

    // Not the leader: the list is read and the watch started (so the pass
    // after the list has run), and nothing is written.
    until(&api, "the namespace watch", namespaces_watched).await;
    let list = api
        .seen()
        .into_iter()
        .find(|s| s.uri.starts_with("/api/v1/namespaces?"))
        .expect("a namespace LIST");
    assert!(
        list.uri
            .contains("labelSelector=levee.dev%2Finject%3Denabled"),
        "{}",
        list.uri
    );
    assert!(applies(&api).is_empty(), "a follower writes nothing");

    // Leader: shop gets its copy; old-shop, being deleted, does not.
    leader_tx.send_replace(true);
    until(&api, "the shop copy", |_| !applies(&api).is_empty()).await;
    let sent = applies(&api);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (path, query) = sent[0].uri.split_once('?').expect("a query");
    assert_eq!(
        path,
        "/api/v1/namespaces/shop/configmaps/levee-trust-bundle"
    );
    assert!(
        query.contains("fieldManager=levee-control-plane"),
        "{query}"
    );
    assert!(query.contains("force=true"), "{query}");
    assert_eq!(sent[0].content_type, "application/apply-patch+yaml");
    let body: Value = serde_json::from_slice(&sent[0].body).expect("JSON");
    assert_eq!(body, config_map("shop", PEM));
    assert_eq!(body["data"]["ca.crt"], PEM);

    // A namespace labelled later gets its copy at once; shop's is not
    // written again.
    let added = json!({"type": "ADDED", "object": {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "books", "labels": {"levee.dev/inject": "enabled"},
                     "resourceVersion": "301"},
    }});
    api.push("namespaces", Bytes::from(format!("{added}\n")))
        .await;
    until(&api, "the books copy", |_| applies(&api).len() == 2).await;
    assert!(
        applies(&api)[1]
            .uri
            .starts_with("/api/v1/namespaces/books/configmaps/")
    );
}

#[test]
fn a_copy_is_due_when_never_applied_or_reapply_old_and_never_while_terminating() {
    let ns = |name: &str, terminating: bool| {
        let mut value = json!({"metadata": {"name": name}});
        if terminating {
            value["status"] = json!({"phase": "Terminating"});
        }
        Arc::new(serde_json::from_value::<Namespace>(value).expect("a Namespace"))
    };
    let list = [ns("shop", false), ns("books", false), ns("old", true)];
    let mut copier = Copier::new(PEM);
    let now = Instant::now();
    assert_eq!(copier.due(&list, now), ["books", "shop"]);
    copier.applied("shop", now);
    assert_eq!(copier.due(&list, now + REAPPLY / 2), ["books"]);
    assert_eq!(copier.due(&list, now + REAPPLY), ["books", "shop"]);
    copier.forget();
    assert_eq!(copier.due(&list, now), ["books", "shop"]);
}
