//! The webhook server's certificate: where it comes from and how it is
//! replaced without a restart.
//!
//! - `issuer`: the control plane's own CA and serving certificate (rcgen),
//!   reissued before they expire.
//! - `ca_bundle`: puts that CA into the `caBundle` of the webhook
//!   configurations through the Kubernetes API.
//!
//! Either source ends in [`ServingCert`], the rustls resolver the server
//! reads on every handshake: a swap is seen by the next connection.
//! With `--webhook-cert`/`--webhook-key` (e.g. cert-manager's Secret mounted
//! as files) the files are read at start and re-read when they change
//! ([`watch_files`]); the `caBundle` is then someone else's job (cert-manager's
//! CA injector).

pub mod ca_bundle;
pub mod issuer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::error::BoxError;

/// How often `--webhook-cert`/`--webhook-key` are checked for a change.
pub const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The certificate the server presents; replaced in place.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServingCert {
    /// Starts with `key`.
    pub fn new(key: CertifiedKey) -> Arc<ServingCert> {
        Arc::new(ServingCert {
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// The next handshake presents `key`.
    pub fn replace(&self, key: CertifiedKey) {
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(key),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(key),
        }
    }

    /// The certificate the next handshake presents.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A certificate chain and its key, both PEM, as rustls serves them.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, BoxError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("certificate: no CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    let signing = any_supported_type(&key).map_err(|e| format!("key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("the key does not belong to the certificate: {e}"))?;
    Ok(certified)
}

/// `--webhook-cert` and `--webhook-key`, read now.
pub fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, BoxError> {
    let cert_pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    certified_key(&cert_pem, &key_pem)
        .map_err(|e| format!("{} / {}: {e}", cert.display(), key.display()).into())
}

/// Re-reads the files when their modification time changes (a mounted
/// Secret is updated by swapping a symlink: its time changes too); a pair
/// that does not load keeps the previous certificate, with a warning.
pub async fn watch_files(
    cert: PathBuf,
    key: PathBuf,
    serving: Arc<ServingCert>,
    mut shutdown: watch::Receiver<bool>,
) {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let stamp = |cert: &Path, key: &Path| (modified(cert), modified(key));
    let mut seen: (Option<SystemTime>, Option<SystemTime>) = stamp(&cert, &key);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FILE_CHECK_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = stamp(&cert, &key);
        if now == seen {
            continue;
        }
        match load_files(&cert, &key) {
            Ok(certified) => {
                serving.replace(certified);
                seen = now;
                tracing::info!(cert = %cert.display(), "webhook certificate reloaded");
            }
            Err(error) => {
                tracing::warn!(%error, "webhook certificate not reloaded; serving the previous one");
            }
        }
    }
}
