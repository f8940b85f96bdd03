//! Test PKI for the mTLS tests, made with rcgen: a CA and workload
//! certificates whose one URI SAN is a SPIFFE ID, as PEM text (for the
//! proxy's `--identity-*-file` flags) and DER (for in-process TLS).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A test certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (the trust bundle), PEM.
    pub pem: String,
    /// The CA certificate, DER.
    pub der: Vec<u8>,
    /// The CA's key, PKCS#8 PEM (for a control plane's `--ca-key-file`).
    pub key_pem: String,
}

/// A workload's certificate and key, signed by a [`TestCa`].
pub struct Workload {
    /// The SPIFFE ID in the certificate's URI SAN.
    pub id: String,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// PKCS#8.
    pub key_pem: String,
    /// PKCS#8.
    pub key_der: Vec<u8>,
}

/// The three files the proxy's identity flags name.
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bundle: PathBuf,
}

impl TestCa {
    /// A fresh self-signed CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A workload certificate for `spiffe_id`, valid for a day.
    pub fn workload(&self, spiffe_id: &str) -> Workload {
        self.workload_valid_for(spiffe_id, std::time::Duration::from_secs(86_400))
    }

    /// A workload certificate for `spiffe_id` that expires `lifetime`
    /// from now (valid since a minute ago).
    pub fn workload_valid_for(&self, spiffe_id: &str, lifetime: std::time::Duration) -> Workload {
        let key = KeyPair::generate().expect("workload key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![SanType::URI(
            spiffe_id.try_into().expect("an IA5 SPIFFE ID"),
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(60)).into();
        params.not_after = (now + lifetime).into();
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Workload {
            id: spiffe_id.to_owned(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}

impl IdentityFiles {
    /// The `levee-proxy` flags that name these files.
    pub fn flags(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--identity-cert-file".into(),
            path(&self.cert),
            "--identity-key-file".into(),
            path(&self.key),
            "--trust-bundle-file".into(),
            path(&self.bundle),
        ]
    }
}

impl Workload {
    /// Writes the certificate, key and `ca`'s bundle into `dir`, named
    /// after `name`.
    pub fn write(&self, dir: &Path, name: &str, ca: &TestCa) -> IdentityFiles {
        let files = IdentityFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            bundle: dir.join(format!("{name}-bundle.crt")),
        };
        std::fs::write(&files.cert, &self.cert_pem).expect("write cert");
        std::fs::write(&files.key, &self.key_pem).expect("write key");
        std::fs::write(&files.bundle, &ca.pem).expect("write bundle");
        files
    }
}
