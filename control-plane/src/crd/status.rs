//! `status` of a `ResiliencePolicy`: a Gateway-API-style condition list
//! (`Accepted`: did the policy validate; `ResolvedRefs`: does its target
//! Service and port exist), how many proxies ACKed the current generation
//! (summed over the replicas), and one entry per control-plane replica with
//! the proxies connected to it. The leader writes the conditions and the
//! sum; each replica writes only its own `replicas` entry (server-side
//! apply); users never write any of it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The status subresource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions, one per `type` (`Accepted`, `ResolvedRefs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<PolicyCondition>,
    /// Proxies that hold this policy, and how many ACKed `generation`
    /// (the sum of the fresh `replicas` entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<ProxyCounts>,
    /// One entry per control-plane replica that has (or recently had)
    /// proxies using this policy, each written by that replica alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
        "maxItems" = MAX_REPLICA_ENTRIES
    ))]
    pub replicas: Vec<ReplicaCounts>,
}

/// At most this many `status.replicas` entries (the schema's `maxItems`):
/// live replicas plus dead ones not pruned yet, with room for rollouts.
pub const MAX_REPLICA_ENTRIES: usize = 32;

/// One condition, shaped like `metav1.Condition`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    /// `Accepted` or `ResolvedRefs`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// A CamelCase word: `Accepted`, `Invalid`, `ResolvedRefs`,
    /// `BackendNotFound`, `PortNotFound`.
    pub reason: String,
    /// For people: what was wrong, with field paths.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// ACK counts for the current generation, summed over the replicas whose
/// `replicas` entry is fresh.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyCounts {
    /// Proxies that ACKed `generation`.
    pub acked: u32,
    /// Proxies subscribed to the policy's service.
    pub total: u32,
    /// The policy generation counted.
    pub generation: i64,
}

/// The proxies connected to one control-plane replica that use the policy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaCounts {
    /// The replica (its pod name, `--pod-name`); the list's key.
    pub name: String,
    /// Of them, those that ACKed `generation`.
    pub acked: u32,
    /// Proxies on this replica subscribed to the policy's service.
    pub total: u32,
    /// The policy generation `acked` is about.
    pub generation: i64,
    /// When the replica last wrote this entry (RFC 3339); the leader
    /// ignores, then removes, an entry that has not been rewritten for 90 s.
    #[schemars(extend("format" = "date-time"))]
    pub heartbeat_time: String,
}
