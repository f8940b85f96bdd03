//! The CA, its trust anchor and rotation, join tokens, and the Discovery
//! peer rules, tested directly (chains verified with rustls' WebPKI verifier).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use levee_proto::policy::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;

use super::Refusal;
use super::anchor::{self, RotationStage};
use super::ca::{Ca, ProvenIdentity};
use super::peer;
use super::tokens::JoinTokens;
use crate::store::{IdentityTable, PolicyStore};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn new_store() -> (tempfile::TempDir, Arc<PolicyStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = PolicyStore::open(dir.path()).expect("store");
    (dir, Arc::new(store))
}

fn payments() -> ProvenIdentity {
    ProvenIdentity {
        spiffe_id: SpiffeId::workload("cluster.local", "shop", "payments").expect("id"),
        service: "payments".into(),
    }
}

fn csr(sans: Vec<SanType>, cn: Option<&str>) -> Vec<u8> {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    if let Some(cn) = cn {
        name.push(DnType::CommonName, cn);
    }
    params.distinguished_name = name;
    params.subject_alt_names = sans;
    params.serialize_request(&key).expect("csr").der().to_vec()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.to_owned().try_into().expect("ia5"))
}

/// Whether `chain` verifies as a client certificate against `roots` now.
fn verifies(chain: &[CertificateDer<'static>], roots: &[CertificateDer<'static>]) -> bool {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("root");
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .is_ok()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .expect("clock")
}

#[test]
fn issues_a_verifiable_certificate_with_one_spiffe_san_and_the_lifetime() {
    let (_dir, store) = new_store();
    let anchor = anchor::generated(&store, "cluster.local", None).expect("anchor");
    let ca = Ca::new(anchor, "cluster.local", DAY);
    let issued = ca
        .certify(
            &csr(
                vec![uri("spiffe://cluster.local/ns/shop/sa/payments")],
                Some("payments"),
            ),
            &payments(),
        )
        .expect("issued");
    assert!(verifies(&issued.chain, ca.roots()));
    let parsed = peer::parse_leaf(&issued.chain[0]).expect("leaf");
    assert_eq!(parsed.spiffe_id, payments().spiffe_id);
    assert_eq!(parsed.service, "payments");
    let expected = unix_now() + DAY.as_secs() as i64;
    assert!((parsed.not_after_unix - expected).abs() <= 2, "{parsed:?}");
    assert_eq!(issued.not_after_unix, parsed.not_after_unix);
    // A CSR that asks for nothing gets what the proof grants.
    let bare = ca.certify(&csr(vec![], None), &payments()).expect("issued");
    assert_eq!(
        peer::parse_leaf(&bare.chain[0]).expect("leaf").spiffe_id,
        payments().spiffe_id
    );
    // Another CA's roots do not verify it.
    let (_other_dir, other_store) = new_store();
    let other = anchor::generated(&other_store, "cluster.local", None).expect("anchor");
    assert!(!verifies(&issued.chain, &other.roots));
}

#[test]
fn an_expired_certificate_does_not_verify() {
    let (_dir, store) = new_store();
    let ca = Ca::new(
        anchor::generated(&store, "cluster.local", None).expect("anchor"),
        "cluster.local",
        Duration::from_secs(1),
    );
    let issued = ca.certify(&csr(vec![], None), &payments()).expect("issued");
    let mut roots = RootCertStore::empty();
    roots.add(ca.roots()[0].clone()).expect("root");
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    let later = UnixTime::since_unix_epoch(Duration::from_secs(unix_now() as u64 + 5));
    assert!(
        verifier
            .verify_client_cert(&issued.chain[0], &[], later)
            .is_err()
    );
}

#[test]
fn csrs_that_disagree_with_the_proof_are_refused() {
    let (_dir, store) = new_store();
    let ca = Ca::new(
        anchor::generated(&store, "cluster.local", None).expect("anchor"),
        "cluster.local",
        DAY,
    );
    let other_sa = csr(vec![uri("spiffe://cluster.local/ns/shop/sa/billing")], None);
    assert!(matches!(
        ca.certify(&other_sa, &payments()),
        Err(Refusal::IdentityMismatch(_))
    ));
    let other_service = csr(vec![], Some("billing"));
    assert!(matches!(
        ca.certify(&other_service, &payments()),
        Err(Refusal::IdentityMismatch(_))
    ));
    let dns = csr(
        vec![SanType::DnsName("payments".try_into().expect("ia5"))],
        None,
    );
    assert!(matches!(
        ca.certify(&dns, &payments()),
        Err(Refusal::BadCsr(_))
    ));
    assert!(matches!(
        ca.certify(b"not a csr", &payments()),
        Err(Refusal::BadCsr(_))
    ));
}

#[test]
fn the_generated_root_persists_and_rotates_in_three_steps() {
    let (_dir, store) = new_store();
    let first = anchor::generated(&store, "cluster.local", None).expect("anchor");
    let again = anchor::generated(&store, "cluster.local", None).expect("anchor");
    assert_eq!(first.roots, again.roots, "the root survives a restart");
    let old_root = first.roots.clone();

    let prepared =
        anchor::generated(&store, "cluster.local", Some(RotationStage::Prepare)).expect("prepare");
    assert_eq!(prepared.roots.len(), 2, "old and new roots in the bundle");
    let ca = Ca::new(prepared, "cluster.local", DAY);
    let before = ca.certify(&csr(vec![], None), &payments()).expect("issued");
    assert!(
        verifies(&before.chain, &old_root),
        "the old root still signs"
    );
    let bundle = ca.roots().to_vec();
    let new_root: Vec<_> = bundle
        .iter()
        .filter(|r| !old_root.contains(r))
        .cloned()
        .collect();

    let activated = anchor::generated(&store, "cluster.local", Some(RotationStage::Activate))
        .expect("activate");
    assert_eq!(activated.roots.len(), 2);
    let ca = Ca::new(activated, "cluster.local", DAY);
    let after = ca.certify(&csr(vec![], None), &payments()).expect("issued");
    assert!(verifies(&after.chain, &new_root), "the new root signs");
    assert!(!verifies(&after.chain, &old_root));
    // Both generations verify against the bundle served during the rotation.
    assert!(verifies(&before.chain, ca.roots()) && verifies(&after.chain, ca.roots()));

    let retired =
        anchor::generated(&store, "cluster.local", Some(RotationStage::Retire)).expect("retire");
    assert_eq!(retired.roots, new_root);
}

#[test]
fn an_operators_intermediate_signs_and_its_chain_is_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root_key = KeyPair::generate().expect("key");
    let mut root = CertificateParams::default();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    root.distinguished_name.push(DnType::CommonName, "ops root");
    let root_cert = root.self_signed(&root_key).expect("root");
    let int_key = KeyPair::generate().expect("key");
    let mut int = CertificateParams::default();
    int.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    int.distinguished_name
        .push(DnType::CommonName, "ops intermediate");
    let int_cert = int
        .signed_by(&int_key, &Issuer::from_params(&root, &root_key))
        .expect("intermediate");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let files = anchor::CaFiles {
        cert: write("ca.pem", int_cert.pem()),
        key: write("ca.key", int_key.serialize_pem()),
        roots: Some(write("roots.pem", root_cert.pem())),
    };
    let ca = Ca::new(
        anchor::from_files(&files).expect("anchor"),
        "cluster.local",
        DAY,
    );
    let issued = ca.certify(&csr(vec![], None), &payments()).expect("issued");
    assert_eq!(issued.chain.len(), 2, "leaf and intermediate");
    assert!(verifies(&issued.chain, &[root_cert.der().clone()]));
    // Without the roots file an intermediate is refused: there is no bundle.
    let no_roots = anchor::CaFiles {
        roots: None,
        ..files
    };
    assert!(anchor::from_files(&no_roots).is_err());
}

#[test]
fn join_tokens_are_stored_hashed_expire_and_revoke() {
    let (_dir, store) = new_store();
    let tokens = JoinTokens::new(store.clone(), "cluster.local");
    let (secret, record) = tokens
        .create("payments", "shop", "payments", DAY)
        .expect("created");
    assert_eq!(tokens.verify(&secret).expect("valid"), payments());
    // Only the hash is stored.
    let (_, secret_part) = secret.split_once('.').expect("id.secret");
    for (_, bytes) in store
        .identity_list(IdentityTable::JoinTokens)
        .expect("list")
    {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(secret_part), "the secret is stored: {text}");
    }
    assert_eq!(tokens.list().expect("list"), vec![record.clone()]);
    let wrong = format!("{}.{}", record.id, "0".repeat(64));
    assert_eq!(
        tokens.verify(&wrong).expect_err("wrong").reason(),
        "invalid_proof"
    );
    assert_eq!(
        tokens.verify("garbage").expect_err("garbage").reason(),
        "invalid_proof"
    );

    let (expired, _) = tokens
        .create("payments", "shop", "payments", Duration::ZERO)
        .expect("created");
    assert_eq!(
        tokens.verify(&expired).expect_err("expired").reason(),
        "expired_proof"
    );

    assert!(tokens.revoke(&record.id).expect("revoke"));
    assert!(!tokens.revoke(&record.id).expect("revoke twice"));
    let refused = tokens.verify(&secret).expect_err("revoked");
    assert_eq!(refused.reason(), "invalid_proof");
    assert!(refused.to_string().contains("revoked"), "{refused}");

    // Names that make no SPIFFE ID are refused at creation.
    assert!(tokens.create("payments", "Shop", "payments", DAY).is_err());
}

fn hello(service: &str, namespace: &str, address: &str) -> levee_proto::v1::Hello {
    levee_proto::v1::Hello {
        service: service.into(),
        namespace: namespace.into(),
        address: address.into(),
        ..Default::default()
    }
}

#[test]
fn a_hello_may_claim_only_its_certificates_identity_and_its_own_address() {
    let identity = peer::PeerIdentity {
        spiffe_id: payments().spiffe_id,
        service: "payments".into(),
        not_after_unix: 0,
    };
    let from = Some("10.0.0.7:40000".parse().expect("addr"));
    assert!(peer::check_hello(&hello("payments", "shop", ""), &identity, from).is_ok());
    assert!(peer::check_hello(&hello("payments", "shop", "10.0.0.7"), &identity, from).is_ok());
    assert!(peer::check_hello(&hello("", "shop", ""), &identity, from).is_ok());
    let reason = |h| {
        peer::check_hello(&h, &identity, from)
            .expect_err("refused")
            .reason
    };
    assert_eq!(reason(hello("billing", "shop", "")), "identity_mismatch");
    assert_eq!(
        reason(hello("payments", "default", "")),
        "identity_mismatch"
    );
    assert_eq!(
        reason(hello("payments", "shop", "10.0.0.8")),
        "address_mismatch"
    );
    assert_eq!(
        reason(hello("payments", "shop", "nonsense")),
        "address_mismatch"
    );
    assert_eq!(
        peer::from_certs(None).expect_err("no cert").reason,
        "no_certificate"
    );
}
