//! A proxy that registers its endpoint over a Discovery stream authenticated
//! by its workload certificate: callers are told to expect that
//! certificate's SPIFFE ID at the registered address (so their proxies
//! originate mTLS and verify it), and the identity goes with the
//! registration. A control plane serving TLS with its own CA, a join token,
//! a CSR made here, `Identity.Certify`, then `Discovery.Watch` over mTLS.

use levee_proto::v1;
use levee_proto::v1::discovery_client::DiscoveryClient;
use levee_proto::v1::identity_client::IdentityClient;
use levee_proto::v1::join_tokens_client::JoinTokensClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::common::{TestControlPlane, Watch, hello_request, service};

const PAYMENTS_ID: &str = "spiffe://cluster.local/ns/shop/sa/payments";

/// `https://127.0.0.1:PORT` of the gRPC listener.
fn url(cp: &TestControlPlane) -> String {
    format!("https://{}", cp.addrs.grpc)
}

async fn channel(cp: &TestControlPlane, tls: ClientTlsConfig) -> Channel {
    Endpoint::from_shared(url(cp))
        .expect("url")
        .tls_config(tls)
        .expect("tls settings")
        .connect()
        .await
        .expect("TLS connect")
}

/// A channel presenting a workload certificate for `payments.shop`, got
/// with a join token (loopback callers need no admin token).
async fn certified(cp: &TestControlPlane) -> Channel {
    let bundle = std::fs::read(cp.trust_bundle()).expect("trust bundle");
    let server_only = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&bundle));
    let plain = channel(cp, server_only.clone()).await;
    let token = JoinTokensClient::new(plain.clone())
        .create_token(v1::CreateTokenRequest {
            service: "payments".into(),
            namespace: "shop".into(),
            ..Default::default()
        })
        .await
        .expect("a join token")
        .into_inner()
        .token;
    let key = rcgen::KeyPair::generate().expect("key");
    // No subject (rcgen's default CN would not be the service): the CA
    // grants what the token says.
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).expect("csr").der().to_vec();
    let answer = IdentityClient::new(plain)
        .certify(v1::CertifyRequest {
            csr,
            proof: Some(v1::certify_request::Proof::JoinToken(token)),
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
    channel(
        cp,
        server_only.identity(Identity::from_pem(chain, key.serialize_pem())),
    )
    .await
}

/// Opens a Watch over `channel` and sends `hello`.
async fn watch(channel: Channel, hello: v1::Hello) -> Watch {
    let (tx, rx) = mpsc::channel(16);
    tx.send(hello_request(hello)).await.expect("queue hello");
    let responses = DiscoveryClient::new(channel)
        .watch(ReceiverStream::new(rx))
        .await
        .expect("watch accepted")
        .into_inner();
    Watch { tx, responses }
}

#[tokio::test]
async fn a_certified_registration_is_expected_to_present_its_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start_tls(dir.path(), &["--endpoint-grace", "100ms"]).await;
    let mtls = certified(&cp).await;

    // A caller: no registration (no service), watching payments.
    let mut caller = watch(
        mtls.clone(),
        v1::Hello {
            namespace: "shop".into(),
            subscriptions: vec![service("payments", "shop", 8080)],
            ..Default::default()
        },
    )
    .await;
    let empty = caller.next_update().await;
    assert!(empty.endpoints.is_empty() && empty.identities.is_empty());

    // The payments proxy registers its inbound port at its own address.
    let server = watch(
        mtls,
        v1::Hello {
            service: "payments".into(),
            namespace: "shop".into(),
            service_port: 8080,
            address: "127.0.0.1".into(),
            inbound_port: 4143,
            ..Default::default()
        },
    )
    .await;
    let joined = caller.update_where(|u| !u.endpoints.is_empty()).await;
    assert_eq!(joined.endpoints, ["127.0.0.1:4143"]);
    assert_eq!(
        joined.identities.get("127.0.0.1:4143").map(String::as_str),
        Some(PAYMENTS_ID),
        "{:?}",
        joined.identities
    );
    assert_eq!(joined.identities.len(), 1);
    assert_ne!(joined.version, empty.version);

    // The registration ends (after the grace period): so does the identity.
    drop(server);
    let left = caller.update_where(|u| u.endpoints.is_empty()).await;
    assert!(left.identities.is_empty(), "{:?}", left.identities);
    assert_eq!(left.version, empty.version, "same content, same version");
    drop(caller);
    cp.stop().await;
}
