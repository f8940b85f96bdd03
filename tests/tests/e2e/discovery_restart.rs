//! The control plane is `kill -9`ed under load: the caller proxy keeps
//! serving every request with its last good policy and endpoints,
//! `levee_control_plane_connected` drops to 0; a control plane restarted on
//! the same data directory and address gets the proxies back (they
//! reconnect with backoff, resubscribe and resync) and pushes new changes
//! again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use levee_tests::harness::mesh::{
    CONVERGE, PAYMENTS, PAYMENTS_AUTHORITY as AUTHORITY, PAYMENTS_PORT, apply, call, mesh_proxy,
    metric, policy_of, status, wait_config, wait_endpoints, wait_metric,
};
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{ControlPlane, Proxy, eventually, yaml},
};

/// Requests sent by the load task, by outcome.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    last_failure: std::sync::Mutex<String>,
}

/// Sends requests through `caller` one after another until stopped.
fn start_load(caller: Arc<Proxy>) -> (Arc<Load>, tokio::task::JoinHandle<()>) {
    let load = Arc::new(Load::default());
    let task = {
        let load = load.clone();
        tokio::spawn(async move {
            while !load.stop.load(Ordering::Relaxed) {
                match call(&caller, AUTHORITY, &[]).await {
                    Ok(r) if r.status == 200 => {
                        load.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        load.failed.fetch_add(1, Ordering::Relaxed);
                        *load.last_failure.lock().expect("lock") = format!("{other:?}");
                    }
                }
            }
        })
    };
    (load, task)
}

/// Waits until the load task has done `more` further successful requests.
async fn more_successes(load: &Load, more: u64) {
    let target = load.ok.load(Ordering::Relaxed) + more;
    eventually(
        CONVERGE,
        &format!("{more} more successful requests"),
        || async {
            match load.ok.load(Ordering::Relaxed) {
                n if n >= target => Ok(()),
                n => Err(format!("{n} of {target}")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn proxies_keep_serving_through_a_kill_9_and_resync_after_restart() {
    let mut cp = ControlPlane::builder()
        .arg("--endpoint-grace")
        .arg("30s")
        .start()
        .await;
    let up_a = FlakyUpstream::start("a").await.expect("flaky a");
    let up_b = FlakyUpstream::start("b").await.expect("flaky b");
    let pay_a = mesh_proxy(&cp, "payments", up_a.addr().port(), PAYMENTS_PORT)
        .start()
        .await;
    let pay_b = mesh_proxy(&cp, "payments", up_b.addr().port(), PAYMENTS_PORT)
        .start()
        .await;
    let caller = Arc::new(mesh_proxy(&cp, "client", 1, 80).start().await);

    apply(
        &cp,
        &yaml::policy(
            "payments",
            PAYMENTS_PORT,
            "  outbound:\n    timeouts: {request: 300ms}\n",
        ),
    )
    .await;
    let r = call(&caller, AUTHORITY, &[]).await.expect("first call");
    assert_eq!(r.status, 200, "{r:?}");
    wait_endpoints(&caller, PAYMENTS, &[pay_a.inbound(), pay_b.inbound()]).await;
    wait_config(&caller, "the 300ms policy", |c| {
        policy_of(c, PAYMENTS).is_some_and(|p| p.to_string().contains("300ms"))
    })
    .await;
    let revision = metric(&caller, "levee_policy_version", &[]).await;
    assert!(revision >= 1.0, "levee_policy_version {revision}");

    let (load, load_task) = start_load(caller.clone());
    more_successes(&load, 20).await;

    cp.kill9().await;
    wait_metric(&caller, "levee_control_plane_connected", &[], 0.0).await;
    // Disconnected: traffic flows on the last good endpoints and policy.
    more_successes(&load, 50).await;
    let slow = call(&caller, AUTHORITY, &[("x-flaky-delay", "1s")])
        .await
        .expect("slow call");
    assert_eq!(slow.status, 504, "the policy is still enforced: {slow:?}");
    let config = caller.config().await.expect("/config");
    assert!(policy_of(&config, PAYMENTS).is_some(), "{config}");
    assert_eq!(metric(&caller, "levee_policy_version", &[]).await, revision);
    assert_eq!(
        caller.admin_get("/ready").await.expect("/ready").status,
        200
    );

    // Back on the same data and address: every proxy reconnects and resyncs.
    let cp = cp.restart_on_same_addrs().await;
    for proxy in [&*caller, &pay_a, &pay_b] {
        wait_metric(proxy, "levee_control_plane_connected", &[], 1.0).await;
    }
    eventually(CONVERGE, "the caller to resync payments", || async {
        let text = status(&cp, true).await;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let synced = json["proxies"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["subscriptions"].as_array().into_iter().flatten())
            .any(|s| s["service"] == PAYMENTS && s["ackedVersion"] == s["sentVersion"]);
        if synced { Ok(()) } else { Err(text) }
    })
    .await;
    // The store kept the policy: the resync brings the same one.
    assert_eq!(metric(&caller, "levee_policy_version", &[]).await, revision);
    more_successes(&load, 20).await;

    // And changes flow again.
    apply(
        &cp,
        &yaml::policy(
            "payments",
            PAYMENTS_PORT,
            "  outbound:\n    timeouts: {request: 5s}\n",
        ),
    )
    .await;
    wait_config(&caller, "the 5s policy", |c| {
        policy_of(c, PAYMENTS).is_some_and(|p| p.to_string().contains("\"5s\""))
    })
    .await;
    let slow = call(&caller, AUTHORITY, &[("x-flaky-delay", "1s")])
        .await
        .expect("slow call");
    assert_eq!(slow.status, 200, "the new policy is enforced: {slow:?}");
    assert!(metric(&caller, "levee_policy_version", &[]).await > revision);

    load.stop.store(true, Ordering::Relaxed);
    load_task.await.expect("load task");
    let failed = load.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "no request failed ({} ok); last failure: {}",
        load.ok.load(Ordering::Relaxed),
        load.last_failure.lock().expect("lock")
    );
}
