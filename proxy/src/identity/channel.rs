//! TLS to the control plane: its serving certificate must chain to the
//! trust bundle (`--trust-bundle-file`, plus the roots the CA last sent);
//! once the proxy has a workload certificate it presents it (mTLS, which
//! Discovery requires).
//!
//! The bundle file is read again for every connection (a Certify call, a
//! Discovery reconnect: rare, and the file is small), so an operator (or
//! the kubelet, for a ConfigMap) replacing it after a root rotation needs
//! no proxy restart. A file that cannot be read then, or holds no
//! certificate, leaves the last good bundle in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::Certified;

/// Connecting to the control plane fails after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The trust bundle of connections to the control plane.
#[derive(Clone, Debug)]
pub struct ControlPlaneTls {
    /// `--trust-bundle-file`.
    path: PathBuf,
    /// Its last good contents (shared by the clones: Certify and Discovery).
    bundle: Arc<Mutex<Vec<CertificateDer<'static>>>>,
}

impl ControlPlaneTls {
    /// Reads `--trust-bundle-file` (PEM, one or more certificates).
    pub fn load(path: &Path) -> Result<Self, String> {
        Ok(ControlPlaneTls {
            path: path.to_owned(),
            bundle: Arc::new(Mutex::new(read_bundle(path)?)),
        })
    }

    /// The bundle as the file has it now, else as it last had it.
    pub fn bundle(&self) -> Vec<CertificateDer<'static>> {
        let mut last = self.bundle.lock().unwrap_or_else(PoisonError::into_inner);
        match read_bundle(&self.path) {
            Ok(now) => {
                if *last != now {
                    tracing::info!(path = %self.path.display(), roots = now.len(), "trust bundle changed");
                    *last = now;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "keeping the last good trust bundle");
            }
        }
        last.clone()
    }

    /// An endpoint for `url` that verifies the control plane against the
    /// bundle and `extra_roots`, presenting `certified` when given.
    pub fn endpoint(
        &self,
        url: &str,
        certified: Option<&Certified>,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("--control-plane {url:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT);
        self.apply(endpoint, certified, extra_roots)
    }

    /// `endpoint` with these TLS settings.
    pub fn apply(
        &self,
        endpoint: Endpoint,
        certified: Option<&Certified>,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Endpoint, String> {
        let roots = self
            .bundle()
            .iter()
            .chain(extra_roots)
            .map(|der| Certificate::from_pem(to_pem("CERTIFICATE", der)))
            .collect::<Vec<_>>();
        let mut tls = ClientTlsConfig::new().ca_certificates(roots);
        if let Some(certified) = certified {
            let chain: String = certified
                .cert_chain
                .iter()
                .map(|der| to_pem("CERTIFICATE", der))
                .collect();
            let key = to_pem("PRIVATE KEY", certified.key.secret_pkcs8_der());
            tls = tls.identity(Identity::from_pem(chain, key));
        }
        endpoint
            .tls_config(tls)
            .map_err(|e| format!("--control-plane: TLS settings: {e}"))
    }
}

fn to_pem(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

/// The certificates of a PEM bundle file; `Err` when none can be had.
fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("--trust-bundle-file {}: {e}", path.display()))?;
    let bundle: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--trust-bundle-file {}: {e}", path.display()))?;
    if bundle.is_empty() {
        return Err(format!(
            "--trust-bundle-file {}: no certificate in it",
            path.display()
        ));
    }
    Ok(bundle)
}
