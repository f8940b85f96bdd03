//! Where policies and endpoints come from, opened at start: the redb store
//! under `--data-dir` (its documents loaded into the registry; PolicyAdmin
//! writes it), or with `--kubernetes` the API server's watches, the Lease
//! election and the status writer.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::ControlPlaneConfig;
use crate::discovery::registry::Registry;
use crate::discovery::status::Sessions;
use crate::error::BoxError;
use crate::kubernetes;
use crate::metrics::Metrics;
use crate::store::PolicyStore;

/// Where policies and endpoints come from.
pub(crate) enum Mode {
    /// The redb store under `--data-dir` (and PolicyAdmin writes it).
    Store(Arc<PolicyStore>),
    /// The Kubernetes API; ready once every watch has listed.
    Kubernetes(watch::Receiver<bool>),
}

/// An opened source, and what Kubernetes mode started beside it.
pub(crate) struct Source {
    pub(crate) mode: Mode,
    /// With --kubernetes, one API client (--kubeconfig or in-cluster) serves
    /// the watches, the election and --token-review alike.
    pub(crate) kube_client: Option<kube::Client>,
    /// This replica's name (the Lease holder identity), for `leveectl status`.
    pub(crate) replica_name: String,
    /// With --kubernetes: the client and whether this replica leads, for the
    /// trust bundle copies (started once the CA is loaded).
    pub(crate) kube_leader: Option<(kube::Client, watch::Receiver<bool>)>,
    /// With --kubernetes: the status writer, awaited after the servers stop
    /// (it removes this replica's status entries first).
    pub(crate) status_writer: Option<JoinHandle<()>>,
}

/// Opens the store, or with `--kubernetes` starts the watches, the election
/// and the status writer.
pub(crate) async fn open(
    config: &ControlPlaneConfig,
    registry: &Arc<Registry>,
    sessions: &Arc<Sessions>,
    metrics: &Metrics,
    shutdown: &watch::Receiver<bool>,
) -> Result<Source, BoxError> {
    if config.kubernetes {
        open_kubernetes(config, registry, sessions, shutdown).await
    } else {
        open_store(config, registry, metrics)
    }
}

async fn open_kubernetes(
    config: &ControlPlaneConfig,
    registry: &Arc<Registry>,
    sessions: &Arc<Sessions>,
    shutdown: &watch::Receiver<bool>,
) -> Result<Source, BoxError> {
    let client = kubernetes::client(config.kubeconfig.as_deref()).await?;
    let identity = config
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("levee-control-plane-{}", std::process::id()));
    let running = kubernetes::start(
        client.clone(),
        identity.clone(),
        registry.clone(),
        sessions.clone(),
        config.kubernetes_resync.get(),
        // Meshed pods' endpoints expect their SPIFFE ID (never over
        // plaintext: no proxy has a certificate then).
        (config.kubernetes_pod_identities && !config.insecure_plaintext)
            .then(|| config.trust_domain.clone()),
        shutdown.clone(),
    );
    let mut synced = running.reflectors.synced.clone();
    let (ready_tx, ready_rx) = watch::channel(false);
    tokio::spawn(async move {
        if synced.wait_for(|(n, _)| *n > 0).await.is_ok() {
            let _ = ready_tx.send(true);
        }
    });
    Ok(Source {
        mode: Mode::Kubernetes(ready_rx),
        kube_client: Some(client.clone()),
        replica_name: identity,
        kube_leader: Some((client, running.leader)),
        status_writer: Some(running.status),
    })
}

fn open_store(
    config: &ControlPlaneConfig,
    registry: &Arc<Registry>,
    metrics: &Metrics,
) -> Result<Source, BoxError> {
    let store = Arc::new(
        PolicyStore::open(&config.data_dir)
            .map_err(|e| format!("--data-dir {}: {e}", config.data_dir.display()))?,
    );
    let revision = admin::load_registry(&store, registry)?;
    metrics.set_revision(revision);
    let quarantined = store.quarantined()?.len();
    metrics
        .store_quarantined
        .set(i64::try_from(quarantined).unwrap_or(i64::MAX));
    Ok(Source {
        mode: Mode::Store(store),
        kube_client: None,
        replica_name: String::new(),
        kube_leader: None,
        status_writer: None,
    })
}
