use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use levee_proto::policy::ServiceKey;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::metrics::Metrics;

const VALID: &str = r#"
apiVersion: levee.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: payments, namespace: shop}
spec:
  target: {service: payments, port: 8080}
  outbound:
    timeouts: {request: 2s}
---
apiVersion: levee.dev/v1alpha1
kind: ServiceEndpoints
metadata: {name: payments, namespace: shop}
spec: {service: payments, port: 8080, addresses: ["127.0.0.1:9001", "127.0.0.1:9002"]}
"#;

fn payments() -> ServiceKey {
    ServiceKey {
        name: "payments".into(),
        namespace: "shop".into(),
        port: 8080,
    }
}

fn with_request_timeout(timeout: &str) -> String {
    VALID.replace("request: 2s", &format!("request: {timeout}"))
}

/// `request: 25` is not a duration: refused with its field path.
fn invalid() -> String {
    with_request_timeout("\"25\"")
}

fn request_timeout(shared: &Shared) -> Option<String> {
    let policy = shared.policy_for(&payments())?;
    policy.spec.outbound.timeouts.request.map(|d| d.to_string())
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared::new("default".into(), Metrics::new()))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write policy file");
}

/// Polls `done` until it holds, failing after a generous deadline.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn fast() -> WatchOptions {
    WatchOptions {
        poll_interval: Duration::from_millis(10),
        sighup: false,
    }
}

#[tokio::test]
async fn valid_file_loads_and_makes_the_proxy_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.yaml");
    write(&path, VALID);
    let shared = shared();
    assert!(!shared.is_ready());

    let shutdown = CancellationToken::new();
    load_and_watch(shared.clone(), path.clone(), shutdown.clone())
        .await
        .expect("valid file loads");

    let snapshot = shared.snapshot.load();
    assert_eq!(snapshot.version, 1);
    assert_eq!(snapshot.source, format!("file:{}", path.display()));
    assert!(snapshot.loaded_at.is_some());
    assert_eq!(request_timeout(&shared).as_deref(), Some("2s"));
    let endpoints = snapshot
        .endpoints
        .get(&payments())
        .expect("static endpoints");
    assert_eq!(endpoints.len(), 2);
    assert!(shared.is_ready());
    assert_eq!(shared.metrics.policy_updates(true), 1);
    let text = shared.metrics.encode();
    assert!(text.contains("levee_policy_version 1\n"), "{text}");
    assert!(
        text.contains(r#"levee_endpoints{service="payments.shop:8080",state="ready"} 2"#),
        "{text}"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn invalid_file_is_refused_at_start_with_field_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.yaml");
    write(&path, &invalid());
    let shared = shared();

    let error = load_and_watch(shared.clone(), path, CancellationToken::new())
        .await
        .expect_err("invalid file refused");
    let message = error.to_string();
    assert!(
        message.contains("spec.outbound.timeouts.request"),
        "{message}"
    );
    assert!(message.contains("is invalid"), "{message}");
    assert_eq!(shared.snapshot.load().version, 0);
    assert!(!shared.is_ready());
}

#[tokio::test]
async fn missing_file_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = load_and_watch(
        shared(),
        dir.path().join("absent.yaml"),
        CancellationToken::new(),
    )
    .await
    .expect_err("missing file refused");
    assert!(
        error.to_string().contains("cannot read policy file"),
        "{error}"
    );
}

#[tokio::test]
async fn duplicate_targets_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.yaml");
    let first_policy = VALID.split("---").next().expect("first document");
    write(&path, &format!("{VALID}---{first_policy}"));
    let error = load_and_watch(shared(), path, CancellationToken::new())
        .await
        .expect_err("duplicate refused");
    let message = error.to_string();
    assert!(message.contains("document 3"), "{message}");
    assert!(message.contains("spec.target"), "{message}");
}

#[tokio::test]
async fn a_changed_file_is_picked_up_by_polling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.yaml");
    write(&path, VALID);
    let shared = shared();
    let shutdown = CancellationToken::new();
    let watching = load_and_watch_with(shared.clone(), path.clone(), shutdown.clone(), fast())
        .await
        .expect("loads");

    write(&path, &with_request_timeout("3s"));
    eventually("version 2", || shared.snapshot.load().version == 2).await;
    assert_eq!(request_timeout(&shared).as_deref(), Some("3s"));
    assert_eq!(shared.metrics.policy_updates(true), 2);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), watching.task)
        .await
        .expect("watch task stops on shutdown")
        .expect("watch task did not panic");
}

#[tokio::test]
async fn an_invalid_edit_is_refused_and_the_last_good_policy_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.yaml");
    write(&path, VALID);
    let shared = shared();
    let shutdown = CancellationToken::new();
    load_and_watch_with(shared.clone(), path.clone(), shutdown.clone(), fast())
        .await
        .expect("loads");
    let before = shared.snapshot.load_full();

    write(&path, &invalid());
    eventually("a nack", || shared.metrics.policy_updates(false) == 1).await;
    let after = shared.snapshot.load_full();
    assert!(Arc::ptr_eq(&before, &after), "the snapshot must not change");
    assert_eq!(request_timeout(&shared).as_deref(), Some("2s"));
    assert!(
        shared
            .metrics
            .encode()
            .contains(r#"levee_policy_updates_total{result="nack"} 1"#)
    );

    // Later polls of the same bad content do not count it again; a fix is applied.
    write(&path, &with_request_timeout("4s"));
    eventually("version 2", || shared.snapshot.load().version == 2).await;
    assert_eq!(shared.metrics.policy_updates(false), 1);
    assert_eq!(request_timeout(&shared).as_deref(), Some("4s"));
    shutdown.cancel();
}

#[tokio::test]
async fn reload_now_applies_changes_once_and_reports_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.yaml");
    write(&path, VALID);
    let shared = shared();
    let file = PolicyFile::new(shared.clone(), path.clone());
    assert_eq!(file.load_initial().await.expect("loads"), 1);

    assert_eq!(
        file.reload_now().await.expect("same content"),
        Reload::Unchanged
    );
    write(&path, &with_request_timeout("5s"));
    assert_eq!(
        file.reload_now().await.expect("new content"),
        Reload::Applied { version: 2 }
    );
    assert_eq!(file.poll().await.expect("nothing new"), Reload::Unchanged);

    write(&path, &invalid());
    let error = file.reload_now().await.expect_err("invalid");
    assert!(matches!(error, LoadError::Invalid { .. }), "{error}");
    // A forced reload reports the same bad content again; a poll does not.
    assert!(file.reload_now().await.is_err());
    assert_eq!(
        file.poll().await.expect("already refused"),
        Reload::Unchanged
    );
    assert_eq!(shared.metrics.policy_updates(false), 2);

    std::fs::remove_file(&path).expect("remove");
    assert!(matches!(file.poll().await, Err(LoadError::Read { .. })));
    assert_eq!(shared.snapshot.load().version, 2);
}

#[tokio::test]
async fn sighup_reloads_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.yaml");
    write(&path, VALID);
    let shared = shared();
    let shutdown = CancellationToken::new();
    // Polling too slow to matter: only the signal can trigger the reload.
    let options = WatchOptions {
        poll_interval: Duration::from_secs(3600),
        sighup: true,
    };
    load_and_watch_with(shared.clone(), path.clone(), shutdown.clone(), options)
        .await
        .expect("loads");

    write(&path, &with_request_timeout("6s"));
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    eventually("version 2", || shared.snapshot.load().version == 2).await;
    assert_eq!(request_timeout(&shared).as_deref(), Some("6s"));
    shutdown.cancel();
}
