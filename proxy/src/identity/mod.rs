//! The proxy's workload identity (docs/identity.md): a key pair made here
//! (it never leaves memory), a certificate from the control plane's CA
//! (`Identity.Certify`), renewed before it expires.
//!
//! Layout:
//! - `request`: the key, the CSR, one Certify call and the checks on its answer.
//! - `renew`: the task that certifies at start, renews at ~70% of the
//!   lifetime (with jitter) and retries with backoff, publishing each
//!   certificate on a [`CertifiedWatch`].
//! - `channel`: TLS settings of connections to the control plane (the
//!   trust bundle, and the workload certificate once there is one).
//!
//! Consumers (Discovery's mTLS, sidecar-to-sidecar mTLS) read
//! [`CertifiedWatch`]: `None` until the first certificate.

mod channel;
mod mesh;
mod renew;
mod request;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::sync::watch;

pub use channel::ControlPlaneTls;
pub use mesh::{mesh_credentials, to_credentials};
pub use renew::{RENEW_BACKOFF, renew_after, start};
pub use request::csr_for;

/// A workload certificate with its key, as the proxy uses it.
pub struct Certified {
    /// DER certificates, leaf first, then intermediates (no root).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8 DER); made by this proxy, never sent.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// DER roots peers' certificates must chain to (the trust bundle).
    pub roots: Vec<CertificateDer<'static>>,
    /// The leaf's URI SAN, `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub spiffe_id: String,
    /// The service the certificate may register endpoints for.
    pub service: String,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Certified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Certified")
            .field("spiffe_id", &self.spiffe_id)
            .field("service", &self.service)
            .field("not_after", &self.not_after)
            .field("chain", &self.cert_chain.len())
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

/// The current certificate (`None` until the first one).
pub type CertifiedWatch = watch::Receiver<Option<Arc<Certified>>>;

/// What the proxy proves itself with; the file is read at every request
/// (kubelet rotates projected tokens; an operator may replace a join token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proof {
    /// `--identity-token-file`: a join token from `leveectl token create`.
    JoinTokenFile(PathBuf),
    /// `--identity-sa-token-file`: a projected service-account token.
    ServiceAccountTokenFile(PathBuf),
}

/// Everything the renewal task needs.
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    /// `--control-plane` (https://).
    pub urls: Vec<String>,
    /// TLS to the control plane (trust bundle).
    pub tls: ControlPlaneTls,
    pub proof: Proof,
    /// The SPIFFE ID the proxy asks for: `--identity-trust-domain`,
    /// `--namespace`, `--service-account` (default `--service`). `None`:
    /// ask for whatever the proof grants.
    pub expected: Option<levee_proto::policy::SpiffeId>,
    /// `--service` (the CSR's subject CN), if any.
    pub service: Option<String>,
    /// The trust domain the answer must be in.
    pub trust_domain: String,
}

/// How the proxy talks to the control plane, from its flags.
#[derive(Clone, Debug)]
pub enum ControlPlaneSecurity {
    /// `http://` with `--insecure-plaintext`.
    Plaintext,
    /// `https://`: the control plane is verified against the bundle; with a
    /// proof the proxy gets a workload certificate and presents it.
    Tls {
        tls: ControlPlaneTls,
        identity: Option<Box<IdentitySettings>>,
    },
}

impl ControlPlaneSecurity {
    /// Checks the flags fit together (`Err` says how to fix them).
    pub fn from_config(config: &crate::ProxyConfig, url: &str) -> Result<Self, String> {
        // Several replicas (a comma-separated list) must share one scheme.
        let urls: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let scheme_of = |u: &str| u.split_once("://").map(|(s, _)| s.to_owned());
        let scheme = urls.first().and_then(|u| scheme_of(u));
        if urls.iter().any(|u| scheme_of(u) != scheme) {
            return Err(format!(
                "--control-plane {url}: every replica needs the same scheme (all https:// or all http://)"
            ));
        }
        match scheme.as_deref() {
            Some("http") if config.insecure_plaintext => {
                if config.identity_token_file.is_some() || config.identity_sa_token_file.is_some() {
                    return Err("--identity-token-file/--identity-sa-token-file need an https:// --control-plane".into());
                }
                tracing::warn!(%url, "--insecure-plaintext: the control plane connection is neither encrypted nor authenticated");
                Ok(ControlPlaneSecurity::Plaintext)
            }
            Some("http") => Err(format!(
                "--control-plane {url}: plaintext; use https:// with --trust-bundle-file, or pass --insecure-plaintext (local demos only)"
            )),
            Some("https") => {
                let path = config.trust_bundle_file.as_ref().ok_or_else(|| {
                    format!("--control-plane {url}: https needs --trust-bundle-file (the control plane's <data-dir>/trust-bundle.pem)")
                })?;
                let tls = ControlPlaneTls::load(path)?;
                let proof = match (&config.identity_token_file, &config.identity_sa_token_file) {
                    (Some(p), _) => Some(Proof::JoinTokenFile(p.clone())),
                    (None, Some(p)) => Some(Proof::ServiceAccountTokenFile(p.clone())),
                    (None, None) => None,
                };
                levee_proto::policy::check_trust_domain(&config.identity_trust_domain)
                    .map_err(|e| format!("--identity-trust-domain: {e}"))?;
                let identity = proof
                    .map(|proof| -> Result<Box<IdentitySettings>, String> {
                        let account = config
                            .service_account
                            .as_deref()
                            .or(config.service.as_deref());
                        let expected = account
                            .map(|sa| {
                                levee_proto::policy::SpiffeId::workload(
                                    &config.identity_trust_domain,
                                    &config.namespace,
                                    sa,
                                )
                                .map_err(|e| format!("--namespace/--service-account: {e}"))
                            })
                            .transpose()?;
                        Ok(Box::new(IdentitySettings {
                            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
                            tls: tls.clone(),
                            proof,
                            expected,
                            service: config.service.clone(),
                            trust_domain: config.identity_trust_domain.clone(),
                        }))
                    })
                    .transpose()?;
                Ok(ControlPlaneSecurity::Tls { tls, identity })
            }
            _ => Err(format!(
                "--control-plane {url:?}: expected an https:// (or, with --insecure-plaintext, http://) URL"
            )),
        }
    }
}

#[cfg(test)]
mod tests;
