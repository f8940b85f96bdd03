//! Certificates as identities: the SPIFFE ID a certificate names, and the
//! server verifier of outbound mTLS ([`SpiffeServerVerifier`]): the chain
//! must end at one of the trust roots (webpki, as for any TLS server), then
//! the leaf's SPIFFE URI SAN must be the identity the endpoint is expected
//! to have. DNS names and the TLS server name play no part: endpoints are
//! addresses, and what matters is which workload answers there.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use levee_proto::policy::{SPIFFE_SCHEME, SpiffeId};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use x509_parser::extensions::GeneralName;

/// The one SPIFFE ID in `der`'s URI SANs; `Err` says why there is none
/// (not a certificate, no SPIFFE URI, several, a malformed one).
pub fn spiffe_id(der: &[u8]) -> Result<SpiffeId, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?
        .ok_or("no subjectAltName: a workload certificate names its SPIFFE ID there")?;
    let mut ids = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(SPIFFE_SCHEME) => Some(*uri),
            _ => None,
        });
    let first = ids.next().ok_or("no spiffe:// URI SAN")?;
    if ids.next().is_some() {
        return Err("more than one spiffe:// URI SAN".into());
    }
    SpiffeId::parse(first)
}

/// Who issued `der`: its issuer's distinguished name (RFC 4514 text).
pub fn issuer(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(cert.issuer().to_string())
}

/// When `der` expires.
pub fn not_after(der: &[u8]) -> Result<SystemTime, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let secs = cert.validity().not_after.timestamp();
    let secs = u64::try_from(secs).map_err(|_| "expires before 1970".to_owned())?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

/// The server presented a valid chain for another workload: the endpoint
/// is not who it was expected to be (`upstream-identity`).
#[derive(Debug, thiserror::Error)]
#[error("the server is {found}, not the expected {expected}")]
pub struct IdentityMismatch {
    pub expected: SpiffeId,
    /// What the certificate names (or why it names nothing usable).
    pub found: String,
}

impl IdentityMismatch {
    /// The mismatch a rustls error carries, if it is one.
    pub fn in_rustls(error: &rustls::Error) -> Option<&IdentityMismatch> {
        match error {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                inner.downcast_ref::<IdentityMismatch>()
            }
            _ => None,
        }
    }
}

/// Verifies a server's chain against the trust roots, then its SPIFFE ID
/// against `expected`.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        expected: SpiffeId,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        SpiffeServerVerifier {
            roots,
            expected,
            algorithms,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        match spiffe_id(end_entity) {
            Ok(found) if found == self.expected => Ok(ServerCertVerified::assertion()),
            other => {
                let found = match other {
                    Ok(id) => id.to_string(),
                    Err(why) => why,
                };
                let mismatch = IdentityMismatch {
                    expected: self.expected.clone(),
                    found,
                };
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(mismatch)),
                )))
            }
        }
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
