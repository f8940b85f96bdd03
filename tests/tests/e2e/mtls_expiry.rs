//! The callee's side of "Expiry fails closed" (docs/identity.md): an
//! inbound mTLS connection depends on the SERVER sidecar's current
//! certificate. A caller that is no sidecar (so its own certificate, from
//! the same CA, never expires here) keeps one HTTP/1.1 keep-alive
//! connection to `payments`' inbound port: it lives across `payments`'
//! renewals, past the first certificate's `notAfter`; with the control
//! plane killed, its next request after `payments`' certificate expired
//! fails (the connection is closed), and a new handshake is refused.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use levee_tests::harness::certs::{TestCa, Workload};
use levee_tests::harness::identity::{certified_proxy, join_token, mtls_connect};
use levee_tests::harness::mesh::metric;
use levee_tests::harness::{ControlPlane, Proxy, eventually, upstream};

const DEADLINE: Duration = Duration::from_secs(15);
const NAMESPACE: &str = "shop";
const AUTHORITY: &str = "payments.shop:8080";
const CALLER_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";
/// `--workload-cert-ttl` of the control plane.
const TTL: &str = "5s";

/// One keep-alive mTLS connection to `proxy`'s inbound port, as `caller`.
async fn keep_alive(proxy: &Proxy, bundle: &[u8], caller: &Workload) -> SendRequest<Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(proxy.inbound())
        .await
        .expect("connect");
    let tls = mtls_connect(tcp, bundle, caller, b"http/1.1")
        .await
        .expect("mTLS handshake");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1");
    tokio::spawn(conn);
    sender
}

/// A request on `sender`'s connection: the status and the caller's
/// identity the app saw, or why the connection could not carry it.
async fn request(sender: &mut SendRequest<Empty<Bytes>>) -> Result<(u16, String), String> {
    let req = http::Request::get("/")
        .header(http::header::HOST, AUTHORITY)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let answer = async {
        sender.ready().await?;
        let response = sender.send_request(req).await?;
        let status = response.status().as_u16();
        let seen = response
            .headers()
            .get("x-seen-client-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        response.into_body().collect().await?;
        Ok::<_, hyper::Error>((status, seen))
    };
    match tokio::time::timeout(Duration::from_secs(5), answer).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("no answer within 5 s".to_owned()),
    }
}

#[tokio::test]
async fn an_inbound_connection_lives_across_renewals_and_is_cut_at_the_servers_expiry() {
    // The control plane issues from a test CA, so the caller's certificate
    // (a day long, never renewed) is trusted by payments; payments'
    // certificates live 5 s, renewed at 3.25-3.75 s.
    let ca = TestCa::new("levee e2e CA");
    let files = tempfile::tempdir().expect("temp dir");
    let (ca_cert, ca_key) = (files.path().join("ca.crt"), files.path().join("ca.key"));
    std::fs::write(&ca_cert, &ca.pem).expect("write CA");
    std::fs::write(&ca_key, &ca.key_pem).expect("write CA key");
    let mut cp = ControlPlane::builder()
        .tls()
        .arg("--ca-cert-file")
        .arg(&ca_cert)
        .arg("--ca-key-file")
        .arg(&ca_key)
        .arg("--workload-cert-ttl")
        .arg(TTL)
        .start()
        .await;
    let app = upstream::echo().await;
    let token = join_token(&cp, "payments", NAMESPACE).await;
    let payments = certified_proxy(&cp, "payments", NAMESPACE, app.port(), &token)
        .arg("--service-port")
        .arg("8080")
        .start()
        .await;
    eventually(DEADLINE, "payments certified", || async {
        let config = payments.config().await.map_err(|e| e.to_string())?;
        match config["identity"]["state"].as_str() {
            Some("certified") => Ok(()),
            _ => Err(config.to_string()),
        }
    })
    .await;
    let caller = ca.workload(CALLER_ID);
    let bundle = std::fs::read(cp.trust_bundle()).expect("trust bundle");
    let conn = tokio::sync::Mutex::new(keep_alive(&payments, &bundle, &caller).await);
    assert_eq!(
        request(&mut *conn.lock().await).await,
        Ok((200, CALLER_ID.to_owned())),
        "an mTLS request, the caller's identity verified"
    );

    // Renewals: the same connection answers all along, past the first
    // certificate's expiry (5 s after it was issued, before the first
    // request).
    let first_expired_by = SystemTime::now() + Duration::from_secs(5);
    let renewed = [("result", "ok")];
    let before = metric(&payments, "levee_identity_renewals_total", &renewed).await;
    eventually(DEADLINE, "a renewal, past the first expiry", || async {
        let r = request(&mut *conn.lock().await).await;
        assert_eq!(r, Ok((200, CALLER_ID.to_owned())), "across renewals");
        let now = metric(&payments, "levee_identity_renewals_total", &renewed).await;
        if now > before && SystemTime::now() > first_expired_by {
            Ok(())
        } else {
            Err(format!("renewals {before} -> {now}"))
        }
    })
    .await;
    let cut = [("direction", "inbound")];
    assert_eq!(
        metric(&payments, "levee_tls_connections_expired_total", &cut).await,
        0.0
    );

    // No renewal from now on: the connection answers until payments'
    // certificate expires, then its next request fails.
    cp.kill9().await;
    let config = payments.config().await.expect("/config");
    let not_after = config["identity"]["notAfter"].to_string();
    let failed = eventually(DEADLINE, "the connection cut at expiry", || async {
        match request(&mut *conn.lock().await).await {
            Ok(answer) => {
                assert_eq!(answer.0, 200, "before expiry");
                Err(format!("still answered (notAfter {not_after})"))
            }
            Err(error) => {
                let left = metric(&payments, "levee_identity_cert_expiry_seconds", &[]).await;
                Ok((error, left))
            }
        }
    })
    .await;
    eprintln!("cut after payments' expiry: {failed:?}");
    assert!(failed.1 <= 0.0, "cut before the expiry: {failed:?}");
    assert_eq!(
        metric(&payments, "levee_tls_connections_expired_total", &cut).await,
        1.0,
        "the one connection counted"
    );

    // A new connection: the expired certificate is never presented.
    let tcp = tokio::net::TcpStream::connect(payments.inbound())
        .await
        .expect("connect");
    let refused = mtls_connect(tcp, &bundle, &caller, b"http/1.1").await;
    assert!(refused.is_err(), "a handshake with an expired certificate");
    let expired = [("direction", "inbound"), ("result", "expired")];
    assert_eq!(
        metric(&payments, "levee_tls_handshakes_total", &expired).await,
        1.0
    );
}
