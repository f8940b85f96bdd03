//! [`Credentials`]: what the proxy proves its identity with and trusts
//! peers by, in DER, with the identity its certificate names.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use levee_proto::policy::SpiffeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::verify;

/// A workload's certificate, key and trust roots. The same fields as the
/// control-plane client's certificate, so either source feeds the proxy.
#[derive(Clone)]
pub struct Credentials {
    /// DER certificates, the workload's own first, then intermediates.
    pub cert_chain: Vec<Vec<u8>>,
    /// The private key of the first certificate, DER PKCS#8. Never logged,
    /// never shown (`Debug` leaves it out).
    pub private_key: Vec<u8>,
    /// DER certificates of the trust anchors peers' chains must end at.
    pub trust_roots: Vec<Vec<u8>>,
    /// The SPIFFE ID of the certificate's URI SAN.
    pub identity: SpiffeId,
    /// When the certificate expires.
    pub not_after: SystemTime,
    /// The certificate's issuer (distinguished name), for `/config`.
    pub issuer: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("not_after", &self.not_after)
            .field("issuer", &self.issuer)
            .field("certificates", &self.cert_chain.len())
            .field("trust_roots", &self.trust_roots.len())
            .finish_non_exhaustive()
    }
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{what}: {detail}")]
    Unreadable { what: &'static str, detail: String },
}

fn unreadable(what: &'static str, detail: impl ToString) -> CredentialsError {
    CredentialsError::Unreadable {
        what,
        detail: detail.to_string(),
    }
}

impl Credentials {
    /// Reads PEM text: `cert` (the chain, leaf first), `key` (one `PRIVATE
    /// KEY`, PKCS#8) and `bundle` (one or more trust-anchor certificates).
    /// The leaf must carry exactly one SPIFFE URI SAN.
    pub fn from_pem(cert: &[u8], key: &[u8], bundle: &[u8]) -> Result<Self, CredentialsError> {
        let cert_chain = certificates("certificate", cert)?;
        let private_key = PrivatePkcs8KeyDer::from_pem_slice(key)
            .map_err(|e| unreadable("private key (PEM PKCS#8 \"PRIVATE KEY\")", e))?
            .secret_pkcs8_der()
            .to_vec();
        let trust_roots = certificates("trust bundle", bundle)?;
        Credentials::from_der(cert_chain, private_key, trust_roots)
    }

    /// Checks DER parts: the leaf names one SPIFFE ID, the key matches.
    pub fn from_der(
        cert_chain: Vec<Vec<u8>>,
        private_key: Vec<u8>,
        trust_roots: Vec<Vec<u8>>,
    ) -> Result<Self, CredentialsError> {
        let leaf = cert_chain
            .first()
            .ok_or_else(|| unreadable("certificate", "no certificate"))?;
        let identity = verify::spiffe_id(leaf).map_err(|why| unreadable("certificate", why))?;
        let not_after = verify::not_after(leaf).map_err(|why| unreadable("certificate", why))?;
        let issuer = verify::issuer(leaf).map_err(|why| unreadable("certificate", why))?;
        if trust_roots.is_empty() {
            return Err(unreadable("trust bundle", "no certificate"));
        }
        let credentials = Credentials {
            cert_chain,
            private_key,
            trust_roots,
            identity,
            not_after,
            issuer,
        };
        // The key must be usable and belong to the certificate.
        super::configs::certified_key(&credentials).map_err(|e| unreadable("private key", e))?;
        Ok(credentials)
    }

    /// Seconds until the certificate expires (negative once expired).
    pub fn seconds_left(&self, now: SystemTime) -> f64 {
        match self.not_after.duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        }
    }

    /// How long ago the certificate expired, if it has at `now` (it is
    /// valid until `not_after`, exclusive).
    pub fn expired_for(&self, now: SystemTime) -> Option<Duration> {
        match self.not_after.duration_since(now) {
            Ok(left) if !left.is_zero() => None,
            Ok(_) => Some(Duration::ZERO),
            Err(past) => Some(past.duration()),
        }
    }

    /// `not_after` as seconds since the Unix epoch.
    pub fn not_after_unix(&self) -> u64 {
        self.not_after
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs()
    }
}

fn certificates(what: &'static str, pem: &[u8]) -> Result<Vec<Vec<u8>>, CredentialsError> {
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        out.push(cert.map_err(|e| unreadable(what, e))?.to_vec());
    }
    if out.is_empty() {
        return Err(unreadable(what, "no PEM CERTIFICATE found"));
    }
    Ok(out)
}
