//! Credentials from files (`--identity-cert-file`, `--identity-key-file`,
//! `--trust-bundle-file`, PEM): what SPIRE's helper or cert-manager's CSI
//! driver write. Looked at every second and on SIGHUP; a change is read
//! whole and used once all three files parse and agree, so a rotation
//! that writes them one after the other is picked up when complete. A bad
//! read keeps the credentials in use (and says why in the log).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Credentials;
use crate::body::BoxError;

/// How often the files are looked at.
const POLL: Duration = Duration::from_secs(1);

/// The three files.
#[derive(Clone, Debug)]
pub struct CredentialFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bundle: PathBuf,
}

type Contents = (Vec<u8>, Vec<u8>, Vec<u8>);

impl CredentialFiles {
    async fn read(&self) -> Result<Contents, String> {
        let read = |path: PathBuf| async move {
            tokio::fs::read(&path)
                .await
                .map_err(|e| format!("reading {}: {e}", path.display()))
        };
        Ok((
            read(self.cert.clone()).await?,
            read(self.key.clone()).await?,
            read(self.bundle.clone()).await?,
        ))
    }

    fn parse(&self, (cert, key, bundle): &Contents) -> Result<Credentials, String> {
        Credentials::from_pem(cert, key, bundle).map_err(|e| {
            format!(
                "{e} (files {}, {}, {})",
                self.cert.display(),
                self.key.display(),
                self.bundle.display()
            )
        })
    }

    /// Reads the files (an error refuses to start) and keeps the channel
    /// current until `shutdown`.
    pub async fn load_and_watch(
        self,
        shutdown: CancellationToken,
    ) -> Result<watch::Receiver<Option<Arc<Credentials>>>, BoxError> {
        let contents = self.read().await?;
        let credentials = self.parse(&contents)?;
        let (tx, rx) = watch::channel(Some(Arc::new(credentials)));
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            let mut last = contents;
            // Unusable contents already reported (not logged every second).
            let mut refused: Option<Contents> = None;
            let mut tick = tokio::time::interval(POLL);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                    _ = hangup.recv() => {}
                }
                let Ok(now) = self.read().await else { continue };
                if now == last || refused.as_ref() == Some(&now) {
                    continue;
                }
                match self.parse(&now) {
                    Ok(credentials) => {
                        tracing::info!(identity = %credentials.identity, "identity files changed: new credentials");
                        last = now;
                        tx.send_replace(Some(Arc::new(credentials)));
                    }
                    // Perhaps half-written: looked at again next tick.
                    Err(error) => {
                        tracing::warn!(%error, "identity files unusable: keeping the credentials in use");
                        refused = Some(now);
                    }
                }
            }
        });
        Ok(rx)
    }
}
