//! The NACK path with real validation: the control plane accepts static
//! endpoints that include one caller proxy's own outbound listener (a valid
//! `ip:port` to it), but that proxy refuses the update because its calls
//! would loop back into itself. The refusing proxy keeps its last good
//! endpoints and keeps serving; the other proxy takes the update;
//! `leveectl status` shows the refusal and its reason.

use levee_tests::harness::mesh::{
    CONVERGE, apply, call, endpoints_of, mesh_proxy, metric, status, wait_endpoints, wait_metric,
};
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{ControlPlane, eventually, yaml},
};

const SERVICE: &str = "ledger.default:7000";
const AUTHORITY: &str = "ledger:7000";

#[tokio::test]
async fn a_refused_update_keeps_the_last_good_config_and_shows_in_status() {
    let cp = ControlPlane::builder().start().await;
    let up = FlakyUpstream::start("ledger-1").await.expect("flaky");
    let refuser = mesh_proxy(&cp, "client", 1, 80).start().await;
    let taker = mesh_proxy(&cp, "client", 1, 80).start().await;

    apply(&cp, &yaml::endpoints("ledger", 7000, &[up.addr()])).await;
    for proxy in [&refuser, &taker] {
        let r = call(proxy, AUTHORITY, &[]).await.expect("call");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-flaky-instance"), "ledger-1");
        wait_endpoints(proxy, SERVICE, &[up.addr()]).await;
    }
    let good_version = refuser.config_version().await.expect("version");
    assert_eq!(
        metric(
            &refuser,
            "levee_policy_updates_total",
            &[("result", "nack")]
        )
        .await,
        0.0
    );

    // Valid for the control plane; a loop for `refuser`.
    let looping = [up.addr(), refuser.outbound()];
    apply(&cp, &yaml::endpoints("ledger", 7000, &looping)).await;

    wait_metric(
        &refuser,
        "levee_policy_updates_total",
        &[("result", "nack")],
        1.0,
    )
    .await;
    wait_endpoints(&taker, SERVICE, &looping).await;
    let config = refuser.config().await.expect("/config");
    assert_eq!(
        config["version"], good_version,
        "nothing installed: {config}"
    );
    assert_eq!(
        endpoints_of(&config, SERVICE),
        vec![up.addr().to_string()],
        "the last good endpoints stay: {config}"
    );
    // The refusing proxy keeps serving with them, and is still connected.
    for _ in 0..10 {
        let r = call(&refuser, AUTHORITY, &[]).await.expect("call");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-flaky-instance"), "ledger-1");
    }
    assert_eq!(
        metric(&refuser, "levee_control_plane_connected", &[]).await,
        1.0
    );
    assert_eq!(
        metric(&taker, "levee_policy_updates_total", &[("result", "nack")]).await,
        0.0
    );

    // `leveectl status` names the reason (table and JSON).
    let reason = "own outbound listener";
    let table = eventually(CONVERGE, "status to show the NACK", || async {
        let text = status(&cp, false).await;
        if text.contains(reason) {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    assert!(table.contains(&refuser.outbound().to_string()), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&status(&cp, true).await).expect("status JSON");
    let nacks: Vec<&serde_json::Value> = json["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["subscriptions"].as_array().into_iter().flatten())
        .filter(|s| s["service"] == SERVICE && s["nackReason"] != "")
        .collect();
    assert_eq!(nacks.len(), 1, "only the refusing proxy NACKed: {json}");
    assert!(
        nacks[0]["nackReason"]
            .as_str()
            .is_some_and(|r| r.contains(reason)),
        "{json}"
    );

    // A later acceptable update is taken again (NACK is not sticky).
    let up2 = FlakyUpstream::start("ledger-2").await.expect("flaky 2");
    apply(
        &cp,
        &yaml::endpoints("ledger", 7000, &[up.addr(), up2.addr()]),
    )
    .await;
    wait_endpoints(&refuser, SERVICE, &[up.addr(), up2.addr()]).await;
    assert_eq!(
        metric(
            &refuser,
            "levee_policy_updates_total",
            &[("result", "nack")]
        )
        .await,
        1.0
    );
}
