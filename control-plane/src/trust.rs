//! The trust side of a starting control plane: the CA (from
//! `--ca-cert-file`, generated into the store, or in memory), the trust
//! bundle written to `--data-dir`, TokenReview, the gRPC serving
//! certificate, and the Identity and JoinTokens services built on them.

use std::sync::Arc;
use std::time::Duration;

use crate::config::ControlPlaneConfig;
use crate::error::BoxError;
use crate::metrics::Metrics;
use crate::store::PolicyStore;
use crate::{identity, kubernetes};

/// File name of the trust bundle (PEM) the control plane writes in `--data-dir`.
pub const TRUST_BUNDLE_FILE: &str = "trust-bundle.pem";

/// Lifetime of the gRPC serving certificate, issued anew at every start.
const SERVING_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The identity side of a started control plane.
pub(crate) struct IdentityParts {
    pub(crate) certify: identity::service::IdentityService,
    /// `None` in Kubernetes mode (no store: service-account tokens prove
    /// identities there).
    pub(crate) join_tokens: Option<identity::service::JoinTokensService>,
    /// `None` with `--insecure-plaintext`.
    pub(crate) tls: Option<tonic::transport::ServerTlsConfig>,
    /// The trust bundle (PEM): every root the CA trusts.
    pub(crate) roots_pem: String,
}

/// Loads (or creates) the trust anchor, writes the trust bundle to
/// `--data-dir`, connects TokenReview if asked, and makes the gRPC serving
/// certificate (server-auth for everyone; client certificates optional at
/// the handshake, required by Discovery).
pub(crate) async fn identity_services(
    config: &ControlPlaneConfig,
    store: Option<&Arc<PolicyStore>>,
    kube_client: Option<kube::Client>,
    metrics: &Metrics,
) -> Result<IdentityParts, BoxError> {
    use identity::anchor;
    levee_proto::policy::check_trust_domain(&config.trust_domain)
        .map_err(|e| format!("--trust-domain: {e}"))?;
    let lifetime = config.workload_cert_ttl.get();
    if lifetime < Duration::from_secs(1) {
        return Err("--workload-cert-ttl must be at least 1s".into());
    }
    let anchor = match (&config.ca_cert_file, &config.ca_key_file) {
        (Some(cert), Some(key)) => anchor::from_files(&anchor::CaFiles {
            cert: cert.clone(),
            key: key.clone(),
            roots: config.ca_roots_file.clone(),
        })?,
        _ => match store {
            Some(store) => anchor::generated(store, &config.trust_domain, config.ca_rotate)?,
            // Kubernetes mode: several stateless replicas must sign with
            // one root, which only the operator can hand to all of them.
            None if config.insecure_plaintext => {
                tracing::warn!(
                    "--kubernetes without --ca-cert-file: this replica's CA lives in memory only"
                );
                anchor::ephemeral(&config.trust_domain)?
            }
            None => {
                return Err(
                    "--kubernetes: every replica must sign with the same CA: give \
                    --ca-cert-file and --ca-key-file (a Secret), or --insecure-plaintext"
                        .into(),
                );
            }
        },
    };
    let ca = Arc::new(identity::ca::Ca::new(
        anchor,
        &config.trust_domain,
        lifetime,
    ));
    // Kubernetes mode has no --data-dir: the bundle is a ConfigMap there.
    if store.is_some() {
        let bundle = config.data_dir.join(TRUST_BUNDLE_FILE);
        levee_proto::fs::write_atomically(&bundle, ca.roots_pem().as_bytes())
            .map_err(|e| format!("writing the trust bundle {}: {e}", bundle.display()))?;
        tracing::info!(path = %bundle.display(), roots = ca.roots().len(), trust_domain = %config.trust_domain, "trust bundle written");
    }
    let tokens =
        store.map(|store| identity::tokens::JoinTokens::new(store.clone(), &config.trust_domain));
    let reviewer: Option<Arc<dyn identity::tokenreview::ServiceAccountReviewer>> =
        if config.token_review {
            // Kubernetes mode's client (--kubeconfig or in-cluster);
            // otherwise the in-cluster config or the default kubeconfig.
            let client = match kube_client {
                Some(client) => client,
                None => kubernetes::client(None)
                    .await
                    .map_err(|e| format!("--token-review: no Kubernetes API client: {e}"))?,
            };
            Some(Arc::new(identity::tokenreview::TokenReviewer::new(
                client,
                &config.token_review_audience,
                &config.trust_domain,
            )))
        } else {
            None
        };
    let tls = if config.insecure_plaintext {
        tracing::warn!(
            "--insecure-plaintext: gRPC is served without TLS and Discovery requires no workload certificate"
        );
        None
    } else {
        let (chain, key) = ca.serving_identity(&config.server_names, SERVING_CERT_LIFETIME)?;
        let chain_pem: String = chain
            .iter()
            .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
            .collect();
        let key_pem = pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            key.secret_pkcs8_der().to_vec(),
        ));
        Some(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(chain_pem, key_pem))
                .client_ca_root(tonic::transport::Certificate::from_pem(ca.roots_pem()))
                .client_auth_optional(true),
        )
    };
    Ok(IdentityParts {
        roots_pem: ca.roots_pem(),
        certify: identity::service::IdentityService::new(
            ca,
            tokens.clone(),
            reviewer,
            metrics.clone(),
        ),
        join_tokens: tokens.map(identity::service::JoinTokensService::new),
        tls,
    })
}
