//! Admin authentication of the real `levee-control-plane` binary.
//!
//! - With `--admin-token-file`: a missing or wrong bearer token gets
//!   `UNAUTHENTICATED` from every PolicyAdmin call (gRPC and `leveectl`),
//!   and nothing changes: the document and the store revision stay as they
//!   were; the refusals are counted in `/metrics`.
//! - Without it (the default): the admin API answers loopback callers only.
//!   A client whose socket is bound to a non-loopback address of this
//!   machine (the server still listens on 127.0.0.1) is refused, token or
//!   not, while Discovery works for it. Skipped, saying so, when this
//!   machine has no non-loopback address (the unit tests in
//!   `control-plane/src/auth.rs` cover the check itself).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use levee_proto::v1;
use levee_proto::v1::discovery_client::DiscoveryClient;
use levee_proto::v1::policy_admin_client::PolicyAdminClient;
use levee_tests::harness::{ControlPlane, binary};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

const TOKEN: &str = "s3cret-admin-token";

fn policy(timeout: &str) -> String {
    format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
         metadata: {{name: payments, namespace: shop}}\n\
         spec:\n  target: {{service: payments, port: 8080}}\n  \
         outbound:\n    timeouts: {{request: {timeout}}}\n"
    )
}

fn payments_ref() -> Option<v1::DocumentRef> {
    Some(v1::DocumentRef {
        kind: "ResiliencePolicy".into(),
        namespace: "shop".into(),
        name: "payments".into(),
    })
}

async fn channel(cp: &ControlPlane, local: Option<IpAddr>) -> Channel {
    Endpoint::from_shared(cp.grpc_url())
        .expect("url")
        .local_address(local)
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connecting to the control plane")
}

/// `message` with `authorization: <value>` when given.
fn with_auth<T>(message: T, authorization: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ASCII"));
    }
    request
}

fn apply(timeout: &str) -> v1::ApplyRequest {
    v1::ApplyRequest {
        yaml: policy(timeout),
        ..Default::default()
    }
}

/// Runs `leveectl --server URL ARGS` without the harness's token; returns
/// the exit code and stderr.
async fn leveectl_as_is(cp: &ControlPlane, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(binary("leveectl"))
        .env_remove("LEVEE_TOKEN")
        .env_remove("LEVEE_SERVER")
        .args(["--server", &cp.grpc_url()])
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("leveectl finishes")
        .expect("leveectl runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_and_changes_nothing() {
    let cp = ControlPlane::builder().admin_token(TOKEN).start().await;
    let mut admin = PolicyAdminClient::new(channel(&cp, None).await);
    let bearer = format!("Bearer {TOKEN}");
    let applied = admin
        .apply(with_auth(apply("1s"), Some(&bearer)))
        .await
        .expect("apply with the token")
        .into_inner();
    assert_eq!(applied.revision, 1);

    let refused = [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret-admin-token-and-more"),
        Some("Bearer "),
        Some(TOKEN), // no scheme
        Some("Basic czNjcmV0LWFkbWluLXRva2Vu"),
    ];
    for authorization in refused {
        let calls = [
            admin
                .apply(with_auth(apply("9s"), authorization))
                .await
                .map(drop),
            admin
                .delete(with_auth(
                    v1::DeleteRequest {
                        r#ref: payments_ref(),
                        expected_revision: None,
                    },
                    authorization,
                ))
                .await
                .map(drop),
            admin
                .list(with_auth(v1::ListRequest::default(), authorization))
                .await
                .map(drop),
            admin
                .status(with_auth(v1::StatusRequest {}, authorization))
                .await
                .map(drop),
        ];
        for (call, result) in ["apply", "delete", "list", "status"].iter().zip(calls) {
            let error = result.expect_err("refused");
            assert_eq!(
                error.code(),
                Code::Unauthenticated,
                "{call} with {authorization:?}: {error}"
            );
        }
    }
    // leveectl: no token, a wrong one.
    let file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    std::fs::write(file.path(), policy("9s")).expect("write");
    let path = file.path().to_str().expect("utf-8");
    for args in [
        vec!["apply", "-f", path],
        vec!["--token", "wrong", "apply", "-f", path],
        vec![
            "--token", "wrong", "delete", "policy", "payments", "-n", "shop",
        ],
    ] {
        let (code, stderr) = leveectl_as_is(&cp, &args).await;
        assert_eq!(code, Some(1), "leveectl {args:?}: {stderr}");
        assert!(stderr.contains("not authorized"), "{args:?}: {stderr}");
    }

    // Nothing changed.
    let got = admin
        .get(with_auth(
            v1::GetRequest {
                r#ref: payments_ref(),
            },
            Some(&bearer),
        ))
        .await
        .expect("get with the token")
        .into_inner();
    assert_eq!(got.revision, 1, "the store revision did not move");
    let document = got.document.expect("still stored");
    assert_eq!(document.revision, 1);
    assert!(document.yaml.contains("request: 1s"), "{}", document.yaml);
    let rejected = 24 + 3;
    let metrics = cp.metrics().await.expect("metrics");
    let sample = metrics.sum(
        "levee_cp_admin_requests_rejected_total",
        &[("reason", "unauthenticated")],
    );
    assert_eq!(sample, Some(f64::from(rejected)), "rejections counted");
}

/// A non-loopback IPv4 address of this machine, from the kernel's local
/// routing table (`/proc/net/fib_trie`: `|-- ADDR` then `/32 host LOCAL`).
fn non_loopback_local_ipv4() -> Option<Ipv4Addr> {
    let trie = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    let lines: Vec<&str> = trie.lines().collect();
    lines.windows(2).find_map(|pair| {
        let address: Ipv4Addr = pair[0].trim().strip_prefix("|-- ")?.parse().ok()?;
        let local = pair[1].contains("/32 host LOCAL");
        (local && !address.is_loopback() && !address.is_unspecified()).then_some(address)
    })
}

#[tokio::test]
async fn without_a_token_file_only_loopback_callers_may_administer() {
    let Some(other) = non_loopback_local_ipv4() else {
        eprintln!("SKIPPED: this machine has no non-loopback address to call from");
        return;
    };
    // Listens on 127.0.0.1 (the harness default); no token file.
    let cp = ControlPlane::builder().start().await;
    let remote = channel(&cp, Some(IpAddr::V4(other))).await;
    let mut remote_admin = PolicyAdminClient::new(remote.clone());
    for authorization in [None, Some("Bearer anything")] {
        let error = remote_admin
            .apply(with_auth(apply("9s"), authorization))
            .await
            .expect_err("a non-loopback caller is refused");
        assert_eq!(error.code(), Code::Unauthenticated, "{error}");
        assert!(error.message().contains("loopback"), "{}", error.message());
        let error = remote_admin
            .list(with_auth(v1::ListRequest::default(), authorization))
            .await
            .expect_err("a non-loopback caller is refused");
        assert_eq!(error.code(), Code::Unauthenticated, "{error}");
    }

    // Discovery is served to the same caller.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let hello = v1::Hello {
        subscriptions: vec![v1::ServiceRef {
            name: "payments".into(),
            namespace: "shop".into(),
            port: 8080,
        }],
        proxy_version: "auth-test".into(),
        ..Default::default()
    };
    tx.send(v1::WatchRequest {
        kind: Some(v1::watch_request::Kind::Hello(hello)),
    })
    .await
    .expect("queue hello");
    let requests = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|request| (request, rx))
    });
    let mut updates = DiscoveryClient::new(remote)
        .watch(requests)
        .await
        .expect("Discovery answers a non-loopback caller")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), updates.message())
        .await
        .expect("an update within 10 s")
        .expect("no stream error")
        .expect("an update");
    assert!(matches!(
        first.kind,
        Some(v1::watch_response::Kind::Update(_))
    ));

    // From loopback: allowed; it sees the stream came from `other` and that
    // nothing was stored.
    let mut local_admin = PolicyAdminClient::new(channel(&cp, None).await);
    let status = local_admin
        .status(v1::StatusRequest {})
        .await
        .expect("status from loopback")
        .into_inner();
    assert_eq!(status.revision, 0, "refused calls stored nothing");
    let peers: Vec<&str> = status.proxies.iter().map(|p| p.peer.as_str()).collect();
    assert!(
        peers.iter().any(|p| p.starts_with(&format!("{other}:"))),
        "the stream's peer is {other}: {peers:?}"
    );
    let applied = local_admin
        .apply(apply("1s"))
        .await
        .expect("apply from loopback")
        .into_inner();
    assert_eq!(applied.revision, 1);
    let metrics = cp.metrics().await.expect("metrics");
    let sample = metrics.sum(
        "levee_cp_admin_requests_rejected_total",
        &[("reason", "not_loopback")],
    );
    assert_eq!(sample, Some(4.0), "rejections counted");
    drop((tx, updates));
}
