//! The real `leveectl` binary against an in-process control plane: output,
//! exit codes and error messages.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{TestControlPlane, policy_yaml};

/// (exit code, stdout, stderr) of `leveectl ARGS` with `--server` set.
async fn leveectl(server: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_leveectl"));
    command
        .arg("--server")
        .arg(server)
        .args(args)
        .env_remove("LEVEE_TOKEN")
        .env_remove("LEVEE_SERVER");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("leveectl finishes within 30s")
        .expect("leveectl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_str().expect("utf-8").to_owned()
}

const WITH_ROUTE: &str = "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
metadata: {name: payments, namespace: shop}\nspec:\n  target: {service: payments}\n  outbound:\n    \
timeouts: {request: 2s}\n    routes:\n      - name: create\n        match: {pathPrefix: /payments, methods: [POST]}\n        \
timeouts: {request: 5s}\n";

#[tokio::test]
async fn apply_get_diff_explain_status_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(&dir.path().join("data"), &[]).await;
    let url = cp.url();
    let file = write(dir.path(), "payments.yaml", WITH_ROUTE);

    let (code, out, err) = leveectl(&url, &["apply", "-f", &file], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ResiliencePolicy shop/payments created"),
        "{out}"
    );
    assert!(out.contains("revision 1"), "{out}");

    let (code, out, _) = leveectl(&url, &["get", "policies"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .next()
            .is_some_and(|h| h.starts_with("NAMESPACE")),
        "{out}"
    );
    assert!(
        out.contains("shop") && out.contains("payments") && out.contains('*'),
        "{out}"
    );

    let (code, out, _) = leveectl(
        &url,
        &["get", "policy", "payments", "-n", "shop", "-o", "yaml"],
        &[],
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        out.contains("kind: ResiliencePolicy") && out.contains("request: 5s"),
        "{out}"
    );
    let (code, out, _) = leveectl(
        &url,
        &["get", "policy", "payments", "-n", "shop", "-o", "json"],
        &[],
    )
    .await;
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(json["revision"], 1);
    assert_eq!(json["document"]["spec"]["target"]["service"], "payments");

    let (code, out, _) = leveectl(&url, &["diff", "-f", &file], &[]).await;
    assert_eq!((code, out.as_str()), (0, ""), "no differences");
    let changed = write(
        dir.path(),
        "changed.yaml",
        &WITH_ROUTE.replace("request: 2s", "request: 3s"),
    );
    let (code, out, _) = leveectl(&url, &["diff", "-f", &changed], &[]).await;
    assert_eq!(code, 1, "differences exit 1: {out}");
    let removed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with('-') && !l.starts_with("---"))
        .collect();
    let added: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .collect();
    assert_eq!(removed.len(), 1, "{out}");
    assert_eq!(added.len(), 1, "{out}");
    assert!(
        removed[0].ends_with("request: 2s") && added[0].ends_with("request: 3s"),
        "{out}"
    );

    let (code, out, err) = leveectl(
        &url,
        &[
            "explain",
            "payments",
            "-n",
            "shop",
            "--path",
            "/payments/1",
            "--method",
            "POST",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("route:   create"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("outbound.timeouts.request "))
        .expect("request row");
    assert!(
        line.contains("5s") && line.ends_with("route create"),
        "{line}"
    );
    let (_, out, _) = leveectl(
        &url,
        &["explain", "payments", "-n", "shop", "-o", "json"],
        &[],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let request = json["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["field"] == "outbound.timeouts.request");
    assert_eq!(
        request.map(|f| (&f["value"], &f["source"])),
        Some((&"2s".into(), &"service".into()))
    );

    let (code, out, _) = leveectl(&url, &["status"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("store revision 1, 0 proxies connected"),
        "{out}"
    );

    let (code, out, _) = leveectl(&url, &["delete", "policy", "payments", "-n", "shop"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("deleted") && out.contains("revision 2"),
        "{out}"
    );
    let (code, _, err) = leveectl(&url, &["get", "policy", "payments", "-n", "shop"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    cp.stop().await;
}

#[tokio::test]
async fn invalid_files_name_file_document_and_field_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(&dir.path().join("data"), &[]).await;
    let url = cp.url();
    let good = write(
        dir.path(),
        "a-good.yaml",
        &policy_yaml("good", "payments", "1s"),
    );
    let bad = write(
        dir.path(),
        "b-bad.yaml",
        // The second document is invalid (a timeout without a unit), so it
        // is written by hand: the typed builders only print valid ones.
        &format!(
            "{}---\n{}",
            policy_yaml("ok", "orders", "1s"),
            "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: bad, namespace: shop}\n\
             spec:\n  target: {service: stock, port: 8080}\n  outbound:\n    timeouts: {request: \"25\"}\n"
        ),
    );
    let (code, out, err) = leveectl(&url, &["apply", "-f", &good, "-f", &bad], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("b-bad.yaml: document 2"), "{err}");
    assert!(err.contains("spec.outbound.timeouts.request"), "{err}");
    let (_, out, _) = leveectl(&url, &["get", "policies"], &[]).await;
    assert!(
        out.contains("No ResiliencePolicy found"),
        "all or nothing: {out}"
    );

    // validate works offline and lists the same problem.
    let (code, out, _) = leveectl("http://127.0.0.1:1", &["validate", "-f", &bad], &[]).await;
    assert_eq!(code, 1);
    assert!(out.contains("spec.outbound.timeouts.request"), "{out}");
    cp.stop().await;
}

#[tokio::test]
async fn conflicts_and_missing_tokens_fail_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = write(dir.path(), "token", "t0ken");
    let cp =
        TestControlPlane::start(&dir.path().join("data"), &["--admin-token-file", &token]).await;
    let url = cp.url();
    let file = write(
        dir.path(),
        "p.yaml",
        &policy_yaml("payments", "payments", "1s"),
    );

    let (code, _, err) = leveectl(&url, &["apply", "-f", &file], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not authorized"), "{err}");
    let (code, _, err) = leveectl(&url, &["--token", "nope", "status"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not authorized"), "{err}");

    let env = [("LEVEE_TOKEN", "t0ken")];
    let (code, out, err) = leveectl(
        &url,
        &["apply", "-f", &file, "--expected-revision", "0"],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revision 1"), "{out}");
    let (code, _, err) = leveectl(
        &url,
        &["apply", "-f", &file, "--expected-revision", "0"],
        &env,
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("conflict") && err.contains("revision 1"),
        "{err}"
    );
    cp.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_fast() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let started = Instant::now();
    let (code, _, err) = leveectl(&format!("http://127.0.0.1:{port}"), &["status"], &[]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach the control plane at http://127.0.0.1:"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let (code, _, err) = leveectl(
        &format!("http://127.0.0.1:{port}"),
        &["diff", "-f", "/nonexistent.yaml"],
        &[],
    )
    .await;
    assert_eq!(code, 2, "diff errors exit 2");
    assert!(err.contains("/nonexistent.yaml"), "{err}");
}

#[tokio::test]
async fn server_side_rejections_name_the_file_and_dry_runs_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(&dir.path().join("data"), &[]).await;
    let url = cp.url();
    let first = write(
        dir.path(),
        "first.yaml",
        &policy_yaml("first", "payments", "1s"),
    );
    let (code, _, err) = leveectl(&url, &["apply", "-f", &first], &[]).await;
    assert_eq!(code, 0, "{err}");

    // Valid on its own, but a stored policy already targets payments:8080.
    let second = write(
        dir.path(),
        "second.yaml",
        &policy_yaml("second", "payments", "2s"),
    );
    let (code, _, err) = leveectl(&url, &["apply", "-f", &second], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("second.yaml document 1"), "{err}");
    assert!(
        err.contains("spec.target") && err.contains("shop/first"),
        "{err}"
    );

    let changed = write(
        dir.path(),
        "first-v2.yaml",
        &policy_yaml("first", "payments", "5s"),
    );
    let (code, out, err) = leveectl(&url, &["apply", "-f", &changed, "--dry-run"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ResiliencePolicy shop/first configured (dry run)"),
        "{out}"
    );
    assert!(out.contains("revision 1"), "{out}");
    let (_, out, _) = leveectl(
        &url,
        &["get", "policy", "first", "-n", "shop", "-o", "yaml"],
        &[],
    )
    .await;
    assert!(out.contains("request: 1s"), "dry run stored nothing: {out}");
    cp.stop().await;
}
