//! Workload identity end to end (docs/identity.md): a `levee-control-plane`
//! serving gRPC over TLS with its own CA, proxies that get certificates with
//! join tokens from `leveectl token create` and watch Discovery over mTLS,
//! refusals (wrong token, another service, another address, no
//! certificate) and their metrics, renewal, and the plaintext opt-out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use levee_proto::v1;
use levee_proto::v1::discovery_client::DiscoveryClient;
use levee_proto::v1::identity_client::IdentityClient;
use levee_tests::flaky::FlakyUpstream;
use levee_tests::harness::mesh::{status, wait_metric};
use levee_tests::harness::{ControlPlane, Proxy, ProxyBuilder, eventually, identity};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const DEADLINE: Duration = Duration::from_secs(15);
const PAYMENTS_ID: &str = "spiffe://cluster.local/ns/shop/sa/payments";

async fn join_token(cp: &ControlPlane, service: &str) -> PathBuf {
    identity::join_token(cp, service, "shop").await
}

fn identity_proxy(cp: &ControlPlane, service: &str, app_port: u16, token: &Path) -> ProxyBuilder {
    identity::certified_proxy(cp, service, "shop", app_port, token)
}

async fn cp_metric(cp: &ControlPlane, name: &str, labels: &[(&str, &str)]) -> f64 {
    cp.metrics()
        .await
        .expect("control plane metrics")
        .value(name, labels)
}

async fn wait_cp_metric_at_least(
    cp: &ControlPlane,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) {
    eventually(DEADLINE, &format!("{name}{labels:?} >= {want}"), || async {
        match cp
            .metrics()
            .await
            .map_err(|e| e.to_string())?
            .value(name, labels)
        {
            v if v >= want => Ok(()),
            v => Err(format!("it is {v}")),
        }
    })
    .await;
}

#[tokio::test]
async fn a_join_token_gets_a_certificate_and_discovery_runs_over_mtls() {
    let cp = ControlPlane::builder().tls().start().await;
    let app = FlakyUpstream::start("payments").await.expect("flaky");
    let token = join_token(&cp, "payments").await;
    // start() waits for /ready: the proxy got its certificate and the
    // control plane answered its Discovery stream (which needs that certificate).
    let proxy = identity_proxy(&cp, "payments", app.addr().port(), &token)
        .start()
        .await;
    wait_metric(&proxy, "levee_control_plane_connected", &[], 1.0).await;
    let config = proxy.config().await.expect("/config");
    assert_eq!(config["identity"]["state"], "certified", "{config}");
    assert_eq!(config["identity"]["spiffeId"], PAYMENTS_ID, "{config}");
    assert!(!config.to_string().contains("PRIVATE KEY"), "{config}");
    let metrics = proxy.metrics().await.expect("metrics");
    let left = metrics.value("levee_identity_cert_expiry_seconds", &[]);
    assert!(
        left > 23.0 * 3600.0 && left <= 24.0 * 3600.0,
        "expiry in {left}s"
    );
    assert!(metrics.value("levee_identity_renewals_total", &[("result", "ok")]) >= 1.0);
    assert!(cp_metric(&cp, "levee_cp_certificates_issued_total", &[]).await >= 1.0);
    // leveectl status shows who the stream is.
    let json: serde_json::Value =
        serde_json::from_str(&status(&cp, true).await).expect("status JSON");
    let proxies = json["proxies"].as_array().expect("proxies");
    assert!(
        proxies.iter().any(
            |p| p["spiffeId"] == PAYMENTS_ID && p["certNotAfterUnix"].as_i64().unwrap_or(0) > 0
        ),
        "{json}"
    );
}

#[tokio::test]
async fn a_wrong_token_gets_no_certificate_and_no_discovery() {
    let cp = ControlPlane::builder().tls().start().await;
    let bad = cp.dir().join("bad.token");
    std::fs::write(&bad, format!("0123456789abcdef.{}", "0".repeat(64))).expect("write");
    let proxy = identity_proxy(&cp, "payments", 1, &bad)
        .start_unready()
        .await;
    wait_cp_metric_at_least(
        &cp,
        "levee_cp_certificates_refused_total",
        &[("reason", "invalid_proof")],
        1.0,
    )
    .await;
    eventually(DEADLINE, "the proxy to count a failed request", || async {
        let m = proxy.metrics().await.map_err(|e| e.to_string())?;
        match m.value("levee_identity_renewals_total", &[("result", "error")]) {
            v if v >= 1.0 => Ok(()),
            v => Err(format!("errors: {v}")),
        }
    })
    .await;
    let config = proxy.config().await.expect("/config");
    assert_eq!(config["identity"]["state"], "pending", "{config}");
    let metrics = proxy.metrics().await.expect("metrics");
    assert_eq!(metrics.value("levee_control_plane_connected", &[]), 0.0);
    assert_eq!(
        metrics.value("levee_identity_cert_expiry_seconds", &[]),
        -1.0
    );
    assert_eq!(
        cp_metric(&cp, "levee_cp_certificates_issued_total", &[]).await,
        0.0
    );
    // A revoked token stops working too.
    let token = join_token(&cp, "payments").await;
    let text = std::fs::read_to_string(&token).expect("token");
    let id = text.split('.').next().expect("id");
    let out = cp
        .leveectl(&["token", "revoke", id])
        .await
        .expect("leveectl");
    assert!(out.status.success(), "{out:?}");
    let before = cp_metric(
        &cp,
        "levee_cp_certificates_refused_total",
        &[("reason", "invalid_proof")],
    )
    .await;
    let _revoked = identity_proxy(&cp, "payments", 1, &token)
        .start_unready()
        .await;
    wait_cp_metric_at_least(
        &cp,
        "levee_cp_certificates_refused_total",
        &[("reason", "invalid_proof")],
        before + 1.0,
    )
    .await;
}

/// mTLS settings for a hand-made client holding a certificate from `cp`.
async fn certified_channel(
    cp: &ControlPlane,
    token: &Path,
    service_cn: Option<&str>,
) -> (Channel, Channel) {
    let bundle = std::fs::read(cp.trust_bundle()).expect("bundle");
    let server_only = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&bundle));
    let plain_tls = Endpoint::from_shared(cp.grpc_url())
        .expect("url")
        .tls_config(server_only.clone())
        .expect("tls")
        .connect()
        .await
        .expect("TLS connect");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = service_cn {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
    }
    let csr = params.serialize_request(&key).expect("csr").der().to_vec();
    let answer = IdentityClient::new(plain_tls.clone())
        .certify(v1::CertifyRequest {
            csr,
            proof: Some(v1::certify_request::Proof::JoinToken(
                std::fs::read_to_string(token)
                    .expect("token")
                    .trim()
                    .to_owned(),
            )),
        })
        .await
        .expect("certified")
        .into_inner();
    assert_eq!(answer.spiffe_id, PAYMENTS_ID);
    let chain: String = answer
        .certificate_chain
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
        .collect();
    let mtls = Endpoint::from_shared(cp.grpc_url())
        .expect("url")
        .tls_config(server_only.identity(Identity::from_pem(chain, key.serialize_pem())))
        .expect("tls")
        .connect()
        .await
        .expect("mTLS connect");
    (plain_tls, mtls)
}

/// Opens a Watch with `hello`; the refusal, if the stream is refused.
async fn watch_with(channel: Channel, hello: v1::Hello) -> Result<(), tonic::Status> {
    let request = v1::WatchRequest {
        kind: Some(v1::watch_request::Kind::Hello(hello)),
    };
    let mut stream = DiscoveryClient::new(channel)
        .watch(tokio_stream_once(request))
        .await?
        .into_inner();
    // The first message is an update (accepted) or the refusal.
    match tokio::time::timeout(DEADLINE, stream.message()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
    }
}

/// A request stream of one message that stays open.
fn tokio_stream_once(
    request: v1::WatchRequest,
) -> impl futures_util::Stream<Item = v1::WatchRequest> + Send + 'static {
    futures_util::stream::iter([request]).chain(futures_util::stream::pending())
}

use futures_util::StreamExt as _;

fn hello(service: &str, address: &str) -> v1::Hello {
    v1::Hello {
        service: service.into(),
        namespace: "shop".into(),
        address: address.into(),
        inbound_port: 4143,
        service_port: 8080,
        subscriptions: vec![v1::ServiceRef {
            name: service.into(),
            namespace: "shop".into(),
            port: 8080,
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn discovery_refuses_other_services_other_addresses_and_no_certificate() {
    let cp = ControlPlane::builder().tls().start().await;
    let token = join_token(&cp, "payments").await;
    let (server_auth_only, mtls) = certified_channel(&cp, &token, Some("payments")).await;

    let refused = watch_with(mtls.clone(), hello("billing", ""))
        .await
        .expect_err("another service");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("only for service \"payments\""),
        "{refused:?}"
    );
    let refused = watch_with(mtls.clone(), hello("payments", "127.0.0.2"))
        .await
        .expect_err("another address");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("not the address the stream comes from"),
        "{refused:?}"
    );
    let refused = watch_with(server_auth_only, hello("payments", ""))
        .await
        .expect_err("no certificate");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("workload certificate"),
        "{refused:?}"
    );
    for reason in ["identity_mismatch", "address_mismatch", "no_certificate"] {
        assert_eq!(
            cp_metric(&cp, "levee_cp_watch_refused_total", &[("reason", reason)]).await,
            1.0,
            "{reason}"
        );
    }
    // Its own service at its own address is fine.
    watch_with(mtls, hello("payments", "127.0.0.1"))
        .await
        .expect("accepted");

    // A proxy whose --service is not its token's is refused a certificate.
    let proxy = identity_proxy(&cp, "billing", 1, &token)
        .arg("--service-account")
        .arg("payments")
        .start_unready()
        .await;
    wait_cp_metric_at_least(
        &cp,
        "levee_cp_certificates_refused_total",
        &[("reason", "identity_mismatch")],
        1.0,
    )
    .await;
    assert_eq!(
        proxy.config().await.expect("/config")["identity"]["state"],
        "pending"
    );
}

#[tokio::test]
async fn certificates_are_renewed_before_they_expire() {
    let cp = ControlPlane::builder()
        .tls()
        .arg("--workload-cert-ttl")
        .arg("2s")
        .start()
        .await;
    let token = join_token(&cp, "payments").await;
    let proxy = identity_proxy(&cp, "payments", 1, &token).start().await;
    let first = proxy.config().await.expect("/config")["identity"]["notAfter"].clone();
    // 2s certificates renewed at 65-75%: three renewals well within the deadline.
    eventually(DEADLINE, "three renewals", || async {
        let m = proxy.metrics().await.map_err(|e| e.to_string())?;
        match m.value("levee_identity_renewals_total", &[("result", "ok")]) {
            v if v >= 4.0 => Ok(()),
            v => Err(format!("{v} certificates so far")),
        }
    })
    .await;
    let later = proxy.config().await.expect("/config")["identity"]["notAfter"].clone();
    assert_ne!(first, later, "the certificate in use changed");
    let m = proxy.metrics().await.expect("metrics");
    assert_eq!(
        m.value("levee_identity_renewals_total", &[("result", "error")]),
        0.0
    );
    let left = m.value("levee_identity_cert_expiry_seconds", &[]);
    assert!((0.0..=2.0).contains(&left), "expiry in {left}s");
    // The stream opened with the first certificate is still serving.
    assert_eq!(m.value("levee_control_plane_connected", &[]), 1.0);
}

#[tokio::test]
async fn plaintext_is_an_explicit_opt_out() {
    // The harness's default control plane runs with --insecure-plaintext,
    // and ProxyBuilder::control_plane adds it for an http:// URL.
    let cp = ControlPlane::builder().start().await;
    assert!(cp.grpc_url().starts_with("http://"));
    let proxy = Proxy::builder()
        .service("payments")
        .app_port(1)
        .control_plane(&cp.grpc_url())
        .start()
        .await;
    wait_metric(&proxy, "levee_control_plane_connected", &[], 1.0).await;
    // Without the flag an http:// control plane is refused at start.
    let (status, output) = Proxy::builder()
        .app_port(1)
        .arg("--control-plane")
        .arg(cp.grpc_url())
        .start_expecting_exit(DEADLINE)
        .await;
    assert!(!status.success());
    assert!(output.contains("--insecure-plaintext"), "{output}");
    // And a TLS control plane does not speak to a plaintext client.
    let tls_cp = ControlPlane::builder().tls().start().await;
    let plain_url = format!("http://{}", tls_cp.addrs.grpc);
    let out = tokio::time::timeout(
        DEADLINE,
        Endpoint::from_shared(plain_url).expect("url").connect(),
    )
    .await
    .expect("answered");
    if let Ok(channel) = out {
        let refused = DiscoveryClient::new(channel)
            .watch(tokio_stream_once(v1::WatchRequest {
                kind: Some(v1::watch_request::Kind::Hello(hello("payments", ""))),
            }))
            .await;
        assert!(refused.is_err(), "plaintext reached a TLS control plane");
    }
}

#[tokio::test]
async fn a_replaced_trust_bundle_file_is_used_without_a_restart() {
    let cp = ControlPlane::builder().tls().start().await;
    let token = join_token(&cp, "payments").await;
    // A stale bundle: the control plane's serving certificate does not verify.
    let stale = levee_tests::harness::certs::TestCa::new("an old root");
    let bundle = cp.dir().join("proxy-bundle.pem");
    std::fs::write(&bundle, &stale.pem).expect("write the bundle");
    let proxy = Proxy::builder()
        .service("payments")
        .namespace("shop")
        .app_port(1)
        .control_plane(&cp.grpc_url())
        .arg("--trust-bundle-file")
        .arg(&bundle)
        .arg("--identity-token-file")
        .arg(&token)
        .start_unready()
        .await;
    eventually(DEADLINE, "a failed certificate request", || async {
        let m = proxy.metrics().await.map_err(|e| e.to_string())?;
        match m.value("levee_identity_renewals_total", &[("result", "error")]) {
            v if v >= 1.0 => Ok(()),
            v => Err(format!("errors: {v}")),
        }
    })
    .await;
    assert_eq!(
        proxy.config().await.expect("/config")["identity"]["state"],
        "pending"
    );
    // The operator (or the kubelet) puts the current bundle in place.
    let current = std::fs::read(cp.trust_bundle()).expect("the bundle");
    levee_tests::harness::write_atomically(&bundle, std::str::from_utf8(&current).expect("PEM"))
        .expect("replace the bundle");
    eventually(DEADLINE, "certified and watching", || async {
        let config = proxy.config().await.map_err(|e| e.to_string())?;
        let m = proxy.metrics().await.map_err(|e| e.to_string())?;
        let connected = m.value("levee_control_plane_connected", &[]);
        if config["identity"]["spiffeId"] == PAYMENTS_ID && connected == 1.0 {
            Ok(())
        } else {
            Err(format!("connected {connected}: {config}"))
        }
    })
    .await;
}
