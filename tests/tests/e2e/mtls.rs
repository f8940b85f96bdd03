//! mTLS between sidecars with real binaries and certificates from a test
//! CA: a caller's proxy (`web`) originates TLS 1.3 to the `payments`
//! proxy's inbound port, which terminates it on the same port as
//! plaintext, hands the app the verified caller in `x-levee-client-id`
//! (never the caller's own), and enforces `spec.inbound.mtls`.

use std::net::SocketAddr;

use http::Request;
use levee_tests::harness::certs::TestCa;
use levee_tests::harness::upstream::echo;
use levee_tests::harness::yaml::{endpoints_with_identity, policy};
use levee_tests::harness::{Body, Proxy, empty, get_http1, send_http1, send_http2};

const TRUST_DOMAIN: &str = "spiffe://levee.test/ns/default/sa";

fn id(account: &str) -> String {
    format!("{TRUST_DOMAIN}/{account}")
}

/// A test PKI and a temp dir for the identity files.
struct Pki {
    ca: TestCa,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            ca: TestCa::new("levee e2e CA"),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// `levee-proxy` flags for a workload certificate of `account`.
    fn flags(&self, account: &str) -> Vec<String> {
        self.ca
            .workload(&id(account))
            .write(self.dir.path(), account, &self.ca)
            .flags()
    }
}

/// The `payments` sidecar in front of `app`, with `inbound` as its
/// policy's `spec.inbound` ("" for none).
async fn server(pki: &Pki, app: SocketAddr, inbound: &str) -> Proxy {
    let mut builder = Proxy::builder().service("payments").app_port(app.port());
    if !inbound.is_empty() {
        builder = builder.policy(policy("payments", app.port(), inbound));
    }
    for flag in pki.flags("payments") {
        builder = builder.arg(flag);
    }
    builder.start().await
}

/// A caller's sidecar (identity `account`) whose `payments:80` is the
/// server's inbound port, expected to be `expected`.
async fn caller(pki: &Pki, account: &str, server: &Proxy, expected: &str) -> Proxy {
    let mut builder = Proxy::builder()
        .service(account)
        .policy(endpoints_with_identity(
            "payments",
            80,
            &[server.inbound()],
            expected,
        ));
    for flag in pki.flags(account) {
        builder = builder.arg(flag);
    }
    builder.start().await
}

fn forged(version_2: bool) -> Request<Body> {
    let builder = if version_2 {
        Request::get("http://payments:80/")
    } else {
        Request::get("/").header("host", "payments:80")
    };
    builder
        .header("x-levee-client-id", id("forged"))
        .body(empty())
        .expect("request")
}

#[tokio::test]
async fn the_app_sees_the_verified_caller_over_mtls_and_never_a_forged_header() {
    let pki = Pki::new();
    let app = echo().await;
    let payments = server(&pki, app, "").await;
    let web = caller(&pki, "web", &payments, &id("payments")).await;

    // HTTP/1.1 through the mTLS hop: the caller's forged header is replaced.
    let r = send_http1(web.outbound(), forged(false))
        .await
        .expect("http/1.1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-seen-client-id"), id("web"));
    assert_eq!(r.header("x-seen-version"), "HTTP/1.1");

    // HTTP/2 keeps its protocol across the hop (ALPN h2).
    let r = send_http2(web.outbound(), forged(true))
        .await
        .expect("http/2");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-seen-client-id"), id("web"));
    assert_eq!(r.header("x-seen-version"), "HTTP/2.0");

    // Plaintext on the same inbound port (permissive): no identity at all.
    let mut direct = forged(false);
    *direct.uri_mut() = "/".parse().expect("uri");
    let r = send_http1(payments.inbound(), direct)
        .await
        .expect("plaintext");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-seen-client-id"), "");

    // /config names the identity files' certificate and its issuer.
    let config = web.config().await.expect("/config");
    assert_eq!(config["identity"]["source"], "files", "{config}");
    assert_eq!(config["identity"]["spiffeId"], id("web"), "{config}");
    assert_eq!(config["identity"]["issuer"], "CN=levee e2e CA", "{config}");

    let out = web.metrics().await.expect("caller metrics");
    let ok = [("direction", "outbound"), ("result", "ok")];
    assert!(out.value("levee_tls_handshakes_total", &ok) >= 1.0);
    let expiry = out.value("levee_identity_cert_expiry_seconds", &[]);
    assert!(expiry > 80_000.0 && expiry <= 86_400.0, "{expiry}");
    let inb = payments.metrics().await.expect("server metrics");
    let ok = [("direction", "inbound"), ("result", "ok")];
    assert!(inb.value("levee_tls_handshakes_total", &ok) >= 1.0);
}

#[tokio::test]
async fn a_server_with_another_identity_is_502_upstream_identity() {
    let pki = Pki::new();
    let app = echo().await;
    let payments = server(&pki, app, "").await;
    let web = caller(&pki, "web", &payments, &id("orders")).await;
    let r = get_http1(web.outbound(), "payments:80", "/")
        .await
        .expect("answer");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("x-levee-error"), "upstream-identity");
    assert!(r.text().contains(&id("payments")), "{}", r.text());
    let m = web.metrics().await.expect("metrics");
    let mismatch = [("direction", "outbound"), ("result", "identity-mismatch")];
    assert!(m.value("levee_tls_handshakes_total", &mismatch) >= 1.0);
}

#[tokio::test]
async fn strict_mode_refuses_plaintext_and_the_allow_list_refuses_other_identities() {
    let pki = Pki::new();
    let app = echo().await;
    let inbound = format!(
        "  inbound:\n    mtls:\n      mode: strict\n      allowedClients: [\"{}\"]\n",
        id("web")
    );
    let payments = server(&pki, app, &inbound).await;
    let web = caller(&pki, "web", &payments, &id("payments")).await;
    let batch = caller(&pki, "batch", &payments, &id("payments")).await;

    let r = get_http1(web.outbound(), "payments:80", "/")
        .await
        .expect("allowed");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-seen-client-id"), id("web"));

    let r = get_http1(batch.outbound(), "payments:80", "/")
        .await
        .expect("refused");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("x-levee-error"), "unauthorized");
    assert!(r.text().contains(&id("batch")), "{}", r.text());

    let r = get_http1(payments.inbound(), "payments:80", "/")
        .await
        .expect("plaintext");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("x-levee-error"), "unauthorized");

    // A plaintext gRPC caller gets PERMISSION_DENIED.
    let grpc = Request::post("http://payments:80/shop.Payments/Pay")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(empty())
        .expect("request");
    let r = send_http2(payments.inbound(), grpc).await.expect("grpc");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), "7");

    let m = payments.metrics().await.expect("metrics");
    let batch_id = id("batch");
    let denied = [("service", "payments"), ("client", batch_id.as_str())];
    assert_eq!(m.value("levee_authz_denied_total", &denied), 1.0);
    let anonymous = [("service", "payments"), ("client", "none")];
    assert_eq!(m.value("levee_authz_denied_total", &anonymous), 2.0);
}

#[tokio::test]
async fn an_endpoint_with_the_wrong_identity_is_skipped_by_the_connect_failure_retry() {
    let pki = Pki::new();
    let app = echo().await;
    let payments = server(&pki, app, "").await;
    // An impostor at the second address: a sidecar with another identity.
    let mut builder = Proxy::builder().service("orders").app_port(app.port());
    for flag in pki.flags("orders") {
        builder = builder.arg(flag);
    }
    let impostor = builder.start().await;
    let mut builder = Proxy::builder()
        .service("web")
        .policy(endpoints_with_identity(
            "payments",
            80,
            &[impostor.inbound(), payments.inbound()],
            &id("payments"),
        ));
    for flag in pki.flags("web") {
        builder = builder.arg(flag);
    }
    let web = builder.start().await;
    // Without a policy, connect failures are retried (on another endpoint):
    // every call ends at the real payments, whichever endpoint came first.
    for _ in 0..20 {
        let r = get_http1(web.outbound(), "payments:80", "/")
            .await
            .expect("answer");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-seen-client-id"), id("web"));
    }
    let m = impostor.metrics().await.expect("metrics");
    let served = [("direction", "inbound")];
    assert_eq!(
        m.value("levee_requests_total", &served),
        0.0,
        "the impostor never got a request"
    );
}
