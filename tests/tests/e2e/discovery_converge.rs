//! Control-plane mode end to end: `levee-control-plane`, two `payments`
//! replicas (flaky upstreams, each behind its own `levee-proxy`) and two
//! caller proxies. The replicas' own registrations make them the endpoints
//! callers route to; a policy applied with `leveectl` reaches every caller
//! (polling `/config`) and is enforced on real traffic; `leveectl status`
//! shows each caller's ACK; the proxy metrics follow.

use std::collections::HashSet;
use std::time::Duration;

use levee_tests::harness::mesh::{
    CONVERGE, PAYMENTS, PAYMENTS_AUTHORITY as AUTHORITY, PAYMENTS_PORT, apply, call, mesh_proxy,
    metric, policy_of, status, wait_config, wait_endpoints, wait_metric,
};
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{ControlPlane, Proxy, eventually, yaml},
};

#[tokio::test]
async fn apply_converges_on_every_proxy_and_is_enforced() {
    let cp = ControlPlane::builder()
        .arg("--endpoint-grace")
        .arg("1s")
        .start()
        .await;
    let (up_a, up_b) = (
        FlakyUpstream::start("a").await.expect("flaky a"),
        FlakyUpstream::start("b").await.expect("flaky b"),
    );
    let pay_a = mesh_proxy(&cp, "payments", up_a.addr().port(), PAYMENTS_PORT)
        .start()
        .await;
    let pay_b = mesh_proxy(&cp, "payments", up_b.addr().port(), PAYMENTS_PORT)
        .start()
        .await;
    let callers = [
        mesh_proxy(&cp, "client", 1, 80).start().await,
        mesh_proxy(&cp, "client", 1, 80).start().await,
    ];

    for caller in &callers {
        let config = caller.config().await.expect("/config");
        assert!(
            config["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("control-plane:")),
            "{config}"
        );
        wait_metric(caller, "levee_control_plane_connected", &[], 1.0).await;
        // The first call subscribes payments and waits for its answer: the
        // replicas' registrations are its endpoints, no DNS involved.
        let first = call(caller, AUTHORITY, &[]).await.expect("first call");
        assert_eq!(first.status, 200, "{first:?}");
        wait_endpoints(caller, PAYMENTS, &[pay_a.inbound(), pay_b.inbound()]).await;
    }
    // Traffic reaches both replicas through their proxies.
    let seen = eventually(CONVERGE, "both replicas to answer", || async {
        let mut seen = HashSet::new();
        for _ in 0..20 {
            let r = call(&callers[0], AUTHORITY, &[]).await?;
            if r.status != 200 {
                return Err(format!("status {}: {}", r.status, r.text()));
            }
            seen.insert(r.header("x-flaky-instance").to_owned());
        }
        if seen.len() == 2 {
            Ok(seen)
        } else {
            Err(format!("only {seen:?}"))
        }
    })
    .await;
    assert_eq!(seen, HashSet::from(["a".to_owned(), "b".to_owned()]));

    // Without a policy a slow answer is just slow.
    let slow = [("x-flaky-delay", "1s")];
    let r = call(&callers[0], AUTHORITY, &slow)
        .await
        .expect("slow call");
    assert_eq!(r.status, 200, "{r:?}");

    let updates_before = metric(
        &callers[0],
        "levee_policy_updates_total",
        &[("result", "ack")],
    )
    .await;
    let policy = yaml::policy(
        "payments",
        PAYMENTS_PORT,
        "  outbound:\n    timeouts: {request: 250ms}\n",
    );
    let applied = apply(&cp, &policy).await;
    assert!(!applied.is_empty(), "apply prints what it did");

    for caller in &callers {
        let config = wait_config(caller, "the payments policy", |c| {
            policy_of(c, PAYMENTS).is_some_and(|p| p.to_string().contains("250ms"))
        })
        .await;
        assert!(
            config["version"].as_u64().is_some_and(|v| v > 0),
            "{config}"
        );
        // Enforced: the same slow call now times out at the caller's proxy.
        let r = call(caller, AUTHORITY, &slow).await.expect("slow call");
        assert_eq!(r.status, 504, "{r:?}");
        assert_eq!(r.header("x-levee-error"), "timeout", "{r:?}");
        let fast = call(caller, AUTHORITY, &[]).await.expect("fast call");
        assert_eq!(fast.status, 200, "{fast:?}");
        // The gauge shows the store revision of the policy.
        let version = metric(caller, "levee_policy_version", &[]).await;
        assert!(version >= 1.0, "levee_policy_version {version}");
    }
    let acks = metric(
        &callers[0],
        "levee_policy_updates_total",
        &[("result", "ack")],
    )
    .await;
    assert!(
        acks > updates_before,
        "ack counter moved: {updates_before} → {acks}"
    );
    assert_eq!(
        metric(
            &callers[0],
            "levee_policy_updates_total",
            &[("result", "nack")]
        )
        .await,
        0.0
    );

    // `leveectl status`: both callers ACKed what they were sent for payments
    // (the replicas subscribe payments too, for its inbound policy).
    let text = eventually(CONVERGE, "status to show both ACKs", || async {
        let text = status(&cp, true).await;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let acked = json["proxies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["service"] == "client")
            .flat_map(|p| p["subscriptions"].as_array().into_iter().flatten())
            .filter(|s| {
                s["service"] == PAYMENTS
                    && s["ackedVersion"] == s["sentVersion"]
                    && s["nackReason"] == ""
            })
            .count();
        if acked == 2 { Ok(text) } else { Err(text) }
    })
    .await;
    assert!(
        text.contains("levee-proxy/"),
        "hello's proxy version shows: {text}"
    );

    // A replica that goes away stops being an endpoint for callers (after
    // the control plane's grace period, 1 s here).
    drop(pay_b);
    for caller in &callers {
        wait_endpoints(caller, PAYMENTS, &[pay_a.inbound()]).await;
        let r = call(caller, AUTHORITY, &[]).await.expect("call");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-flaky-instance"), "a", "{r:?}");
    }
}

/// Both modes at once is refused with a clear message (static and
/// control-plane configs are not merged).
#[tokio::test]
async fn policy_file_and_control_plane_together_are_refused() {
    let (status, output) = Proxy::builder()
        .policy(yaml::policy("web", 80, ""))
        .control_plane("http://127.0.0.1:1")
        .start_expecting_exit(Duration::from_secs(20))
        .await;
    assert!(!status.success(), "{status}: {output}");
    assert!(output.contains("--control-plane"), "{output}");
    assert!(output.contains("--policy-file"), "{output}");
}

/// A replica subscribes its own service from the start, so the `inbound`
/// part of its policy (here a deadline for the app's answer) is enforced on
/// calls arriving at it.
#[tokio::test]
async fn a_replica_enforces_its_own_services_inbound_policy() {
    // No --service-port: the service port is the app port.
    inbound_policy_is_enforced(None).await;
}

/// With `--service-port`, the inbound policy is the one targeting that port
/// (the port callers use), not the app's port.
#[tokio::test]
async fn the_inbound_policy_follows_the_service_port() {
    inbound_policy_is_enforced(Some(PAYMENTS_PORT)).await;
}

async fn inbound_policy_is_enforced(service_port: Option<u16>) {
    let cp = ControlPlane::builder().start().await;
    let up = FlakyUpstream::start("catalog").await.expect("flaky");
    let app_port = up.addr().port();
    let port = service_port.unwrap_or(app_port);
    let mut builder = Proxy::builder()
        .service("catalog")
        .app_port(app_port)
        .control_plane(&cp.grpc_url());
    if let Some(service_port) = service_port {
        assert_ne!(service_port, app_port, "the ports must differ to tell");
        builder = builder.arg("--service-port").arg(service_port.to_string());
    }
    let replica = builder.start().await;
    let service = format!("catalog.default:{port}");
    let authority = format!("catalog:{port}");
    let slow = |to: std::net::SocketAddr| {
        let authority = authority.clone();
        async move {
            let req = http::Request::get("/")
                .header(http::header::HOST, authority)
                .header("x-flaky-delay", "1s")
                .body(levee_tests::harness::empty())
                .expect("request");
            levee_tests::harness::send_http1(to, req)
                .await
                .expect("inbound call")
        }
    };
    assert_eq!(slow(replica.inbound()).await.status, 200);

    apply(
        &cp,
        &yaml::policy(
            "catalog",
            port,
            "  inbound:\n    timeouts: {request: 200ms}\n",
        ),
    )
    .await;
    wait_config(&replica, "its own policy", |c| {
        policy_of(c, &service).is_some()
    })
    .await;
    let r = slow(replica.inbound()).await;
    assert_eq!(r.status, 504, "{r:?}");
}
