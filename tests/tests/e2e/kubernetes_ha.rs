//! Two `levee-control-plane --kubernetes` replicas read the same (recorded)
//! API state from a stand-in API server; a proxy configured with both is
//! subscribed through one of them; that replica is `kill -9`ed under a
//! steady stream of requests: the proxy moves to the other replica, is back
//! in sync, and no request fails. Prints the failover time (kill → the
//! proxy's config comes from the other replica again).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use levee_tests::flaky::FlakyUpstream;
use levee_tests::harness::kube_api::{KubeApi, fixture};
use levee_tests::harness::mesh::{CONVERGE, call, endpoints_of, wait_config, wait_metric};
use levee_tests::harness::{ControlPlane, Proxy, eventually};
use serde_json::{Value, json};

/// What callers put in `Host`: Service `shop/payments`, port 80.
const AUTHORITY: &str = "payments.shop";
const SERVICE: &str = "payments.shop:80";

/// The recorded EndpointSlice list, narrowed to the IPv4 slice of
/// `payments` with its endpoint moved to loopback (`port` behind the
/// Service's port `http`): traffic must stay on this machine.
fn slices(port: u16) -> Bytes {
    let mut list: Value =
        serde_json::from_slice(&fixture("watch/endpointslices.list.json")).expect("JSON");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let mut slice = items
        .into_iter()
        .find(|s| s["metadata"]["name"] == "payments-rh8f6")
        .expect("the payments IPv4 slice");
    slice["endpoints"] = json!([{"addresses": ["127.0.0.1"],
        "conditions": {"ready": true, "serving": true, "terminating": false}}]);
    slice["ports"] = json!([{"name": "http", "protocol": "TCP", "port": port}]);
    list["items"] = json!([slice]);
    Bytes::from(list.to_string())
}

async fn replica(api: &KubeApi, dir: &std::path::Path, name: &str) -> ControlPlane {
    ControlPlane::builder()
        .arg("--kubernetes")
        .arg("--kubeconfig")
        .arg(api.kubeconfig(dir))
        .arg("--pod-name")
        .arg(name)
        .start()
        .await
}

#[tokio::test]
async fn a_proxy_fails_over_to_the_other_replica_without_a_failed_request() {
    let upstream = FlakyUpstream::start("payments").await.expect("flaky");
    let api = KubeApi::start(HashMap::from([
        ("services", fixture("watch/services.list.json")),
        ("endpointslices", slices(upstream.addr().port())),
        (
            "resiliencepolicies",
            fixture("watch/resiliencepolicies.list.json"),
        ),
    ]))
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut a = replica(&api, dir.path(), "cp-a").await;
    let mut b = replica(&api, dir.path(), "cp-b").await;
    let urls = [a.grpc_url(), b.grpc_url()];
    // The caller says it is a `payments` pod itself: in Kubernetes mode its
    // hello registers no endpoint (the slices are the only source), so the
    // endpoints below are exactly the slice's.
    let caller = Arc::new(
        Proxy::builder()
            .service("payments")
            .namespace("shop")
            .app_port(1)
            .arg("--service-port")
            .arg("80")
            .control_plane(&urls.join(","))
            .start()
            .await,
    );
    let first = call(&caller, AUTHORITY, &[]).await.expect("first call");
    assert_eq!(first.status, 200, "{first:?}");
    let config = wait_config(&caller, "payments endpoints from a replica", |c| {
        endpoints_of(c, SERVICE) == [upstream.addr().to_string()]
    })
    .await;
    let source = config["source"].as_str().unwrap_or_default().to_owned();
    let on_a = source == format!("control-plane:{}", urls[0]);
    assert!(
        on_a || source == format!("control-plane:{}", urls[1]),
        "source {source}"
    );
    // One replica holds the Lease (the status writer).
    eventually(CONVERGE, "a Lease holder", || async {
        match api.lease_holder() {
            Some(h) if h == "cp-a" || h == "cp-b" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // The leader writes the policy's status through the status subresource.
    let status_path =
        "PATCH /apis/levee.dev/v1alpha1/namespaces/shop/resiliencepolicies/payments/status";
    eventually(CONVERGE, "a status patch", || async {
        let log = api.log();
        if log.iter().any(|l| l.starts_with(status_path)) {
            Ok(())
        } else {
            Err(format!("{log:?}"))
        }
    })
    .await;

    // A steady, low-rate stream of requests through the proxy.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (caller, ok, failed, stop) = (caller.clone(), ok.clone(), failed.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = String::new();
            while !stop.load(Ordering::Relaxed) {
                match call(&caller, AUTHORITY, &[]).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        last = format!("{other:?}");
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            last
        })
    };
    let successes = |n: u64| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::Relaxed) + n;
            eventually(CONVERGE, "more successful requests", || async {
                match ok.load(Ordering::Relaxed) {
                    done if done >= target => Ok(()),
                    done => Err(format!("{done} of {target}")),
                }
            })
            .await;
        }
    };
    successes(20).await;

    let (victim, survivor) = if on_a { (&mut a, &b) } else { (&mut b, &a) };
    let killed = Instant::now();
    victim.kill9().await;
    let wanted = format!("control-plane:{}", survivor.grpc_url());
    wait_config(&caller, "the config from the surviving replica", |c| {
        c["source"] == wanted.as_str() && endpoints_of(c, SERVICE) == [upstream.addr().to_string()]
    })
    .await;
    let failover = killed.elapsed();
    wait_metric(&caller, "levee_control_plane_connected", &[], 1.0).await;
    successes(50).await;
    stop.store(true, Ordering::Relaxed);
    let last = load.await.expect("load task");
    eprintln!(
        "kubernetes HA failover: kill -9 → proxy back in sync on the other replica in {} ms; {} requests ok, {} failed",
        failover.as_millis(),
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a request failed: {last}"
    );
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );
    // The replicas listed, then watched.
    let log = api.log();
    assert!(
        log.iter()
            .any(|l| l.contains("/endpointslices?") && l.contains("watch=true"))
    );
}

/// `--token-review` in Kubernetes mode goes through the `--kubeconfig`
/// client, like the watches: with no other Kubernetes configuration in the
/// environment (no `$KUBECONFIG`, no `~/.kube/config`, not in a cluster),
/// the control plane still starts and becomes ready.
#[tokio::test]
async fn token_review_uses_the_kubeconfig_client() {
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
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("empty home");
    let cp = ControlPlane::builder()
        .arg("--kubernetes")
        .arg("--kubeconfig")
        .arg(api.kubeconfig(dir.path()))
        .arg("--token-review")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("HOME", &home)
        .start()
        .await;
    assert!(
        cp.process.output().contains("control plane listening"),
        "{}",
        cp.process.output()
    );
    assert!(
        api.log().iter().any(|r| r.starts_with("GET ")),
        "the watches listed through --kubeconfig: {:?}",
        api.log()
    );
}
