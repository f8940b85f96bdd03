//! Workloads whose identity comes from a control plane (docs/identity.md):
//! join tokens from `leveectl token create`, proxies that prove themselves
//! with them, a TLS client that reports which certificate a listener
//! presents, checked against the control plane's trust bundle, and an
//! mTLS client that speaks to a sidecar as a peer proxy does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use x509_parser::extensions::GeneralName;

use super::certs::Workload;
use super::{BoxError, ControlPlane, Proxy, ProxyBuilder};

/// `leveectl token create --service SERVICE -n NAMESPACE` against `cp`;
/// returns the path of a file (in `cp`'s directory) holding the token.
pub async fn join_token(cp: &ControlPlane, service: &str, namespace: &str) -> PathBuf {
    let out = cp
        .leveectl(&["token", "create", "--service", service, "-n", namespace])
        .await
        .expect("leveectl");
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).expect("utf-8");
    let path = cp
        .dir()
        .join(format!("{service}-{}.token", rand::random::<u32>()));
    std::fs::write(&path, token.trim()).expect("writing the token");
    path
}

/// A proxy of `service` in `namespace` (its app on `app_port`) watching
/// `cp` over TLS and proving itself with the join token in `token`.
pub fn certified_proxy(
    cp: &ControlPlane,
    service: &str,
    namespace: &str,
    app_port: u16,
    token: &Path,
) -> ProxyBuilder {
    Proxy::builder()
        .service(service)
        .namespace(namespace)
        .app_port(app_port)
        .control_plane(&cp.grpc_url())
        .arg("--trust-bundle-file")
        .arg(cp.trust_bundle())
        .arg("--identity-token-file")
        .arg(token)
}

/// The certificate a TLS listener presented, whose chain verified against
/// the trust bundle it was checked with.
#[derive(Debug)]
pub struct Presented {
    /// The leaf's URI SANs.
    pub uris: Vec<String>,
    /// The leaf's issuer, as x509-parser prints a DN.
    pub issuer: String,
    /// The leaf's notAfter, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// Subjects of the certificates in a PEM bundle, as x509-parser prints a DN.
pub fn subjects(bundle_pem: &[u8]) -> Vec<String> {
    CertificateDer::pem_slice_iter(bundle_pem)
        .filter_map(Result::ok)
        .filter_map(|der| {
            x509_parser::parse_x509_certificate(&der)
                .ok()
                .map(|(_, c)| c.subject().to_string())
        })
        .collect()
}

/// A TLS 1.3 handshake with `addr` (no client certificate, no SNI): the
/// server's chain must verify against the roots in `bundle_pem`; its name
/// is not checked (a workload certificate names a SPIFFE ID, not a host).
pub async fn presented_certificate(
    addr: SocketAddr,
    bundle_pem: &[u8],
) -> Result<Presented, BoxError> {
    let verifier = bundle_verifier(bundle_pem)?;
    let config = client_config(verifier.clone())?.with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(super::REQUEST_DEADLINE, connector.connect(name, tcp))
        .await
        .map_err(|_| "the TLS handshake did not finish")??;
    let leaf = verifier
        .leaf
        .lock()
        .map_err(|_| "poisoned")?
        .take()
        .ok_or("no certificate presented")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)?;
    let uris = cert
        .subject_alternative_name()?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => Some((*uri).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Presented {
        uris,
        issuer: cert.issuer().to_string(),
        not_after_unix: cert.validity().not_after.timestamp(),
    })
}

/// An mTLS client as a peer proxy is one: it presents `client`'s
/// certificate, offers `alpn`, and accepts a server whose chain verifies
/// against the roots in `bundle_pem` (its name is not checked). The
/// handshake over `tcp` must finish within the request deadline.
pub async fn mtls_connect(
    tcp: tokio::net::TcpStream,
    bundle_pem: &[u8],
    client: &Workload,
    alpn: &[u8],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, BoxError> {
    let chain = vec![CertificateDer::from(client.cert_der.clone())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client.key_der.clone()));
    let mut config =
        client_config(bundle_verifier(bundle_pem)?)?.with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    let name = ServerName::IpAddress(tcp.peer_addr()?.ip().into());
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = tokio::time::timeout(super::REQUEST_DEADLINE, connector.connect(name, tcp))
        .await
        .map_err(|_| "the TLS handshake did not finish")??;
    Ok(tls)
}

/// A verifier of chains to the roots in `bundle_pem`.
fn bundle_verifier(bundle_pem: &[u8]) -> Result<Arc<BundleVerifier>, BoxError> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(bundle_pem) {
        roots.add(der?)?;
    }
    Ok(Arc::new(BundleVerifier {
        roots,
        algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        leaf: Mutex::default(),
    }))
}

/// A TLS 1.3 client config (ring) that verifies with `verifier`.
fn client_config(
    verifier: Arc<BundleVerifier>,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, BoxError>
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier))
}

/// Verifies the chain against `roots` (webpki, as a TLS client does) and
/// keeps the leaf; no name check.
#[derive(Debug)]
struct BundleVerifier {
    roots: RootCertStore,
    algorithms: WebPkiSupportedAlgorithms,
    leaf: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for BundleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if let Ok(mut leaf) = self.leaf.lock() {
            *leaf = Some(end_entity.to_vec());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
