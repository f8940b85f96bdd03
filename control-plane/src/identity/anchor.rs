//! The trust anchor: which key signs workload certificates and which roots
//! the trust bundle holds.
//!
//! Two sources:
//! - generated (default): a self-signed root made at first start and kept,
//!   with its key, in the store's `ca` table. `--ca-rotate` moves it through
//!   a rotation: `prepare` adds a new root to the bundle (the old one still
//!   signs), `activate` makes the new root sign (the old one stays in the
//!   bundle), `retire` drops the old root. Expired roots leave the bundle.
//! - files (`--ca-cert-file`, `--ca-key-file`, optional `--ca-roots-file`):
//!   an operator's issuing certificate (a root, or an intermediate followed
//!   by its chain) and key; the bundle is the roots file, or the issuing
//!   certificate when it is self-signed. Rotation is the operator's: put
//!   old and new roots in the roots file while both are in use.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::store::{IdentityTable, PolicyStore};

/// How long a generated root is valid.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Key of the generated roots in the store's `ca` table.
const ROOTS_KEY: &str = "roots";

/// Operator-supplied CA files.
#[derive(Clone, Debug)]
pub struct CaFiles {
    /// PEM: the issuing certificate, then any intermediates up to a root.
    pub cert: PathBuf,
    /// PEM: the issuing certificate's private key (PKCS#8).
    pub key: PathBuf,
    /// PEM: the trust bundle; default: the issuing certificate if self-signed.
    pub roots: Option<PathBuf>,
}

/// A stage of a generated root's rotation (`--ca-rotate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RotationStage {
    /// Generate the next root and add it to the bundle; the current one still signs.
    Prepare,
    /// The next root signs; the old one stays in the bundle.
    Activate,
    /// Drop the old root from the bundle.
    Retire,
}

/// What signs and what is trusted.
pub struct Anchor {
    /// Signs workload and serving certificates.
    pub issuer: Issuer<'static, KeyPair>,
    /// The issuer's certificate and intermediates (sent after each leaf);
    /// empty when the issuer is itself a root.
    pub chain: Vec<CertificateDer<'static>>,
    /// The trust bundle.
    pub roots: Vec<CertificateDer<'static>>,
}

/// One generated root as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredRoot {
    cert_der: Vec<u8>,
    key_pkcs8: Vec<u8>,
    /// `active` (signs), `next` (prepared) or `old` (activated away from).
    state: String,
    not_after_unix: i64,
}

/// Reads the operator's files.
pub fn from_files(files: &CaFiles) -> Result<Anchor, String> {
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
    };
    let cert_pem = read("--ca-cert-file", &files.cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--ca-cert-file {}: {e}", files.cert.display()))?;
    let issuer_cert = chain
        .first()
        .ok_or_else(|| format!("--ca-cert-file {}: no certificate", files.cert.display()))?
        .clone();
    let key_pem = read("--ca-key-file", &files.key)?;
    let key_pem = String::from_utf8(key_pem)
        .map_err(|_| format!("--ca-key-file {}: not PEM", files.key.display()))?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| format!("--ca-key-file {}: {e}", files.key.display()))?;
    let issuer = Issuer::from_ca_cert_der(&issuer_cert, key)
        .map_err(|e| format!("--ca-cert-file {}: {e}", files.cert.display()))?;
    let self_signed = is_self_signed(&issuer_cert)?;
    let roots = match &files.roots {
        Some(path) => {
            let pem = read("--ca-roots-file", path)?;
            let roots: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("--ca-roots-file {}: {e}", path.display()))?;
            if roots.is_empty() {
                return Err(format!(
                    "--ca-roots-file {}: no certificate",
                    path.display()
                ));
            }
            roots
        }
        None if self_signed => vec![issuer_cert.clone()],
        None => {
            return Err(
                "--ca-cert-file is not self-signed (an intermediate): give its roots with --ca-roots-file"
                    .into(),
            );
        }
    };
    // A root needs no chain: peers have it in the bundle already.
    let chain = if self_signed { Vec::new() } else { chain };
    Ok(Anchor {
        issuer,
        chain,
        roots,
    })
}

/// The generated anchor: created at first start, rotated by `stage`.
pub fn generated(
    store: &PolicyStore,
    trust_domain: &str,
    stage: Option<RotationStage>,
) -> Result<Anchor, String> {
    let mut roots: Vec<StoredRoot> = match store
        .identity_get(IdentityTable::Ca, ROOTS_KEY)
        .map_err(|e| e.to_string())?
    {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("store: the CA record is corrupt: {e}"))?,
        None => Vec::new(),
    };
    let before = roots.len();
    let mut changed = false;
    if !roots.iter().any(|r| r.state == "active") {
        roots.push(generate_root(trust_domain, "active")?);
        changed = true;
        tracing::info!(trust_domain, "generated the CA's root certificate");
    }
    match stage {
        Some(RotationStage::Prepare) if !roots.iter().any(|r| r.state == "next") => {
            roots.push(generate_root(trust_domain, "next")?);
            changed = true;
            tracing::info!("CA rotation: prepared the next root (in the bundle, not signing yet)");
        }
        Some(RotationStage::Activate) if roots.iter().any(|r| r.state == "next") => {
            for root in &mut roots {
                root.state = match root.state.as_str() {
                    "active" => "old".into(),
                    "next" => "active".into(),
                    other => other.into(),
                };
            }
            changed = true;
            tracing::info!("CA rotation: the next root signs now; the old one stays in the bundle");
        }
        Some(RotationStage::Retire) if roots.iter().any(|r| r.state == "old") => {
            roots.retain(|r| r.state != "old");
            changed = true;
            tracing::info!("CA rotation: retired the old root");
        }
        Some(stage) => tracing::info!(?stage, "CA rotation: nothing to do at this stage"),
        None => {}
    }
    // Expired roots verify nothing any more.
    let now = unix_now();
    roots.retain(|r| r.state == "active" || r.not_after_unix > now);
    if changed || roots.len() != before {
        let bytes = serde_json::to_vec(&roots).map_err(|e| e.to_string())?;
        store
            .identity_put(IdentityTable::Ca, ROOTS_KEY, &bytes)
            .map_err(|e| e.to_string())?;
    }
    let active = roots
        .iter()
        .find(|r| r.state == "active")
        .ok_or("store: no active CA root")?;
    let key = KeyPair::try_from(active.key_pkcs8.as_slice())
        .map_err(|e| format!("store: the CA key is unreadable: {e}"))?;
    let cert = CertificateDer::from(active.cert_der.clone());
    let issuer = Issuer::from_ca_cert_der(&cert, key)
        .map_err(|e| format!("store: the CA certificate is unreadable: {e}"))?;
    Ok(Anchor {
        issuer,
        chain: Vec::new(),
        roots: roots
            .iter()
            .map(|r| CertificateDer::from(r.cert_der.clone()))
            .collect(),
    })
}

/// A root made at start and kept only in memory: `--kubernetes` with
/// `--insecure-plaintext` and no CA files (a demo or a test; replicas would
/// each make their own, so a real deployment gives the CA as files).
pub fn ephemeral(trust_domain: &str) -> Result<Anchor, String> {
    let root = generate_root(trust_domain, "active")?;
    let key = KeyPair::try_from(root.key_pkcs8.as_slice())
        .map_err(|e| format!("the generated CA key is unreadable: {e}"))?;
    let cert = CertificateDer::from(root.cert_der);
    let issuer = Issuer::from_ca_cert_der(&cert, key)
        .map_err(|e| format!("the generated CA certificate is unreadable: {e}"))?;
    Ok(Anchor {
        issuer,
        chain: Vec::new(),
        roots: vec![cert],
    })
}

fn generate_root(trust_domain: &str, state: &str) -> Result<StoredRoot, String> {
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Levee");
    name.push(
        DnType::CommonName,
        format!("Levee root CA {trust_domain} {}", unix_now()),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(Duration::from_secs(3600));
    params.not_after = epoch + now + ROOT_LIFETIME;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(StoredRoot {
        cert_der: cert.der().to_vec(),
        key_pkcs8: key.serialize_der(),
        state: state.to_owned(),
        not_after_unix: unix_now().saturating_add(ROOT_LIFETIME.as_secs() as i64),
    })
}

fn is_self_signed(cert: &CertificateDer<'_>) -> Result<bool, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("--ca-cert-file: not a certificate: {e}"))?;
    Ok(parsed.issuer() == parsed.subject())
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
