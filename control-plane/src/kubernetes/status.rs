//! `status` written back on each ResiliencePolicy through the status
//! subresource (a JSON merge patch on `…/resiliencepolicies/<name>/status`),
//! by the leader only (see `lease`).
//!
//! ```yaml
//! status:
//!   observedGeneration: 3
//!   conditions:                # Gateway-API style
//!   - type: Accepted
//!     status: "True"           # "False" when the validator refuses it
//!     reason: Accepted         # or Invalid
//!     message: policy is valid # or the validator's field-path messages
//!     observedGeneration: 3
//!     lastTransitionTime: "2026-11-29T21:40:09Z"
//!   proxies: {acked: 2, total: 2, generation: 3}
//! ```
//!
//! `proxies` counts the proxies connected to this replica (the leader) that
//! are subscribed to a service port the policy applies to: `total`, and
//! `acked`, those that ACKed the version carrying the current generation.
//! A patch is sent only when something other than the time changed, and
//! `lastTransitionTime` moves only when the condition's status does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use levee_proto::policy::DEFAULT_NAMESPACE;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::policy_resource;
use super::reflect::Reflectors;
use super::translate::{ObjectName, Verdict};
use crate::discovery::registry::Registry;
use crate::discovery::status::Sessions;

/// How often the leader compares and writes status.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);

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

/// The status `object` should have; `now` stamps a condition that changed.
pub fn desired(
    object: &DynamicObject,
    verdict: &Verdict,
    proxies: ProxyCount,
    now: Timestamp,
) -> Value {
    let generation = verdict.generation;
    let (status, reason, message) = match &verdict.outcome {
        Ok(()) => ("True", "Accepted", "policy is valid".to_owned()),
        Err(message) => ("False", "Invalid", message.clone()),
    };
    let previous = object
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"));
    let since = match previous {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => Value::String(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
    };
    json!({
        "observedGeneration": generation,
        "conditions": [{
            "type": "Accepted",
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": since,
        }],
        "proxies": {"acked": proxies.acked, "total": proxies.total, "generation": generation},
    })
}

/// The merge patch for `object`'s status subresource, or `None` when its
/// status already says `desired`.
pub fn patch(object: &DynamicObject, desired: Value) -> Option<Value> {
    if object.data.get("status") == Some(&desired) {
        return None;
    }
    Some(json!({ "status": desired }))
}

/// One pass: every cached policy's status compared, and patched if needed.
pub async fn write_all(
    client: &Client,
    reflectors: &Reflectors,
    registry: &Registry,
    sessions: &Sessions,
) {
    let translated = reflectors.synced.borrow().1.clone();
    let counts = proxy_counts(registry, sessions);
    let resource = policy_resource();
    for object in reflectors.policies.state() {
        let (Some(ns), Some(name)) = (&object.metadata.namespace, &object.metadata.name) else {
            continue;
        };
        let key = (ns.clone(), name.clone());
        let Some(verdict) = translated.verdicts.get(&key) else {
            continue;
        };
        let proxies = match verdict.outcome {
            Ok(()) => counts.get(&key).copied().unwrap_or_default(),
            Err(_) => ProxyCount::default(),
        };
        let Some(body) = patch(
            &object,
            desired(&object, verdict, proxies, Timestamp::now()),
        ) else {
            continue;
        };
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource);
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
}

/// Writes status every [`STATUS_INTERVAL`] while this replica leads.
pub async fn run(
    client: Client,
    reflectors: Reflectors,
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *leader.borrow() && reflectors.synced.borrow().0 > 0 {
            write_all(&client, &reflectors, &registry, &sessions).await;
        }
        tokio::select! {
            () = tokio::time::sleep(STATUS_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
