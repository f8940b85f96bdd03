//! Sidecar-to-sidecar mTLS with certificates from the control plane's CA
//! (docs/identity.md): two proxies prove themselves with join tokens from
//! `leveectl token create`, get their certificates from `Identity.Certify`,
//! and use those on the hop between them, also while short-lived
//! certificates are renewed under load.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use levee_proto::policy::{Document, SpiffeId};
use levee_tests::flaky::{Delay, Faults, FlakyUpstream};
use levee_tests::harness::identity::{
    certified_proxy, join_token, presented_certificate, subjects,
};
use levee_tests::harness::mesh::{apply, call, metric, status};
use levee_tests::harness::yaml::endpoints_in;
use levee_tests::harness::{Background, ControlPlane, Proxy, eventually, upstream};

const DEADLINE: Duration = Duration::from_secs(15);
const NAMESPACE: &str = "shop";
const PORT: u16 = 8080;
const AUTHORITY: &str = "payments.shop:8080";
const PAYMENTS_ID: &str = "spiffe://cluster.local/ns/shop/sa/payments";
const WEB_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

/// The `payments` sidecar (registered under port 8080) in front of `app`.
async fn payments(cp: &ControlPlane, app: SocketAddr, token: &Path) -> Proxy {
    certified_proxy(cp, "payments", NAMESPACE, app.port(), token)
        .arg("--service-port")
        .arg(PORT.to_string())
        .start()
        .await
}

/// `payments.shop:8080` is `payments`' inbound port, which must present
/// `payments`' SPIFFE ID (a static `ServiceEndpoints` with `spec.identity`).
async fn declare_payments(cp: &ControlPlane, payments: &Proxy) {
    let mut doc = endpoints_in(NAMESPACE, "payments", PORT, &[payments.inbound()]);
    if let Document::Endpoints(e) = &mut doc {
        e.spec.identity = Some(SpiffeId::parse(PAYMENTS_ID).expect("a SPIFFE ID"));
    }
    apply(cp, doc).await;
}

/// Waits until a call from `web` reaches the app over mTLS (before the
/// document arrives, `payments`' own registration is plaintext).
async fn wait_mtls(web: &Proxy) {
    eventually(DEADLINE, "a call over mTLS", || async {
        let r = call(web, AUTHORITY, &[]).await?;
        match (r.status.as_u16(), r.header("x-seen-client-id")) {
            (200, id) if id == WEB_ID => Ok(()),
            (status, id) => Err(format!("{status}, client id {id:?}: {}", r.text())),
        }
    })
    .await;
}

#[tokio::test]
async fn certify_issued_certificates_carry_the_mtls_hop_between_sidecars() {
    let cp = ControlPlane::builder().tls().start().await;
    let app = upstream::echo().await;
    let payments_token = join_token(&cp, "payments", NAMESPACE).await;
    let payments = payments(&cp, app, &payments_token).await;
    let web_token = join_token(&cp, "web", NAMESPACE).await;
    let web = certified_proxy(&cp, "web", NAMESPACE, 1, &web_token)
        .start()
        .await;
    // Both identities are the ones Certify issued for the join tokens.
    for (proxy, id) in [(&payments, PAYMENTS_ID), (&web, WEB_ID)] {
        let config = proxy.config().await.expect("/config");
        assert_eq!(config["identity"]["state"], "certified", "{config}");
        assert_eq!(config["identity"]["spiffeId"], id, "{config}");
    }
    declare_payments(&cp, &payments).await;
    wait_mtls(&web).await;

    // The app sees the caller's Certify-issued identity, never the caller's own header.
    let forged = [(
        "x-levee-client-id",
        "spiffe://cluster.local/ns/shop/sa/admin",
    )];
    let r = call(&web, AUTHORITY, &forged).await.expect("answer");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-seen-client-id"), WEB_ID);
    let ok_out = [("direction", "outbound"), ("result", "ok")];
    assert!(metric(&web, "levee_tls_handshakes_total", &ok_out).await >= 1.0);
    let ok_in = [("direction", "inbound"), ("result", "ok")];
    assert!(metric(&payments, "levee_tls_handshakes_total", &ok_in).await >= 1.0);

    // A TLS client at payments' inbound port: a chain to the control
    // plane's root, naming payments' SPIFFE ID, the very certificate the
    // control plane issued to payments (and sees on its Discovery stream).
    let bundle = std::fs::read(cp.trust_bundle()).expect("trust bundle");
    let presented = presented_certificate(payments.inbound(), &bundle)
        .await
        .expect("a certificate verified by the control plane's bundle");
    assert_eq!(presented.uris, [PAYMENTS_ID]);
    assert!(
        subjects(&bundle).contains(&presented.issuer),
        "issuer {} is not a root of the bundle {:?}",
        presented.issuer,
        subjects(&bundle)
    );
    let json: serde_json::Value =
        serde_json::from_str(&status(&cp, true).await).expect("status JSON");
    let issued: Vec<i64> = json["proxies"]
        .as_array()
        .expect("proxies")
        .iter()
        .filter(|p| p["spiffeId"] == PAYMENTS_ID)
        .filter_map(|p| p["certNotAfterUnix"].as_i64())
        .collect();
    assert_eq!(issued, [presented.not_after_unix], "{json}");
    // A certificate from another CA is not what payments presents.
    let other = levee_tests::harness::certs::TestCa::new("another CA");
    assert!(
        presented_certificate(payments.inbound(), other.pem.as_bytes())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn short_lived_certificates_renew_under_load_without_a_failed_request() {
    // 3 s certificates, renewed every ~2 s by both proxies.
    let cp = ControlPlane::builder()
        .tls()
        .arg("--workload-cert-ttl")
        .arg("3s")
        .start()
        .await;
    // A slow app keeps requests in flight, so added load opens connections.
    let faults = Faults {
        delay: Some(Delay::Fixed(Duration::from_millis(20))),
        ..Faults::default()
    };
    let app = FlakyUpstream::builder()
        .faults(faults)
        .start()
        .await
        .expect("flaky");
    let payments_token = join_token(&cp, "payments", NAMESPACE).await;
    let payments = payments(&cp, app.addr(), &payments_token).await;
    let web_token = join_token(&cp, "web", NAMESPACE).await;
    let web = certified_proxy(&cp, "web", NAMESPACE, 1, &web_token)
        .start()
        .await;
    declare_payments(&cp, &payments).await;
    eventually(DEADLINE, "a call over mTLS", || async {
        let r = call(&web, AUTHORITY, &[]).await?;
        let handshakes = web
            .metrics()
            .await
            .map_err(|e| e.to_string())?
            .value("levee_tls_handshakes_total", &[("direction", "outbound")]);
        match (r.status.as_u16(), handshakes) {
            (200, h) if h >= 1.0 => Ok(()),
            (status, h) => Err(format!("{status} after {h} handshakes: {}", r.text())),
        }
    })
    .await;

    let renewals = [("result", "ok")];
    let ok_out = [("direction", "outbound"), ("result", "ok")];
    let mut loads = vec![Background::start(web.outbound(), AUTHORITY, 2)];
    for round in 0..3 {
        let handshakes = metric(&web, "levee_tls_handshakes_total", &ok_out).await;
        let before = [
            metric(&web, "levee_identity_renewals_total", &renewals).await,
            metric(&payments, "levee_identity_renewals_total", &renewals).await,
        ];
        eventually(DEADLINE, "both proxies renewed", || async {
            let now = [
                metric(&web, "levee_identity_renewals_total", &renewals).await,
                metric(&payments, "levee_identity_renewals_total", &renewals).await,
            ];
            if now[0] > before[0] && now[1] > before[1] {
                Ok(())
            } else {
                Err(format!("round {round}: renewals {before:?} -> {now:?}"))
            }
        })
        .await;
        // More load: new connections, handshaken with the new certificates.
        loads.push(Background::start(web.outbound(), AUTHORITY, 2));
        eventually(
            DEADLINE,
            "a handshake with renewed certificates",
            || async {
                match metric(&web, "levee_tls_handshakes_total", &ok_out).await {
                    h if h > handshakes => Ok(()),
                    h => Err(format!("round {round}: {h} handshakes")),
                }
            },
        )
        .await;
    }
    let mut tally = levee_tests::harness::Tally::default();
    for load in loads {
        tally.merge(load.stop().await);
    }
    assert!(tally.total() > 0);
    assert_eq!(
        tally.count(200),
        tally.total(),
        "every request answered 200: {:?} {:?}",
        tally.answers(),
        tally.bad
    );
    for (proxy, direction) in [(&web, "outbound"), (&payments, "inbound")] {
        let m = proxy.metrics().await.expect("metrics");
        let all = m.value("levee_tls_handshakes_total", &[("direction", direction)]);
        let ok = m.value(
            "levee_tls_handshakes_total",
            &[("direction", direction), ("result", "ok")],
        );
        assert_eq!(all, ok, "{direction}: every handshake succeeded");
        assert_eq!(
            m.value("levee_identity_renewals_total", &[("result", "error")]),
            0.0
        );
        assert!(m.value("levee_identity_renewals_total", &renewals) >= 4.0);
    }
}
