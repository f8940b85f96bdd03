//! One certificate request: a new key pair (ECDSA P-256, in memory), a CSR
//! naming the identity the proxy expects, `Identity.Certify` with the proof,
//! and the checks on the answer (the SPIFFE ID, the trust domain, the
//! leaf's key being ours).

use std::time::{Duration, UNIX_EPOCH};

use levee_proto::policy::SpiffeId;
use levee_proto::v1::identity_client::IdentityClient;
use levee_proto::v1::{CertifyRequest, certify_request};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, SanType};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::{Certified, IdentitySettings, Proof};

/// One Certify call (connect included) fails after this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A new key pair and a CSR for `expected` (URI SAN) and `service` (CN).
pub fn csr_for(
    expected: Option<&SpiffeId>,
    service: Option<&str>,
) -> Result<(KeyPair, Vec<u8>), String> {
    let key = KeyPair::generate().map_err(|e| format!("generating a key pair: {e}"))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    if let Some(service) = service.filter(|s| !s.is_empty()) {
        name.push(DnType::CommonName, service);
    }
    params.distinguished_name = name;
    if let Some(id) = expected {
        let uri = id
            .to_string()
            .try_into()
            .map_err(|e| format!("SPIFFE ID {id}: {e}"))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
    }
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("making the CSR: {e}"))?;
    Ok((key, csr.der().to_vec()))
}

fn read_proof(proof: &Proof) -> Result<certify_request::Proof, String> {
    let (flag, path) = match proof {
        Proof::JoinTokenFile(p) => ("--identity-token-file", p),
        Proof::ServiceAccountTokenFile(p) => ("--identity-sa-token-file", p),
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(format!("{flag} {}: the file is empty", path.display()));
    }
    Ok(match proof {
        Proof::JoinTokenFile(_) => certify_request::Proof::JoinToken(token),
        Proof::ServiceAccountTokenFile(_) => certify_request::Proof::ServiceAccountToken(token),
    })
}

/// Asks the control plane for a certificate. `roots` are the latest roots
/// the CA sent (trusted next to the bundle file, so a rotated root works).
pub async fn certify(
    settings: &IdentitySettings,
    roots: &[CertificateDer<'static>],
) -> Result<Certified, String> {
    let proof = read_proof(&settings.proof)?;
    let (key, csr) = csr_for(settings.expected.as_ref(), settings.service.as_deref())?;
    let call = async {
        // The first replica that accepts the connection answers.
        let mut failures = Vec::new();
        let mut connected = None;
        for url in &settings.urls {
            let endpoint = settings.tls.endpoint(url, None, roots)?;
            match endpoint.connect().await {
                Ok(channel) => {
                    connected = Some(channel);
                    break;
                }
                Err(e) => failures.push(format!(
                    "connecting to {url}: {}",
                    crate::errors::error_chain(&e)
                )),
            }
        }
        let Some(channel) = connected else {
            return Err(failures.join("; "));
        };
        IdentityClient::new(channel)
            .certify(CertifyRequest {
                csr,
                proof: Some(proof),
            })
            .await
            .map_err(|status| {
                format!(
                    "Certify refused ({:?}): {}",
                    status.code(),
                    status.message()
                )
            })
    };
    let answer = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| format!("Certify did not answer within {CALL_TIMEOUT:?}"))??
        .into_inner();
    check_answer(settings, &key, answer)
}

fn check_answer(
    settings: &IdentitySettings,
    key: &KeyPair,
    answer: levee_proto::v1::CertifyResponse,
) -> Result<Certified, String> {
    let id = SpiffeId::parse(&answer.spiffe_id)
        .map_err(|e| format!("the control plane sent a bad SPIFFE ID: {e}"))?;
    if id.trust_domain() != settings.trust_domain {
        return Err(format!(
            "the control plane issued {id}, outside the trust domain {:?} (--identity-trust-domain)",
            settings.trust_domain
        ));
    }
    if let Some(expected) = &settings.expected
        && *expected != id
    {
        return Err(format!(
            "asked for {expected}, the control plane issued {id}"
        ));
    }
    let leaf = answer
        .certificate_chain
        .first()
        .ok_or("the control plane sent no certificate")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err("the certificate is not for this proxy's key".into());
    }
    let not_after = u64::try_from(parsed.validity().not_after.timestamp())
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .map_err(|_| "the certificate's notAfter is before 1970")?;
    if answer.trust_roots.is_empty() {
        return Err("the control plane sent no trust roots".into());
    }
    Ok(Certified {
        cert_chain: answer
            .certificate_chain
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        roots: answer
            .trust_roots
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
        spiffe_id: id.to_string(),
        service: answer.service,
        not_after,
    })
}
