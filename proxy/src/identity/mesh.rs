//! The workload certificate from `Identity.Certify` as the data plane's
//! mTLS credentials ([`crate::tls::Credentials`]): every renewal reaches
//! the sidecar-to-sidecar TLS settings, as a change of the identity files
//! does.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Certified, CertifiedWatch};
use crate::tls::Credentials;

/// Follows `certified` until `shutdown`; the receiver holds `None` until
/// the first certificate arrives.
pub fn mesh_credentials(
    mut certified: CertifiedWatch,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> watch::Receiver<Option<Arc<Credentials>>> {
    let first = convert(certified.borrow_and_update().as_deref());
    let (tx, rx) = watch::channel(first);
    tasks.spawn(async move {
        loop {
            tokio::select! {
                changed = certified.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
            }
            let next = convert(certified.borrow_and_update().as_deref());
            if next.is_some() && tx.send(next).is_err() {
                return;
            }
        }
    });
    rx
}

fn convert(certified: Option<&Certified>) -> Option<Arc<Credentials>> {
    let certified = certified?;
    match to_credentials(certified) {
        Ok(credentials) => Some(Arc::new(credentials)),
        Err(error) => {
            tracing::warn!(%error, "the workload certificate cannot be used for mTLS");
            None
        }
    }
}

/// The same certificate, key and roots in the data plane's shape, checked
/// as identity files are (one SPIFFE ID, the key is the leaf's).
pub fn to_credentials(c: &Certified) -> Result<Credentials, String> {
    Credentials::from_der(
        c.cert_chain.iter().map(|d| d.to_vec()).collect(),
        c.key.secret_pkcs8_der().to_vec(),
        c.roots.iter().map(|d| d.to_vec()).collect(),
    )
    .map_err(|e| e.to_string())
}
