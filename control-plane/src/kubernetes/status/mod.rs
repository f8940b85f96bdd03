//! `status` written back on each ResiliencePolicy through the status
//! subresource (`…/resiliencepolicies/<name>/status`), by two kinds of
//! writer so that no two replicas write the same field:
//!
//! ```yaml
//! status:
//!   observedGeneration: 3      # ┐
//!   conditions:                # │ the leader (see `lease`), a JSON merge
//!   - type: Accepted           # │ patch of these three fields only
//!     status: "True"           # │ (`conditions`)
//!     reason: Accepted         # │
//!     message: policy is valid # │
//!     observedGeneration: 3    # │
//!     lastTransitionTime: "2026-11-29T21:40:09Z"
//!   - type: ResolvedRefs       # │ the target Service and port exist
//!     status: "False"          # │ (`refs`)
//!     reason: PortNotFound     # │ or ResolvedRefs, BackendNotFound
//!     message: "Service shop/payments has no TCP port 8080 (…)"
//!     observedGeneration: 3    # │
//!     lastTransitionTime: "2026-11-29T21:40:09Z"
//!   proxies: {acked: 3, total: 4, generation: 3}   # ┘ sum of the fresh entries
//!   replicas:                  # each replica its own entry, server-side
//!   - {name: cp-a, acked: 2, total: 2, generation: 3, heartbeatTime: "…"}
//!   - {name: cp-b, acked: 1, total: 2, generation: 3, heartbeatTime: "…"}
//! ```
//!
//! Every [`STATUS_INTERVAL`], once the caches have synced, every replica
//! counts the proxies connected to it per policy ([`proxy_counts`]) and
//! writes its own entry where it changed (`replicas`), and removes its
//! entries when it stops; the leader then
//! writes the conditions and the sum where they changed, and prunes the
//! entries of dead replicas.

pub mod conditions;
pub mod refs;
pub mod replicas;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use levee_proto::policy::DEFAULT_NAMESPACE;
use tokio::sync::watch;

use super::policy_resource;
use super::reflect::Reflectors;
use super::translate::ObjectName;
use crate::discovery::registry::Registry;
use crate::discovery::status::Sessions;
pub use conditions::{desired, patch};
use replicas::OwnEntries;

/// How often each replica (and the leader) compares and writes status.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// A stopping replica gives up removing its `replicas` entries after this
/// (they then age out).
pub const RETIRE_WITHIN: Duration = Duration::from_secs(5);

/// Proxies subscribed to a policy's services, and those up to date.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyCount {
    /// ACKed the version that carries the policy's current generation.
    pub acked: u64,
    /// Subscribed to a service port the policy applies to.
    pub total: u64,
}

/// Counts, per accepted policy, the proxies of `sessions` that use it.
pub fn proxy_counts(registry: &Registry, sessions: &Sessions) -> BTreeMap<ObjectName, ProxyCount> {
    let mut counts: BTreeMap<ObjectName, ProxyCount> = BTreeMap::new();
    for session in sessions.snapshot() {
        // Per policy: whether every subscription of this proxy it covers is ACKed.
        let mut uses: BTreeMap<ObjectName, bool> = BTreeMap::new();
        for (key, sub) in &session.subscriptions {
            let snapshot = registry.current(key);
            let Some(policy) = &snapshot.policy else {
                continue;
            };
            let name = (
                policy.metadata.namespace_or(DEFAULT_NAMESPACE).to_owned(),
                policy.metadata.name.clone(),
            );
            let acked = sub.acked_version == snapshot.version;
            *uses.entry(name).or_insert(true) &= acked;
        }
        for (name, acked) in uses {
            let count = counts.entry(name).or_default();
            count.total += 1;
            count.acked += u64::from(acked);
        }
    }
    counts
}

/// The leader's pass: every cached policy's conditions and summed proxies
/// compared and merge-patched if needed, then its stale `replicas` entries
/// removed. `me` is this replica and `counts` its own live counts.
pub async fn write_all(
    client: &Client,
    reflectors: &Reflectors,
    me: &str,
    counts: &BTreeMap<ObjectName, ProxyCount>,
) {
    let translated = reflectors.synced.borrow().1.clone();
    let resource = policy_resource();
    let now = Timestamp::now();
    for object in reflectors.policies.state() {
        let (Some(ns), Some(name)) = (&object.metadata.namespace, &object.metadata.name) else {
            continue;
        };
        let key = (ns.clone(), name.clone());
        let Some(verdict) = translated.verdicts.get(&key) else {
            continue;
        };
        let entries = replicas::entries(&object);
        let proxies = match verdict.outcome {
            Ok(()) => {
                let mine = counts.get(&key).copied().unwrap_or_default();
                replicas::sum(&entries, me, mine, verdict.generation, now)
            }
            Err(_) => ProxyCount::default(),
        };
        let refs = refs::resolve(&object, &reflectors.services);
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource);
        let wanted = desired(&object, verdict, refs.as_ref(), proxies, now);
        if let Some(body) = patch(&object, wanted) {
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => tracing::debug!(namespace = %ns, %name, "policy status written"),
                Err(error) => {
                    tracing::warn!(namespace = %ns, %name, %error, "writing policy status failed")
                }
            }
        }
        if let Some(ops) = replicas::prune(&entries, me, now) {
            let ops = match serde_json::from_value::<json_patch::Patch>(ops) {
                Ok(ops) => ops,
                Err(error) => {
                    tracing::warn!(%error, "building the replica-entry prune patch failed");
                    continue;
                }
            };
            // A failed `test` (422: the list moved) is retried next pass.
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Json::<()>(ops))
                .await
            {
                Ok(_) => tracing::debug!(namespace = %ns, %name, "stale replica entries removed"),
                Err(error) => tracing::debug!(
                    namespace = %ns, %name, %error,
                    "removing stale replica entries failed; next pass retries"
                ),
            }
        }
    }
}

/// Every [`STATUS_INTERVAL`]: this replica's own entries, then, while it
/// leads, the leader's pass. On `shutdown`, removes this replica's entries
/// (within [`RETIRE_WITHIN`]) and returns.
pub async fn run(
    client: Client,
    me: String,
    reflectors: Reflectors,
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut own = OwnEntries::new(me.clone());
    loop {
        if reflectors.synced.borrow().0 > 0 {
            let counts = proxy_counts(&registry, &sessions);
            let pass = async {
                own.write(&client, &reflectors.policies.state(), &counts)
                    .await;
                if *leader.borrow() {
                    write_all(&client, &reflectors, &me, &counts).await;
                }
            };
            // A pass stuck on the API server does not hold up stopping.
            tokio::select! {
                () = pass => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(STATUS_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    if tokio::time::timeout(RETIRE_WITHIN, own.retire(&client))
        .await
        .is_err()
    {
        tracing::warn!("removing this replica's proxy counts timed out; they age out");
    }
}
