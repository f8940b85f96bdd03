//! Expected identities of registered endpoints, end to end: two proxies
//! certified with join tokens watch a TLS control plane; the `payments`
//! proxy registers its inbound address over its mTLS Discovery stream, so
//! the control plane tells the `web` caller to expect payments' SPIFFE ID
//! there. The caller's proxy then originates mTLS to it (no static
//! `spec.identity` anywhere): the app behind payments sees web's verified
//! identity in `x-levee-client-id`, which only an mTLS hop carries.

use std::path::PathBuf;
use std::time::Duration;

use levee_tests::harness::mesh::call;
use levee_tests::harness::upstream::{bind, echo_head};
use levee_tests::harness::{ControlPlane, Proxy, eventually};

const DEADLINE: Duration = Duration::from_secs(15);
const SERVICE_PORT: u16 = 8080;
const WEB_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

/// `leveectl token create` for `service` in `shop`; the token's file.
async fn join_token(cp: &ControlPlane, service: &str) -> PathBuf {
    let out = cp
        .leveectl(&["token", "create", "--service", service, "-n", "shop"])
        .await
        .expect("leveectl");
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).expect("utf-8");
    let path = cp.dir().join(format!("{service}.token"));
    std::fs::write(&path, token.trim()).expect("writing the token");
    path
}

/// A certified proxy of `service` in `shop` (service port 8080).
async fn certified_proxy(cp: &ControlPlane, service: &str, app_port: u16) -> Proxy {
    let token = join_token(cp, service).await;
    Proxy::builder()
        .service(service)
        .namespace("shop")
        .app_port(app_port)
        .arg("--service-port")
        .arg(SERVICE_PORT.to_string())
        .control_plane(&cp.grpc_url())
        .arg("--trust-bundle-file")
        .arg(cp.trust_bundle())
        .arg("--identity-token-file")
        .arg(token)
        .start()
        .await
}

#[tokio::test]
async fn a_registered_endpoint_is_called_over_mtls_with_its_verified_identity() {
    let cp = ControlPlane::builder().tls().start().await;
    // The app answers with the request head it received.
    let (listener, app) = bind().await;
    echo_head(listener);
    let payments = certified_proxy(&cp, "payments", app.port()).await;
    let web = certified_proxy(&cp, "web", 1).await;

    let authority = format!("payments.shop:{SERVICE_PORT}");
    let head = eventually(DEADLINE, "a call to reach payments' app", || async {
        let r = call(&web, &authority, &[]).await?;
        if r.status == 200 {
            Ok(r.text().to_ascii_lowercase())
        } else {
            Err(format!("{}: {}", r.status, r.text()))
        }
    })
    .await;
    assert!(
        head.contains(&format!("x-levee-client-id: {WEB_ID}")),
        "the app saw no verified caller: {head}"
    );
    // Both ends counted a handshake: the hop was mTLS.
    let ok = |direction| [("direction", direction), ("result", "ok")];
    let out = web.metrics().await.expect("web metrics");
    assert!(out.value("levee_tls_handshakes_total", &ok("outbound")) >= 1.0);
    let inb = payments.metrics().await.expect("payments metrics");
    assert!(inb.value("levee_tls_handshakes_total", &ok("inbound")) >= 1.0);
    // The endpoint web used is payments' registered inbound address.
    let endpoints = web.config().await.expect("/config")["endpoints"].clone();
    assert_eq!(
        endpoints[format!("payments.shop:{SERVICE_PORT}")],
        serde_json::json!([payments.inbound().to_string()]),
        "{endpoints}"
    );
}
