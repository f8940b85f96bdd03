//! Which flags make which control-plane connection, and the CSR the proxy sends.

use super::*;
use crate::ProxyConfig;

fn security(args: &[&str]) -> Result<ControlPlaneSecurity, String> {
    let config = ProxyConfig::from_args(args).map_err(|e| e.to_string())?;
    let url = config.control_plane.clone().unwrap_or_default();
    ControlPlaneSecurity::from_config(&config, &url)
}

fn bundle() -> tempfile::NamedTempFile {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::default()
        .self_signed(&key)
        .expect("cert");
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), cert.pem()).expect("write");
    file
}

#[test]
fn plaintext_needs_the_explicit_flag() {
    let refused = security(&["--control-plane", "http://127.0.0.1:8090"]).expect_err("refused");
    assert!(refused.contains("--insecure-plaintext"), "{refused}");
    assert!(matches!(
        security(&[
            "--control-plane",
            "http://127.0.0.1:8090",
            "--insecure-plaintext"
        ]),
        Ok(ControlPlaneSecurity::Plaintext)
    ));
}

#[test]
fn https_needs_a_trust_bundle_and_takes_the_identity_flags() {
    let refused = security(&["--control-plane", "https://127.0.0.1:8090"]).expect_err("refused");
    assert!(refused.contains("--trust-bundle-file"), "{refused}");
    let bundle = bundle();
    let path = bundle.path().to_str().expect("utf-8");
    let Ok(ControlPlaneSecurity::Tls { identity: None, .. }) = security(&[
        "--control-plane",
        "https://127.0.0.1:8090",
        "--trust-bundle-file",
        path,
    ]) else {
        panic!("TLS without an identity");
    };
    let Ok(ControlPlaneSecurity::Tls {
        identity: Some(settings),
        ..
    }) = security(&[
        "--control-plane",
        "https://127.0.0.1:8090",
        "--trust-bundle-file",
        path,
        "--identity-token-file",
        "/run/levee/token",
        "--service",
        "payments",
        "--namespace",
        "shop",
    ])
    else {
        panic!("TLS with an identity");
    };
    assert_eq!(
        settings.expected.map(|id| id.to_string()).as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/payments")
    );
    assert_eq!(
        settings.proof,
        Proof::JoinTokenFile("/run/levee/token".into())
    );
    // A file that holds no certificate is refused at start.
    let empty = tempfile::NamedTempFile::new().expect("temp file");
    let refused = security(&[
        "--control-plane",
        "https://127.0.0.1:8090",
        "--trust-bundle-file",
        empty.path().to_str().expect("utf-8"),
    ])
    .expect_err("refused");
    assert!(refused.contains("no certificate"), "{refused}");
}

#[test]
fn the_csr_names_the_expected_identity_and_service() {
    let id =
        levee_proto::policy::SpiffeId::workload("cluster.local", "shop", "payments").expect("id");
    let (_key, der) = csr_for(Some(&id), Some("payments")).expect("csr");
    let parsed = rcgen::CertificateSigningRequestParams::from_der(&der.as_slice().into())
        .expect("a valid, signed CSR");
    let uris: Vec<String> = parsed
        .params
        .subject_alt_names
        .iter()
        .map(|san| format!("{san:?}"))
        .collect();
    assert_eq!(uris.len(), 1, "{uris:?}");
    assert!(
        uris[0].contains("spiffe://cluster.local/ns/shop/sa/payments"),
        "{uris:?}"
    );
    assert!(
        parsed
            .params
            .distinguished_name
            .get(&rcgen::DnType::CommonName)
            .is_some()
    );
}

#[test]
fn the_trust_bundle_file_is_read_again_and_a_broken_one_is_ignored() {
    let first = bundle();
    let tls = ControlPlaneTls::load(first.path()).expect("loads");
    let before = tls.bundle();
    assert_eq!(before.len(), 1);
    // Replaced (a rotation): two roots now.
    let (a, b) = (bundle(), bundle());
    let mut both = std::fs::read(a.path()).expect("read");
    both.extend(std::fs::read(b.path()).expect("read"));
    std::fs::write(first.path(), &both).expect("write");
    let after = tls.bundle();
    assert_eq!(after.len(), 2);
    assert_ne!(after[0], before[0]);
    // Half-written or gone: the last good bundle stays.
    std::fs::write(first.path(), "-----BEGIN CERTIFICATE-----\n").expect("write");
    assert_eq!(tls.bundle(), after);
    std::fs::remove_file(first.path()).expect("remove");
    assert_eq!(tls.clone().bundle(), after);
}
