//! The control plane's own webhook CA and serving certificate (rcgen,
//! ECDSA P-256), for installations without cert-manager.
//!
//! Each replica makes its own CA at start (its key never leaves the
//! process: nothing to store, nothing to steal from a Secret) and puts it
//! into the webhook configurations' `caBundle` next to the other replicas'
//! (`ca_bundle`). The CA lives [`CA_LIFETIME`], the serving certificate
//! [`SERVING_LIFETIME`]; each is replaced once two thirds of its life has
//! passed, so a replacement always overlaps the old one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::error::BoxError;

/// How long a webhook CA is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a serving certificate is valid.
pub const SERVING_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates start this long before "now", for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// One CA: its certificate (PEM) and the issuer that signs with its key.
pub struct Authority {
    /// What goes into `caBundle`.
    pub pem: String,
    /// When it was made; it is replaced at two thirds of [`CA_LIFETIME`].
    pub issued: SystemTime,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("issued", &self.issued)
            .finish_non_exhaustive()
    }
}

/// A serving certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// When it was made; it is replaced at two thirds of [`SERVING_LIFETIME`].
    pub issued: SystemTime,
}

impl Authority {
    /// A new CA, valid from `now` (backdated a little) for [`CA_LIFETIME`].
    pub fn new(now: SystemTime) -> Result<Authority, BoxError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "levee-control-plane webhook CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, now, CA_LIFETIME)?;
        let pem = params.self_signed(&key)?.pem();
        Ok(Authority {
            pem,
            issued: now,
            issuer: Issuer::new(params, key),
        })
    }

    /// A serving certificate for `names` (DNS names, or IP addresses).
    pub fn issue(&self, names: &[String], now: SystemTime) -> Result<Issued, BoxError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            names.first().map_or("levee-control-plane", String::as_str),
        );
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, now, SERVING_LIFETIME)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        // The chain the server sends: the leaf, then the CA.
        Ok(Issued {
            cert_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
            issued: now,
        })
    }
}

/// Whether something issued at `issued` for `lifetime` is due for
/// replacement at `now` (two thirds of its life passed; a clock that went
/// backwards also renews).
pub fn due(issued: SystemTime, lifetime: Duration, now: SystemTime) -> bool {
    match now.duration_since(issued) {
        Ok(age) => age >= lifetime / 3 * 2,
        Err(_) => true,
    }
}

fn validity(
    params: &mut CertificateParams,
    now: SystemTime,
    lifetime: Duration,
) -> Result<(), BoxError> {
    let since_epoch = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970")?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch.saturating_sub(BACKDATE);
    params.not_after = epoch + since_epoch + lifetime;
    Ok(())
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::*;

    use super::*;

    #[test]
    fn the_serving_certificate_names_the_service_and_chains_to_the_ca() {
        let now = SystemTime::now();
        let ca = Authority::new(now).unwrap();
        let names = vec![
            "levee-control-plane.levee-system.svc".to_owned(),
            "127.0.0.1".to_owned(),
        ];
        let issued = ca.issue(&names, now).unwrap();
        let pems: Vec<_> = Pem::iter_from_buffer(issued.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(pems.len(), 2, "leaf then CA");
        let leaf = pems[0].parse_x509().unwrap();
        let root = pems[1].parse_x509().unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
        assert!(root.is_ca());
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        let listed: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            listed,
            [
                "DNSName(levee-control-plane.levee-system.svc)",
                "IPAddress(7f:00:00:01)"
            ]
        );
        let lifetime =
            leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
        assert_eq!(
            lifetime,
            i64::try_from((SERVING_LIFETIME + BACKDATE).as_secs()).unwrap()
        );
        // The key in the PEM is the certificate's.
        super::super::certified_key(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap();
    }

    #[test]
    fn renewal_is_due_after_two_thirds_of_the_lifetime() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(24 * 3600);
        assert!(!due(start, SERVING_LIFETIME, start + day * 19));
        assert!(due(start, SERVING_LIFETIME, start + day * 20));
        assert!(due(start, SERVING_LIFETIME, start - day), "clock went back");
    }
}
