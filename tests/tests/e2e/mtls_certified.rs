//! Sidecar-to-sidecar mTLS with certificates from the control plane's CA
//! (docs/identity.md): two proxies prove themselves with join tokens from
//! `leveectl token create`, get their certificates from `Identity.Certify`,
//! and use those on the hop between them, also while short-lived
//! certificates are renewed under load.

use std::net::SocketAddr;
use std::time::Duration;

use levee_proto::policy::{Document, SpiffeId};
use levee_tests::flaky::{Delay, Faults, FlakyUpstream};
use levee_tests::harness::identity::{
    certified_proxy, join_token, presented_certificate, subjects,
};
use levee_tests::harness::mesh::{apply, call, metric, status};
use levee_tests::harness::yaml::endpoints_in;
use levee_tests::harness::{Background, ControlPlane, Proxy, ProxyBuilder, eventually, upstream};
use levee_tests::otlp::{OtlpReceiver, RecordedSpan};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const DEADLINE: Duration = Duration::from_secs(15);
const NAMESPACE: &str = "shop";
const PORT: u16 = 8080;
const AUTHORITY: &str = "payments.shop:8080";
const PAYMENTS_ID: &str = "spiffe://cluster.local/ns/shop/sa/payments";
const WEB_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

/// `payments` (registered under port 8080, in front of `app`) and its
/// caller `web`, both certified with join tokens, `extra` added to both;
/// `payments.shop:8080` declared with `payments`' identity, and a call from
/// `web` seen to arrive over mTLS.
async fn pair(
    cp: &ControlPlane,
    app: SocketAddr,
    extra: impl Fn(ProxyBuilder) -> ProxyBuilder,
) -> (Proxy, Proxy) {
    let payments_token = join_token(cp, "payments", NAMESPACE).await;
    let payments = extra(
        certified_proxy(cp, "payments", NAMESPACE, app.port(), &payments_token)
            .arg("--service-port")
            .arg(PORT.to_string()),
    )
    .start()
    .await;
    let web_token = join_token(cp, "web", NAMESPACE).await;
    let web = extra(certified_proxy(cp, "web", NAMESPACE, 1, &web_token))
        .start()
        .await;
    // Both identities are the ones Certify issued for the join tokens.
    for (proxy, id) in [(&payments, PAYMENTS_ID), (&web, WEB_ID)] {
        let config = proxy.config().await.expect("/config");
        assert_eq!(config["identity"]["state"], "certified", "{config}");
        assert_eq!(config["identity"]["spiffeId"], id, "{config}");
    }
    // `payments.shop:8080` is payments' inbound port, which must present
    // payments' SPIFFE ID (a static `ServiceEndpoints` with `spec.identity`).
    let mut doc = endpoints_in(NAMESPACE, "payments", PORT, &[payments.inbound()]);
    if let Document::Endpoints(e) = &mut doc {
        e.spec.identity = Some(SpiffeId::parse(PAYMENTS_ID).expect("a SPIFFE ID"));
    }
    apply(cp, doc).await;
    // Before the document arrives, payments' own registration is plaintext.
    let ok_out = [("direction", "outbound"), ("result", "ok")];
    eventually(DEADLINE, "a call over mTLS", || async {
        let r = call(&web, AUTHORITY, &[]).await?;
        let handshakes = metric(&web, "levee_tls_handshakes_total", &ok_out).await;
        match (r.status.as_u16(), handshakes) {
            (200, h) if h >= 1.0 => Ok(()),
            (status, h) => Err(format!("{status} after {h} handshakes: {}", r.text())),
        }
    })
    .await;
    (payments, web)
}

#[tokio::test]
async fn certify_issued_certificates_carry_the_mtls_hop_between_sidecars() {
    let cp = ControlPlane::builder().tls().start().await;
    let app = upstream::echo().await;
    let (payments, web) = pair(&cp, app, |b| b).await;

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
    // 8 s certificates, renewed every ~5.5 s by both proxies: a renewal has
    // about 2.5 s before the certificate it replaces expires. (With 3 s, a
    // renewal on a loaded machine, debug builds, took longer than the
    // 0.7 s left and requests got the expiry's 502s, as they must.)
    let cp = ControlPlane::builder()
        .tls()
        .arg("--workload-cert-ttl")
        .arg("8s")
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
    let (payments, web) = pair(&cp, app.addr(), |b| b).await;

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
    eprintln!(
        "rotation under load: {} requests, {:?}; outbound handshakes {}",
        tally.total(),
        tally.by_status(),
        metric(&web, "levee_tls_handshakes_total", &ok_out).await
    );
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

/// `proxy`'s access-log line of `direction` in the trace `trace_id`, parsed.
async fn access_line(proxy: &Proxy, direction: &str, trace_id: &str) -> serde_json::Value {
    let wanted = format!("\"direction\":\"{direction}\"");
    let line = eventually(DEADLINE, &format!("an {direction} access-log line"), || {
        let output = proxy.process.output();
        let found = output
            .lines()
            .find(|l| l.starts_with('{') && l.contains(&wanted) && l.contains(trace_id))
            .map(str::to_owned);
        async move { found.ok_or(output) }
    })
    .await;
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test]
async fn spans_access_logs_and_config_name_the_verified_identities() {
    let collector = OtlpReceiver::start().await.expect("collector");
    let cp = ControlPlane::builder().tls().start().await;
    let app = upstream::echo().await;
    let (payments, web) = pair(&cp, app, |b| {
        b.traced(&collector).arg("--access-log").arg("json")
    })
    .await;
    let trace_id = "5eed00000000000000000000000000e1";
    let traceparent = format!("00-{trace_id}-a0000000000000e1-01");
    let r = call(&web, AUTHORITY, &[("traceparent", &traceparent)])
        .await
        .expect("answer");
    assert_eq!(r.status, 200, "{}", r.text());

    // Spans: the caller's call and attempt name the server it verified,
    // the callee's SERVER span the client it verified.
    let spans = collector
        .wait_for_trace(trace_id, DEADLINE, |s| {
            [SpanKind::Client, SpanKind::Server]
                .iter()
                .all(|kind| s.iter().any(|s| s.kind == *kind))
                && s.iter().any(|s| s.name == "attempt")
        })
        .await;
    let find = |pred: &dyn Fn(&RecordedSpan) -> bool| {
        spans
            .iter()
            .find(|s| pred(s))
            .unwrap_or_else(|| panic!("{spans:#?}"))
    };
    let client = find(&|s| s.kind == SpanKind::Client);
    let attempt = find(&|s| s.name == "attempt");
    let server = find(&|s| s.kind == SpanKind::Server);
    assert_eq!(client.attr("levee.server.identity"), PAYMENTS_ID);
    assert_eq!(attempt.attr("levee.server.identity"), PAYMENTS_ID);
    assert_eq!(client.attr("levee.client.identity"), "");
    assert_eq!(server.attr("levee.client.identity"), WEB_ID);
    assert_eq!(server.attr("levee.server.identity"), "");

    // Access logs: the same, one field each side.
    let out = access_line(&web, "outbound", trace_id).await;
    assert_eq!(out["server_id"], PAYMENTS_ID, "{out}");
    assert!(out.get("client_id").is_none(), "{out}");
    let inb = access_line(&payments, "inbound", trace_id).await;
    assert_eq!(inb["client_id"], WEB_ID, "{inb}");
    assert!(inb.get("server_id").is_none(), "{inb}");

    // /config: the proxy's own certificate and who issued it, never a key.
    let bundle = std::fs::read(cp.trust_bundle()).expect("trust bundle");
    let config = web.config().await.expect("/config");
    let identity = &config["identity"];
    assert_eq!(identity["source"], "control-plane", "{config}");
    assert_eq!(identity["service"], "web", "{config}");
    let issuer = identity["issuer"].as_str().unwrap_or_default().to_owned();
    assert!(subjects(&bundle).contains(&issuer), "{config}");
    assert!(identity["notAfter"].as_str().is_some(), "{config}");
    assert!(!config.to_string().contains("PRIVATE KEY"), "{config}");
}

#[tokio::test]
async fn with_the_control_plane_gone_calls_go_on_until_expiry_then_fail_closed() {
    // 10 s certificates, renewed at 6.5-7.5 s: at any moment at least ~2.5 s left.
    let mut cp = ControlPlane::builder()
        .tls()
        .arg("--workload-cert-ttl")
        .arg("10s")
        .start()
        .await;
    let app = upstream::echo().await;
    let (_payments, web) = pair(&cp, app, |b| b).await;
    cp.kill9().await;

    // No renewal is possible now; until the certificate expires, calls go on.
    let left = metric(&web, "levee_identity_cert_expiry_seconds", &[]).await;
    assert!(left > 1.0, "{left} s left at the kill");
    let r = call(&web, AUTHORITY, &[]).await.expect("answer");
    assert_eq!(r.status, 200, "before expiry: {}", r.text());

    // Then the caller fails closed, saying why, and never presents the
    // expired certificate.
    let failed = eventually(
        Duration::from_secs(25),
        "calls refused at expiry",
        || async {
            let r = call(&web, AUTHORITY, &[]).await?;
            if r.status.as_u16() == 502 && r.text().contains("expired") {
                Ok(r)
            } else {
                Err(format!("{} {}", r.status, r.text()))
            }
        },
    )
    .await;
    let kind = failed.header("x-levee-error");
    assert!(
        kind == "upstream-connect" || kind == "upstream-reset",
        "{kind}: {}",
        failed.text()
    );
    // Computed at scrape, in whole seconds: 0 or less once expired.
    assert!(metric(&web, "levee_identity_cert_expiry_seconds", &[]).await <= 0.0);
    let r = call(&web, AUTHORITY, &[]).await.expect("answer");
    assert_eq!(r.status, 502, "{}", r.text());
    let expired = [("direction", "outbound"), ("result", "expired")];
    assert!(
        metric(&web, "levee_tls_handshakes_total", &expired).await >= 1.0,
        "a new connection was refused as expired"
    );
    assert!(r.text().contains("was not renewed"), "{}", r.text());
}
