//! The workload certificate from `Identity.Certify` as the data plane's
//! mTLS credentials ([`crate::tls::Credentials`]): every renewal reaches
//! the sidecar-to-sidecar TLS settings, as a change of the identity files
//! does.

use std::sync::Arc;

use levee_proto::policy::SpiffeId;
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

/// The same certificate, key and roots in the data plane's shape.
pub fn to_credentials(c: &Certified) -> Result<Credentials, String> {
    Ok(Credentials {
        cert_chain: c.cert_chain.iter().map(|d| d.to_vec()).collect(),
        private_key: c.key.secret_pkcs8_der().to_vec(),
        trust_roots: c.roots.iter().map(|d| d.to_vec()).collect(),
        identity: SpiffeId::parse(&c.spiffe_id)?,
        not_after: c.not_after,
    })
}
