//! The verifier, credentials and a real handshake between the two ends,
//! with certificates from the harness's test CA.

use std::sync::Arc;

use levee_proto::policy::SpiffeId;
use levee_tests::harness::certs::{TestCa, Workload};
use rustls::RootCertStore;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::{TcpListener, TcpStream};

use super::verify::{IdentityMismatch, SpiffeServerVerifier};
use super::*;
use crate::metrics::{Direction, Metrics, TlsResult};
use crate::state::Shared;

pub(super) const SERVER: &str = "spiffe://levee.test/ns/shop/sa/payments";
pub(super) const CLIENT: &str = "spiffe://levee.test/ns/shop/sa/web";

pub(super) fn credentials(ca: &TestCa, w: &Workload) -> Arc<Credentials> {
    Arc::new(
        Credentials::from_der(
            vec![w.cert_der.clone()],
            w.key_der.clone(),
            vec![ca.der.clone()],
        )
        .expect("credentials"),
    )
}

fn verifier(ca: &TestCa, expected: &str) -> SpiffeServerVerifier {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.der.clone()))
        .expect("root");
    SpiffeServerVerifier::new(
        Arc::new(roots),
        SpiffeId::parse(expected).expect("id"),
        rustls::crypto::ring::default_provider().signature_verification_algorithms,
    )
}

fn verify(v: &SpiffeServerVerifier, w: &Workload) -> Result<(), rustls::Error> {
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    v.verify_server_cert(
        &CertificateDer::from(w.cert_der.clone()),
        &[],
        &name,
        &[],
        UnixTime::now(),
    )
    .map(|_| ())
}

#[test]
fn the_verifier_accepts_the_expected_identity_from_a_trusted_chain() {
    let ca = TestCa::new("levee test CA");
    assert!(verify(&verifier(&ca, SERVER), &ca.workload(SERVER)).is_ok());
}

#[test]
fn the_verifier_refuses_another_identity_as_a_mismatch() {
    let ca = TestCa::new("levee test CA");
    let err = verify(&verifier(&ca, SERVER), &ca.workload(CLIENT)).expect_err("wrong SAN");
    let mismatch = IdentityMismatch::in_rustls(&err).expect("an identity mismatch");
    assert_eq!(mismatch.found, CLIENT);
}

#[test]
fn the_verifier_refuses_an_untrusted_chain_before_looking_at_the_name() {
    let ca = TestCa::new("levee test CA");
    let rogue = TestCa::new("rogue CA");
    let err = verify(&verifier(&ca, SERVER), &rogue.workload(SERVER)).expect_err("untrusted");
    assert!(IdentityMismatch::in_rustls(&err).is_none(), "{err}");
    assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
}

#[test]
fn credentials_read_pem_and_name_their_identity() {
    let ca = TestCa::new("levee test CA");
    let w = ca.workload(SERVER);
    let c = Credentials::from_pem(
        w.cert_pem.as_bytes(),
        w.key_pem.as_bytes(),
        ca.pem.as_bytes(),
    )
    .expect("pem");
    assert_eq!(c.identity.as_str(), SERVER);
    let left = c.seconds_left(std::time::SystemTime::now());
    assert!(left > 80_000.0 && left <= 86_400.0, "{left}");
    // A key that is not the certificate's is refused.
    let other = ca.workload(CLIENT);
    assert!(
        Credentials::from_pem(
            w.cert_pem.as_bytes(),
            other.key_pem.as_bytes(),
            ca.pem.as_bytes()
        )
        .is_err()
    );
    // A certificate without a SPIFFE ID is no workload certificate.
    assert!(
        Credentials::from_pem(ca.pem.as_bytes(), w.key_pem.as_bytes(), ca.pem.as_bytes()).is_err()
    );
}

/// Origination on one end, termination on the other, over loopback TCP.
async fn handshake(
    server: Arc<Credentials>,
    client: Arc<Credentials>,
    expected: &str,
) -> (
    Result<super::stream::Stream, OriginateError>,
    Option<ClientIdentity>,
    Metrics,
) {
    let metrics = Metrics::new();
    let server_configs = Arc::new(TlsConfigs::default());
    server_configs.install(server).expect("server configs");
    let termination = Termination::new(server_configs, metrics.tls());
    let client_configs = Arc::new(TlsConfigs::default());
    client_configs.install(client).expect("client configs");
    let shared = Arc::new(Shared::new("shop".into(), metrics.clone()));
    let origination = Origination::new(client_configs.clone(), shared, metrics.tls());

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        termination.accept(tcp).await.ok().and_then(|a| {
            assert!(a.h2, "ALPN h2 offered, h2 chosen");
            a.client
        })
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let expected = SpiffeId::parse(expected).expect("id");
    let result = origination
        .connect(tcp, addr, &expected, Alpn::H2)
        .await
        .map(|s| Stream::Client(Box::new(s)));
    let client_id = match &result {
        Ok(_) => accept.await.expect("server task"),
        Err(_) => None,
    };
    (result, client_id, metrics)
}

#[tokio::test]
async fn a_handshake_verifies_both_ends_and_the_server_learns_the_client_identity() {
    let ca = TestCa::new("levee test CA");
    let (result, client, metrics) = handshake(
        credentials(&ca, &ca.workload(SERVER)),
        credentials(&ca, &ca.workload(CLIENT)),
        SERVER,
    )
    .await;
    assert!(result.is_ok(), "{:?}", result.err());
    assert_eq!(
        client,
        Some(ClientIdentity(SpiffeId::parse(CLIENT).expect("id")))
    );
    let tls = metrics.tls();
    assert_eq!(tls.handshakes(Direction::Outbound, TlsResult::Ok), 1);
    assert_eq!(tls.handshakes(Direction::Inbound, TlsResult::Ok), 1);
}

#[tokio::test]
async fn a_server_with_another_identity_is_an_identity_error() {
    let ca = TestCa::new("levee test CA");
    let (result, _, metrics) = handshake(
        credentials(&ca, &ca.workload(SERVER)),
        credentials(&ca, &ca.workload(CLIENT)),
        "spiffe://levee.test/ns/shop/sa/orders",
    )
    .await;
    match result {
        Err(OriginateError::Identity(detail)) => assert!(detail.contains(SERVER), "{detail}"),
        other => panic!("expected an identity error, got {:?}", other.map(|_| ())),
    }
    let tls = metrics.tls();
    assert_eq!(
        tls.handshakes(Direction::Outbound, TlsResult::IdentityMismatch),
        1
    );
}

#[tokio::test]
async fn without_credentials_nothing_is_sent_in_plaintext() {
    let metrics = Metrics::new();
    let shared = Arc::new(Shared::new("shop".into(), metrics.clone()));
    let origination = Origination::new(Arc::new(TlsConfigs::default()), shared, metrics.tls());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let expected = SpiffeId::parse(SERVER).expect("id");
    let result = origination.connect(tcp, addr, &expected, Alpn::Http1).await;
    assert!(matches!(result, Err(OriginateError::NoCredentials(_))));
}

#[tokio::test]
async fn the_file_source_picks_up_rotated_files() {
    let ca = TestCa::new("levee test CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let written = ca.workload(SERVER).write(dir.path(), "me", &ca);
    let files = files::CredentialFiles {
        cert: written.cert.clone(),
        key: written.key.clone(),
        bundle: written.bundle.clone(),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut rx = files.load_and_watch(shutdown.clone()).await.expect("load");
    let identity = |rx: &tokio::sync::watch::Receiver<Option<Arc<Credentials>>>| {
        rx.borrow().as_ref().map(|c| c.identity.to_string())
    };
    assert_eq!(identity(&rx).as_deref(), Some(SERVER));

    let rotated = ca.workload(CLIENT);
    std::fs::write(&written.cert, &rotated.cert_pem).expect("write cert");
    std::fs::write(&written.key, &rotated.key_pem).expect("write key");
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.changed())
        .await
        .expect("a reload within 10 s")
        .expect("the source is alive");
    assert_eq!(identity(&rx).as_deref(), Some(CLIENT));
    shutdown.cancel();
}

#[tokio::test]
async fn an_expired_certificate_is_never_presented_outbound() {
    let ca = TestCa::new("expiry");
    let client = credentials(&ca, &ca.workload(CLIENT));
    let expired = Arc::new(Credentials {
        not_after: std::time::SystemTime::now() - std::time::Duration::from_secs(5),
        ..(*client).clone()
    });
    // An expired certificate is never presented: no handshake is
    // attempted, with its own error and handshake result.
    let metrics = Metrics::new();
    let shared = Arc::new(Shared::new("shop".into(), metrics.clone()));
    let configs = Arc::new(TlsConfigs::default());
    configs.install(expired).expect("configs");
    let origination = Origination::new(configs, shared, metrics.tls());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let expected = SpiffeId::parse(SERVER).expect("id");
    let result = origination.connect(tcp, addr, &expected, Alpn::H2).await;
    let Err(error) = result else {
        panic!("refused");
    };
    assert!(
        matches!(error, OriginateError::Expired { ago, .. } if ago >= 5),
        "{error:?}"
    );
    assert!(error.to_string().contains("expired"), "{error}");
    assert_eq!(
        metrics
            .tls()
            .handshakes(Direction::Outbound, TlsResult::Expired),
        1
    );
}
