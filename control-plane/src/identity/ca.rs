//! The certificate authority: turns a CSR and a proven identity into a
//! short-lived workload certificate, and issues the control plane's own
//! serving certificate. Keys never pass through here except the serving
//! key, generated in memory at start.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use levee_proto::policy::SpiffeId;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivatePkcs8KeyDer};

use super::Refusal;
use super::anchor::Anchor;

/// Backdating of `notBefore`, for peers whose clock is a little behind.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Who a proof says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenIdentity {
    /// The SPIFFE ID the certificate will carry.
    pub spiffe_id: SpiffeId,
    /// The service it may register endpoints for (the certificate's subject CN).
    pub service: String,
}

/// A workload certificate as issued.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Leaf first, then the issuer's chain (no root).
    pub chain: Vec<CertificateDer<'static>>,
    /// Seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// The CA: the anchor plus the rules of what it signs.
pub struct Ca {
    anchor: Anchor,
    trust_domain: String,
    workload_lifetime: Duration,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("roots", &self.anchor.roots.len())
            .field("workload_lifetime", &self.workload_lifetime)
            .finish()
    }
}

impl Ca {
    /// A CA issuing for `trust_domain`, certificates valid `workload_lifetime`.
    pub fn new(anchor: Anchor, trust_domain: &str, workload_lifetime: Duration) -> Self {
        Ca {
            anchor,
            trust_domain: trust_domain.to_owned(),
            workload_lifetime,
        }
    }

    /// The trust domain of every SPIFFE ID issued.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The trust bundle (DER roots).
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.anchor.roots
    }

    /// The trust bundle as PEM (what `--trust-bundle-file` of proxies holds).
    pub fn roots_pem(&self) -> String {
        self.anchor
            .roots
            .iter()
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())))
            .collect()
    }

    /// Checks `csr` (signature, requested names) against `proven` and signs it.
    pub fn certify(&self, csr_der: &[u8], proven: &ProvenIdentity) -> Result<Issued, Refusal> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| Refusal::BadCsr(format!("the CSR does not parse or verify: {e}")))?;
        let granted = proven.spiffe_id.to_string();
        for san in &csr.params.subject_alt_names {
            match san {
                SanType::URI(uri) if uri.as_str() == granted => {}
                SanType::URI(uri) => {
                    return Err(Refusal::IdentityMismatch(format!(
                        "the CSR asks for {:?} but the proof grants {granted:?}",
                        uri.as_str()
                    )));
                }
                other => {
                    return Err(Refusal::BadCsr(format!(
                        "the CSR asks for {other:?}; only the workload's SPIFFE URI is issued"
                    )));
                }
            }
        }
        if let Some(cn) = csr.params.distinguished_name.get(&DnType::CommonName) {
            let cn = dn_text(cn);
            if cn != proven.service {
                return Err(Refusal::IdentityMismatch(format!(
                    "the CSR's subject CN is {cn:?} but the proof is for service {:?}",
                    proven.service
                )));
            }
        }
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, proven.service.as_str());
        params.distinguished_name = name;
        let uri = granted
            .clone()
            .try_into()
            .map_err(|e| Refusal::Internal(format!("SPIFFE ID as IA5: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Both ends of a sidecar-to-sidecar hop, and a client of the control plane.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let not_after_unix = self.set_validity(&mut params, self.workload_lifetime)?;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(&csr.public_key, &self.anchor.issuer)
            .map_err(|e| Refusal::Internal(format!("signing: {e}")))?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.anchor.chain.iter().cloned());
        Ok(Issued {
            chain,
            not_after_unix,
        })
    }

    /// A serving certificate for the control plane's gRPC listener, valid
    /// for `names` (DNS names or IP addresses), with a new key.
    pub fn serving_identity(
        &self,
        names: &[String],
        lifetime: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivatePkcs8KeyDer<'static>), String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "levee-control-plane");
        params.distinguished_name = name;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| format!("--server-names {n:?}: {e}")),
            })
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.set_validity(&mut params, lifetime)
            .map_err(|e| e.to_string())?;
        params.serial_number = Some(random_serial().map_err(|e| e.to_string())?);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.anchor.issuer)
            .map_err(|e| e.to_string())?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.anchor.chain.iter().cloned());
        Ok((chain, PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    /// Sets notBefore (a little in the past) and notAfter; returns notAfter.
    fn set_validity(
        &self,
        params: &mut CertificateParams,
        lifetime: Duration,
    ) -> Result<i64, Refusal> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| Refusal::Internal(format!("the clock is before 1970: {e}")))?;
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let not_after = now.saturating_add(lifetime);
        params.not_before = epoch + now.saturating_sub(CLOCK_SKEW);
        params.not_after = epoch + not_after;
        Ok(i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX))
    }
}

fn dn_text(value: &DnValue) -> String {
    match value {
        DnValue::PrintableString(s) => s.as_str().to_owned(),
        DnValue::Utf8String(s) => s.clone(),
        DnValue::Ia5String(s) => s.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

fn random_serial() -> Result<SerialNumber, Refusal> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Refusal::Internal("no randomness for a serial number".into()))?;
    // Positive: the top bit clear.
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}
