//! `--policy-cache`: a proxy writes its last good control-plane config to
//! the cache; restarted while the control plane is down, it starts from the
//! cache (ready, `/config` source `policy-cache:…`, policy enforced,
//! endpoints routed); when the control plane comes back it switches to it.

use std::time::Duration;

use levee_tests::harness::mesh::{
    CONVERGE, apply, call, endpoints_of, mesh_proxy, metric, policy_of, read_or_empty, wait_config,
    wait_metric,
};
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{ControlPlane, eventually, yaml},
};

const SERVICE: &str = "inventory.default:7100";
const AUTHORITY: &str = "inventory:7100";

#[tokio::test]
async fn a_proxy_restarted_while_the_control_plane_is_down_starts_from_its_cache() {
    let mut cp = ControlPlane::builder().start().await;
    let up = FlakyUpstream::start("inv").await.expect("flaky");
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("policy-cache.json");
    let cache_arg = cache.to_str().expect("utf-8").to_owned();

    apply(
        &cp,
        &yaml::documents(&[
            yaml::policy(
                "inventory",
                7100,
                "  outbound:\n    timeouts: {request: 300ms}\n",
            ),
            yaml::endpoints("inventory", 7100, &[up.addr()]),
        ]),
    )
    .await;
    let mut first = mesh_proxy(&cp, "client", 1, 80)
        .arg("--policy-cache")
        .arg(&cache_arg)
        .start()
        .await;
    let r = call(&first, AUTHORITY, &[]).await.expect("call");
    assert_eq!(r.status, 200, "{r:?}");
    wait_config(&first, "the inventory policy", |c| {
        policy_of(c, SERVICE).is_some()
    })
    .await;
    // The accepted update is in the cache file.
    eventually(CONVERGE, "the cache to hold inventory", || async {
        let text = read_or_empty(&cache);
        if text.contains(SERVICE) && text.contains(&up.addr().to_string()) && text.contains("300ms")
        {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    let revision = metric(&first, "levee_policy_version", &[]).await;

    // The control plane dies; the proxy is restarted meanwhile.
    cp.kill9().await;
    first.shutdown(Duration::from_secs(15)).await;
    let second = mesh_proxy(&cp, "client", 1, 80)
        .arg("--policy-cache")
        .arg(&cache_arg)
        .start() // waits for /ready: the cache made it ready
        .await;
    let config = second.config().await.expect("/config");
    let source = config["source"].as_str().unwrap_or_default();
    assert!(source.starts_with("policy-cache:"), "{config}");
    assert!(source.contains("unreachable"), "{config}");
    assert_eq!(endpoints_of(&config, SERVICE), vec![up.addr().to_string()]);
    assert!(policy_of(&config, SERVICE).is_some(), "{config}");
    assert_eq!(
        metric(&second, "levee_control_plane_connected", &[]).await,
        0.0
    );
    assert_eq!(metric(&second, "levee_policy_version", &[]).await, revision);
    // Served from the cache: the endpoints route, the policy is enforced.
    let r = call(&second, AUTHORITY, &[]).await.expect("call");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-flaky-instance"), "inv");
    let slow = call(&second, AUTHORITY, &[("x-flaky-delay", "1s")])
        .await
        .expect("slow call");
    assert_eq!(slow.status, 504, "{slow:?}");

    // The control plane returns: the proxy reconnects and runs on its config.
    let cp = cp.restart_on_same_addrs().await;
    wait_metric(&second, "levee_control_plane_connected", &[], 1.0).await;
    wait_config(&second, "the control plane as the source", |c| {
        c["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("control-plane:"))
            && policy_of(c, SERVICE).is_some()
    })
    .await;
    apply(
        &cp,
        &yaml::endpoints(
            "inventory",
            7100,
            &[up.addr(), "127.0.0.1:9".parse().expect("addr")],
        ),
    )
    .await;
    wait_config(&second, "the new endpoints", |c| {
        endpoints_of(c, SERVICE).len() == 2
    })
    .await;
    eventually(CONVERGE, "the cache to follow", || async {
        let text = read_or_empty(&cache);
        if text.contains("127.0.0.1:9\"") {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
}

/// "Ready" means "has a config": with the control plane unreachable and no
/// cache there is none, so `/ready` stays 503 (while `/live` is 200).
#[tokio::test]
async fn without_a_cache_or_control_plane_the_proxy_is_not_ready() {
    // A port nothing listens on: bind, note it, close.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let proxy = levee_tests::harness::Proxy::builder()
        .control_plane(&format!("http://{unused}"))
        .start_unready()
        .await;
    eventually(CONVERGE, "a failed connection attempt", || async {
        let output = proxy.process.output();
        if output.contains("control plane stream down") {
            Ok(())
        } else {
            Err(output)
        }
    })
    .await;
    let ready = proxy.admin_get("/ready").await.expect("/ready");
    assert_eq!(ready.status, 503, "{ready:?}");
    let live = proxy.admin_get("/live").await.expect("/live");
    assert_eq!(live.status, 200, "{live:?}");
    assert_eq!(
        metric(&proxy, "levee_control_plane_connected", &[]).await,
        0.0
    );
}
