//! Kubernetes mode (`levee-control-plane --kubernetes`): policies come from
//! `ResiliencePolicy` custom resources and endpoints from EndpointSlices, read
//! through the API server instead of the redb store; the Discovery side is
//! the same code and registry as in redb mode, so a proxy cannot tell the
//! two modes apart. Several replicas serve at once (each from its own
//! watches); a Lease elects the one that writes policy status.
//!
//! Layout:
//! - `translate`: Kubernetes objects → Levee documents (pure): which
//!   endpoints are used, named ports, policy validation, cluster IPs.
//! - `reflect`: the watchers and reflector stores, and the sync loop that
//!   hands the registry what changed.
//! - `pods`: which pods are meshed and the identity expected at their
//!   endpoints (pure, plus the reflector's strip).
//! - `lease`: Lease-based leader election (pure state machine + kube calls).
//! - `status`: the `status` subresource written on each policy: each
//!   replica its own proxy count, the leader the conditions and the sum.
//! - `trust_bundle`: the leader's copies of the trust bundle ConfigMap in
//!   every namespace with injection enabled.

pub mod lease;
pub mod pods;
pub mod reflect;
pub mod status;
pub mod translate;
pub mod trust_bundle;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::api::{ApiResource, GroupVersionKind};
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::discovery::registry::Registry;
use crate::discovery::status::Sessions;
use crate::error::BoxError;
use reflect::Reflectors;

/// API group of the custom resources.
pub const GROUP: &str = "levee.dev";
/// Version of the custom resources.
pub const VERSION: &str = "v1alpha1";
/// Plural (URL) name of `ResiliencePolicy`.
pub const PLURAL: &str = "resiliencepolicies";

/// `levee.dev/v1alpha1` `ResiliencePolicy`, for dynamic API calls (no
/// dependency on the CRD's Rust type).
pub fn policy_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(GROUP, VERSION, levee_proto::policy::KIND_POLICY);
    ApiResource::from_gvk_with_plural(&gvk, PLURAL)
}

/// A client from `kubeconfig` if given, else the in-cluster config (or
/// `$KUBECONFIG`, `~/.kube/config`, as kube infers).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, BoxError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        None => Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration (in-cluster or kubeconfig): {e}"))?,
    };
    Ok(Client::try_from(config)?)
}

/// The running Kubernetes side of a control plane.
pub struct Running {
    /// The caches and the latest translation.
    pub reflectors: Reflectors,
    /// Whether this replica leads (writes status).
    pub leader: watch::Receiver<bool>,
    /// The status writer; it ends after `shutdown`, once this replica's
    /// `status.replicas` entries are removed (bounded by
    /// [`status::RETIRE_WITHIN`]).
    pub status: JoinHandle<()>,
}

/// Starts the reflectors, the election (as `identity`) and the status
/// writers (this replica's entries as `identity`, the leader's pass).
/// With a `trust_domain` (identities on), Pods are watched and meshed
/// pods' endpoints carry their expected identity.
pub fn start(
    client: Client,
    identity: String,
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    resync: Duration,
    trust_domain: Option<String>,
    shutdown: watch::Receiver<bool>,
) -> Running {
    let reflectors = reflect::start_with(
        client.clone(),
        registry.clone(),
        resync,
        trust_domain,
        shutdown.clone(),
    );
    let (leader_tx, leader) = watch::channel(false);
    tokio::spawn(lease::run(
        client.clone(),
        identity.clone(),
        leader_tx,
        shutdown.clone(),
    ));
    let status = tokio::spawn(status::run(
        client,
        identity,
        reflectors.clone(),
        registry,
        sessions,
        leader.clone(),
        shutdown,
    ));
    Running {
        reflectors,
        leader,
        status,
    }
}
