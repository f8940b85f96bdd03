//! The leader's part of a policy's status: `observedGeneration`, the
//! Gateway-API-style conditions and the summed `proxies`, and the merge
//! patch that writes them.
//!
//! - `Accepted`: `True`/`Accepted` when the validator takes the spec,
//!   `False`/`Invalid` with its field-path messages otherwise.
//! - `ResolvedRefs`: whether the target Service and port exist (`refs`).
//!
//! `lastTransitionTime` moves only when a condition's status does.

use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::ProxyCount;
use super::refs::Resolution;
use super::replicas::rfc3339;
use crate::kubernetes::translate::Verdict;

/// One condition of `type_`, keeping the previous `lastTransitionTime` of
/// `object`'s condition of that type when its status is the same.
fn condition(
    object: &DynamicObject,
    type_: &str,
    (status, reason, message): (&str, &str, String),
    generation: i64,
    now: Timestamp,
) -> Value {
    let previous = object
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == type_));
    let since = match previous {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => Value::String(rfc3339(now)),
    };
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    })
}

/// The leader's fields of the status `object` should have; `now` stamps a
/// condition that changed.
pub fn desired(
    object: &DynamicObject,
    verdict: &Verdict,
    refs: Option<&Resolution>,
    proxies: ProxyCount,
    now: Timestamp,
) -> Value {
    let generation = verdict.generation;
    let accepted = match &verdict.outcome {
        Ok(()) => ("True", "Accepted", "policy is valid".to_owned()),
        Err(message) => ("False", "Invalid", message.clone()),
    };
    let mut conditions = vec![condition(object, "Accepted", accepted, generation, now)];
    if let Some(r) = refs {
        let status = if r.resolved { "True" } else { "False" };
        let parts = (status, r.reason, r.message.clone());
        conditions.push(condition(object, "ResolvedRefs", parts, generation, now));
    }
    json!({
        "observedGeneration": generation,
        "conditions": conditions,
        "proxies": {"acked": proxies.acked, "total": proxies.total, "generation": generation},
    })
}

/// The merge patch for `object`'s status subresource, or `None` when its
/// status already holds every field of `desired`. Only the leader's fields
/// are sent: a merge patch leaves `status.replicas` alone.
pub fn patch(object: &DynamicObject, desired: Value) -> Option<Value> {
    let current = object.data.get("status");
    let same = desired.as_object().is_some_and(|d| {
        d.iter()
            .all(|(k, v)| current.and_then(|c| c.get(k)) == Some(v))
    });
    if same {
        return None;
    }
    Some(json!({ "status": desired }))
}
