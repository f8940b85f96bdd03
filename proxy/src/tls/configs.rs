//! The rustls configurations one set of [`Credentials`] makes, rebuilt
//! once per change of credentials and swapped in whole ([`TlsConfigs`]).
//!
//! Inbound: one server config (and a copy offering only the opaque ALPN,
//! for redirected opaque TCP); client certificates are verified against
//! the trust roots when offered, and not required at the TLS level
//! (permissive ports admit plaintext anyway; strict ports refuse a caller
//! without one with a readable 403 rather than a handshake alert).
//! Outbound: one client config per (expected identity, ALPN), made on
//! first use and kept until the credentials change, so TLS session
//! resumption works per peer; the table is bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use levee_proto::policy::SpiffeId;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::sync::watch;

use super::Credentials;
use super::origination::Alpn;
use super::verify::SpiffeServerVerifier;
use crate::metrics::TlsMetrics;

/// Client configs kept per credentials before the table starts over.
const MAX_CLIENT_CONFIGS: usize = 1024;

/// The current configurations (none until credentials arrive).
#[derive(Default)]
pub struct TlsConfigs {
    current: ArcSwapOption<Built>,
}

/// What one set of credentials makes.
pub(super) struct Built {
    pub(super) credentials: Arc<Credentials>,
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    key: Arc<CertifiedKey>,
    pub(super) server: Arc<ServerConfig>,
    /// The same, accepting only [`Alpn::Opaque`] (redirected opaque TCP).
    pub(super) opaque_server: Arc<ServerConfig>,
    /// Copy-on-write: read per new connection without a lock.
    clients: ArcSwap<HashMap<(SpiffeId, Alpn), Arc<ClientConfig>>>,
}

/// The provider of the workspace (ring), TLS 1.3 only.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate and key of `credentials`, checked to belong together.
pub(super) fn certified_key(credentials: &Credentials) -> Result<CertifiedKey, rustls::Error> {
    let chain = credentials
        .cert_chain
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(credentials.private_key.clone()));
    CertifiedKey::from_der(chain, key, &provider())
}

impl Built {
    fn new(credentials: Arc<Credentials>) -> Result<Built, rustls::Error> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        for der in &credentials.trust_roots {
            roots.add(CertificateDer::from(der.clone()))?;
        }
        let roots = Arc::new(roots);
        let key = Arc::new(certified_key(&credentials)?);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(key.clone())));
        let mut opaque_server = server.clone();
        opaque_server.alpn_protocols = vec![Alpn::Opaque.id().to_vec()];
        server.alpn_protocols = vec![Alpn::H2.id().to_vec(), Alpn::Http1.id().to_vec()];
        Ok(Built {
            credentials,
            provider,
            roots,
            key,
            server: Arc::new(server),
            opaque_server: Arc::new(opaque_server),
            clients: ArcSwap::default(),
        })
    }

    /// The client config for connections to `expected` speaking `alpn`.
    pub(super) fn client(
        &self,
        expected: &SpiffeId,
        alpn: Alpn,
    ) -> Result<Arc<ClientConfig>, rustls::Error> {
        let key = (expected.clone(), alpn);
        if let Some(found) = self.clients.load().get(&key) {
            return Ok(found.clone());
        }
        let verifier = SpiffeServerVerifier::new(
            self.roots.clone(),
            expected.clone(),
            self.provider.signature_verification_algorithms,
        );
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(self.key.clone())));
        if let Some(id) = alpn.offered() {
            config.alpn_protocols = vec![id.to_vec()];
        }
        let config = Arc::new(config);
        self.clients.rcu(|table| {
            let mut table = HashMap::clone(table);
            if table.len() >= MAX_CLIENT_CONFIGS {
                table.clear();
            }
            table.insert(key.clone(), config.clone());
            table
        });
        Ok(config)
    }
}

impl TlsConfigs {
    /// Builds configurations from `credentials` and swaps them in.
    pub fn install(&self, credentials: Arc<Credentials>) -> Result<(), rustls::Error> {
        let built = Built::new(credentials)?;
        self.current.store(Some(Arc::new(built)));
        Ok(())
    }

    /// Drops the configurations: no TLS until credentials come back.
    pub fn clear(&self) {
        self.current.store(None);
    }

    pub(super) fn current(&self) -> Option<Arc<Built>> {
        self.current.load_full()
    }

    /// The credentials in use, if any (never shown with their key).
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.current.load().as_ref().map(|b| b.credentials.clone())
    }

    /// Whether the current certificate has expired at `now` (renewal
    /// failed until then); `false` without credentials.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|b| b.credentials.expired_for(now).is_some())
    }

    /// When the current certificate expires, if there is one.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.current
            .load()
            .as_ref()
            .map(|b| b.credentials.not_after)
    }

    /// The identity this proxy presents, if it has credentials.
    pub fn identity(&self) -> Option<SpiffeId> {
        self.current
            .load()
            .as_ref()
            .map(|b| b.credentials.identity.clone())
    }
}

/// Keeps `configs` in step with `credentials` until the sender goes away,
/// and `levee_identity_cert_expiry_seconds` with the current certificate.
pub async fn watch_credentials(
    configs: Arc<TlsConfigs>,
    mut credentials: watch::Receiver<Option<Arc<Credentials>>>,
    metrics: TlsMetrics,
) {
    loop {
        let current = credentials.borrow_and_update().clone();
        match current {
            Some(creds) => match configs.install(creds.clone()) {
                Ok(()) => {
                    let not_after = i64::try_from(creds.not_after_unix()).unwrap_or(i64::MAX);
                    metrics.certificate_in_use(not_after);
                    tracing::info!(identity = %creds.identity, "workload credentials in use");
                }
                Err(error) => {
                    tracing::warn!(%error, "workload credentials unusable: keeping the previous ones")
                }
            },
            None => configs.clear(),
        }
        if credentials.changed().await.is_err() {
            return;
        }
    }
}
