//! Chaos: the control plane `kill -9`ed and restarted every second under
//! steady load through a proxy in control-plane mode. No request fails (the
//! proxy serves its last good config while the control plane is down and
//! resyncs when it is up); a proxy restarted while the control plane is
//! down starts from its `--policy-cache` and serves at once; after the
//! flapping, changes flow again.
//!
//! In CI the flapping lasts [`CI_FLAP_SECS`] seconds, because every e2e
//! test must stay well under 30 s in a debug build; set
//! `LEVEE_CHAOS_FLAP_SECS=60` for the full minute locally:
//! `LEVEE_CHAOS_FLAP_SECS=60 cargo test --workspace --test e2e chaos_control_plane:: -- --nocapture`.
//! (`discovery_restart.rs` is the single, slower kill-and-restart with
//! per-proxy resync checks; `discovery_cache.rs` the cache file itself.)

use std::time::Duration;

use levee_tests::{
    flaky::FlakyUpstream,
    harness::{
        ControlPlane, Proxy,
        mesh::{
            CONVERGE, apply, call, endpoints_of, mesh_proxy, metric, policy_of, wait_config,
            wait_metric,
        },
        retrying::RetryingLoad,
        yaml,
    },
};

const SERVICE: &str = "inventory.default:7100";
const AUTHORITY: &str = "inventory:7100";

/// Seconds of flapping in CI (see the module docs).
const CI_FLAP_SECS: u64 = 10;

/// How long each kill leaves the control plane down before its restart.
const DOWN: Duration = Duration::from_millis(300);

fn flap_secs() -> u64 {
    std::env::var("LEVEE_CHAOS_FLAP_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_FLAP_SECS)
}

/// The caller proxy in control-plane mode, writing `cache`.
fn caller(cp: &ControlPlane, cache: &std::path::Path) -> levee_tests::harness::ProxyBuilder {
    mesh_proxy(cp, "client", 1, 80)
        .arg("--policy-cache")
        .arg(cache)
}

/// How often `proxy` logged a control-plane stream coming up.
fn stream_ups(proxy: &Proxy) -> usize {
    proxy
        .process
        .output()
        .matches("control plane stream up")
        .count()
}

async fn ok_count(proxy: &Proxy) -> f64 {
    let m = proxy.metrics().await.expect("metrics");
    m.value(
        "levee_requests_total",
        &[
            ("direction", "outbound"),
            ("service", SERVICE),
            ("code", "200"),
        ],
    )
}

#[tokio::test]
async fn control_plane_killed_every_second_fails_no_request() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut cp = ControlPlane::builder().data_dir(data.path()).start().await;
    let up = FlakyUpstream::start("inv").await.expect("flaky");
    let cache = data.path().join("policy-cache.json");
    apply(
        &cp,
        &yaml::documents(&[
            yaml::policy(
                "inventory",
                7100,
                "  outbound:\n    timeouts: {request: 2s}\n",
            ),
            yaml::endpoints("inventory", 7100, &[up.addr()]),
        ]),
    )
    .await;
    let mut proxy = caller(&cp, &cache).start().await;
    let addr = proxy.outbound();
    // Services are watched on first use.
    let r = call(&proxy, AUTHORITY, &[]).await.expect("first call");
    assert_eq!(r.status, 200, "{r:?}");
    wait_config(&proxy, "inventory's policy and endpoints", |c| {
        policy_of(c, SERVICE).is_some() && endpoints_of(c, SERVICE) == [up.addr().to_string()]
    })
    .await;
    let load = RetryingLoad::start(addr, AUTHORITY, &[], 4);

    let secs = flap_secs();
    let start = tokio::time::Instant::now();
    let mut restarted_proxy = false;
    let mut reconnects = 0;
    for second in 0..secs {
        // One flap per second, on a fixed schedule.
        tokio::time::sleep_until(start + Duration::from_secs(second)).await;
        cp.kill9().await;
        if !restarted_proxy && second >= secs / 2 {
            // Down: the proxy restarts too, and must start from its cache.
            restarted_proxy = true;
            reconnects += stream_ups(&proxy);
            proxy.process.terminate().expect("SIGTERM");
            proxy
                .process
                .wait_exit(Duration::from_secs(15))
                .await
                .expect("proxy exits");
            proxy = caller(&cp, &cache).outbound_addr(addr).start().await;
            let config = proxy.config().await.expect("/config");
            let source = config["source"].as_str().unwrap_or_default();
            assert!(source.starts_with("policy-cache:"), "{config}");
            assert_eq!(endpoints_of(&config, SERVICE), vec![up.addr().to_string()]);
        } else {
            tokio::time::sleep(DOWN).await;
        }
        cp = cp.restart_on_same_addrs().await;
    }
    let flapped = start.elapsed();
    assert!(restarted_proxy || secs < 2, "the proxy restart ran");

    // After the flapping: connected again, and a change still converges.
    wait_metric(&proxy, "levee_control_plane_connected", &[], 1.0).await;
    apply(
        &cp,
        &yaml::policy(
            "inventory",
            7100,
            "  outbound:\n    timeouts: {request: 3s}\n",
        ),
    )
    .await;
    wait_config(&proxy, "the 3s policy", |c| {
        policy_of(c, SERVICE).is_some_and(|p| p.to_string().contains("\"3s\""))
    })
    .await;
    // And the load kept flowing through the last proxy up to the end.
    let served = ok_count(&proxy).await;
    levee_tests::harness::eventually(CONVERGE, "more requests after the flapping", || async {
        match ok_count(&proxy).await {
            n if n >= served + 20.0 => Ok(()),
            n => Err(format!("{n} (was {served})")),
        }
    })
    .await;

    // The proxies did reconnect to the flapping control plane in between
    // (so the load really ran through resyncs, not only through outages).
    reconnects += stream_ups(&proxy);
    assert!(
        reconnects >= secs.min(4) as usize,
        "only {reconnects} control-plane streams came up"
    );

    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "no request failed: {tally:?}");
    assert_eq!(tally.not_ok(), 0, "every answer is 200: {tally:?}");
    assert!(tally.count(200) > 100, "{tally:?}");
    assert!(metric(&proxy, "levee_policy_version", &[]).await >= 1.0);
    eprintln!(
        "MEASURED control-plane flapping: {secs} kills in {flapped:?}, {reconnects} streams up, {} ok, {} failed, {} connects refused during the proxy restart",
        tally.count(200),
        tally.failed,
        tally.refused
    );
}
