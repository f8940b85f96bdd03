//! `status` of a `ResiliencePolicy`: a Gateway-API-style condition list
//! (`Accepted`: did the policy validate and compile) and how many proxies
//! ACKed the current generation. Written by the control plane's leader
//! through the status subresource; users never write it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The status subresource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions, one per `type` (today: `Accepted`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<PolicyCondition>,
    /// Proxies that hold this policy, and how many ACKed `generation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<ProxyCounts>,
}

/// One condition, shaped like `metav1.Condition`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    /// `Accepted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// A CamelCase word: `Valid`, `Invalid`.
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

/// ACK counts for the current generation.
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
