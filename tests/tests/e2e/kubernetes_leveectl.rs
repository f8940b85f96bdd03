//! `leveectl` against a `levee-control-plane --kubernetes` replica (fed the
//! recorded API state by a stand-in API server): `status` lists the
//! proxies connected to that replica and names it; the store calls
//! (`apply`, `get`, `delete`) fail with the `kubectl` command to use, since
//! the Kubernetes API holds the policies.

use std::collections::HashMap;

use levee_tests::harness::kube_api::{KubeApi, fixture};
use levee_tests::harness::mesh::CONVERGE;
use levee_tests::harness::{ControlPlane, Proxy, eventually};

#[tokio::test]
async fn leveectl_reports_the_replicas_proxies_and_points_writes_to_kubectl() {
    let api = KubeApi::start(HashMap::from([
        ("services", fixture("watch/services.list.json")),
        ("endpointslices", fixture("watch/endpointslices.list.json")),
        (
            "resiliencepolicies",
            fixture("watch/resiliencepolicies.list.json"),
        ),
    ]))
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cp = ControlPlane::builder()
        .arg("--kubernetes")
        .arg("--kubeconfig")
        .arg(api.kubeconfig(dir.path()))
        .arg("--pod-name")
        .arg("cp-0")
        .start()
        .await;
    // No request is sent: the proxy only subscribes (the recorded
    // endpoints are not on this machine).
    let _proxy = Proxy::builder()
        .service("payments")
        .namespace("shop")
        .app_port(1)
        .control_plane(&cp.grpc_url())
        .start()
        .await;

    let json = eventually(CONVERGE, "leveectl status to list the proxy", || async {
        let out = cp
            .leveectl(&["status", "-o", "json"])
            .await
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("{out:?}"));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        match json["proxies"].as_array() {
            Some(p) if p.iter().any(|p| p["service"] == "payments") => Ok(json),
            _ => Err(json.to_string()),
        }
    })
    .await;
    assert_eq!(json["kubernetesReplica"], "cp-0", "{json}");
    let table = cp.leveectl(&["status"]).await.expect("leveectl");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.starts_with("Kubernetes mode, replica cp-0: 1 proxies connected"),
        "{text}"
    );

    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
         metadata: {name: payments, namespace: shop}\n\
         spec:\n  target: {service: payments}\n  outbound:\n    timeouts: {request: 2s}\n",
    )
    .expect("write policy");
    let policy = policy.to_str().expect("utf-8 path");
    for (args, instead) in [
        (vec!["apply", "-f", policy], "kubectl apply -f FILE"),
        (
            vec!["get", "policy", "payments", "-n", "shop"],
            "kubectl get resiliencepolicy NAME",
        ),
        (vec!["get", "policies"], "kubectl get resiliencepolicies -A"),
        (
            vec!["delete", "policy", "payments", "-n", "shop"],
            "kubectl delete resiliencepolicy",
        ),
    ] {
        let out = cp.leveectl(&args).await.expect("leveectl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {out:?}");
        assert!(
            stderr.contains("this control plane runs in Kubernetes mode")
                && stderr.contains(instead),
            "{args:?}: {stderr}"
        );
    }
}
