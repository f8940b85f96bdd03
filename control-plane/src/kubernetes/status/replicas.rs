//! `status.replicas`: one entry per control-plane replica, so that
//! `status.proxies` counts the proxies of every replica, not only the
//! leader's (each replica knows only the Discovery streams connected to it).
//!
//! - **Every replica** writes its own entry `{name, acked, total,
//!   generation, heartbeatTime}` with server-side apply under its own field
//!   manager (`levee-control-plane/<pod>`). The list is a map keyed by
//!   `name` (`x-kubernetes-list-type: map`), so the API server merges each
//!   replica's entry into the list and no replica can overwrite another's.
//!   It writes when its numbers or the generation changed, or, while it has
//!   proxies, when the heartbeat is [`HEARTBEAT`] old. A replica with no
//!   proxies on a policy writes no entry (a zero entry is written once when
//!   its proxies leave, then left to age out).
//! - A replica that **stops** (SIGTERM: a rollout, a scale-down) removes
//!   its own entries first: it applies, under the same field manager, an
//!   object without them, which gives those fields up ([`OwnEntries::retire`]).
//!   Only a replica that dies without stopping leaves its entries to age out.
//! - **The leader** sums the fresh entries (heartbeat younger than
//!   [`STALE_AFTER`]; its own numbers are taken live) into `status.proxies`,
//!   and removes stale entries (dead replicas) with a JSON patch whose
//!   `test` operations make it fail, instead of removing the wrong entry,
//!   if the list moved meanwhile.
//!
//! Heartbeats are compared with the leader's wall clock: node clocks must
//! agree to well within [`STALE_AFTER`] (NTP does). The list is capped by
//! the schema at [`MAX_REPLICA_ENTRIES`]: a replica past the cap is refused
//! by the API server (logged) until stale entries are pruned.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::ProxyCount;
use crate::kubernetes::translate::ObjectName;
use crate::kubernetes::{GROUP, VERSION, policy_resource};

pub use crate::crd::MAX_REPLICA_ENTRIES;

/// An entry with proxies is rewritten when its heartbeat is this old.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// The leader ignores, and removes, an entry whose heartbeat is this old
/// (three missed heartbeats).
pub const STALE_AFTER: Duration = Duration::from_secs(90);
/// Field manager of a replica's writes: this, then its name.
pub const FIELD_MANAGER_PREFIX: &str = "levee-control-plane/";

/// One `status.replicas` entry as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The replica's name.
    pub name: String,
    /// Its proxies.
    pub count: ProxyCount,
    /// The generation `count.acked` is about.
    pub generation: i64,
    /// `heartbeatTime`; `None` when absent or unreadable (counts as stale).
    pub heartbeat: Option<Timestamp>,
}

impl Entry {
    /// Whether the heartbeat is younger than `bound` at `now` (one from the
    /// future, a skewed clock, counts as young).
    fn younger_than(&self, bound: Duration, now: Timestamp) -> bool {
        let Some(at) = self.heartbeat else {
            return false;
        };
        let age = now.as_millisecond().saturating_sub(at.as_millisecond());
        u128::try_from(age).unwrap_or(0) < bound.as_millis()
    }

    /// Whether the leader counts it.
    pub fn fresh(&self, now: Timestamp) -> bool {
        self.younger_than(STALE_AFTER, now)
    }
}

/// The `status.replicas` entries of `object`, in list order.
pub fn entries(object: &DynamicObject) -> Vec<Entry> {
    let list = object
        .data
        .pointer("/status/replicas")
        .and_then(Value::as_array);
    let number = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    list.into_iter()
        .flatten()
        .filter_map(|v| {
            Some(Entry {
                name: v.get("name")?.as_str()?.to_owned(),
                count: ProxyCount {
                    acked: number(v, "acked"),
                    total: number(v, "total"),
                },
                generation: v.get("generation").and_then(Value::as_i64).unwrap_or(0),
                heartbeat: v
                    .get("heartbeatTime")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse().ok()),
            })
        })
        .collect()
}

/// Whether a replica whose entry the API server holds as `known` must
/// write `count` for `generation` now.
pub fn needs_write(
    known: Option<&Entry>,
    count: ProxyCount,
    generation: i64,
    now: Timestamp,
) -> bool {
    match known {
        None => count.total > 0,
        Some(e) if count.total == 0 && e.count.total == 0 => false,
        Some(e) => {
            e.count != count || e.generation != generation || !e.younger_than(HEARTBEAT, now)
        }
    }
}

/// RFC 3339 in seconds, as the API server writes times.
pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The server-side apply body of `me`'s entry on `object`: only that entry,
/// so the apply owns nothing else.
pub fn apply_body(object: &DynamicObject, entry: &Entry) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": levee_proto::policy::KIND_POLICY,
        "metadata": {
            "name": object.metadata.name,
            "namespace": object.metadata.namespace,
        },
        "status": {"replicas": [{
            "name": entry.name,
            "acked": entry.count.acked,
            "total": entry.count.total,
            "generation": entry.generation,
            "heartbeatTime": entry.heartbeat.map(rfc3339),
        }]},
    })
}

/// The server-side apply body that gives up every field of `object`'s
/// status this manager owns: its entry is removed (no other manager owns
/// it).
pub fn retire_body(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": levee_proto::policy::KIND_POLICY,
        "metadata": {"name": name, "namespace": namespace},
    })
}

/// `status.proxies` as the leader (`me`, with its live `mine`) sums it:
/// every fresh entry's total, and its acked when it is about `generation`.
pub fn sum(
    entries: &[Entry],
    me: &str,
    mine: ProxyCount,
    generation: i64,
    now: Timestamp,
) -> ProxyCount {
    let mut out = mine;
    for e in entries.iter().filter(|e| e.name != me && e.fresh(now)) {
        out.total += e.count.total;
        if e.generation == generation {
            out.acked += e.count.acked;
        }
    }
    out
}

/// The JSON patch removing the stale entries of other replicas (a `test` of
/// each one's name before its `remove`, last index first), if any.
pub fn prune(entries: &[Entry], me: &str, now: Timestamp) -> Option<Value> {
    let mut ops = Vec::new();
    for (i, e) in entries.iter().enumerate().rev() {
        if e.name == me || e.fresh(now) {
            continue;
        }
        let path = format!("/status/replicas/{i}");
        ops.push(json!({"op": "test", "path": format!("{path}/name"), "value": e.name}));
        ops.push(json!({"op": "remove", "path": path}));
    }
    (!ops.is_empty()).then_some(Value::Array(ops))
}

/// This replica's own entries: what it last wrote, and the writes.
#[derive(Debug)]
pub struct OwnEntries {
    me: String,
    /// Per policy: its uid and the entry last written successfully.
    written: HashMap<ObjectName, (String, Entry)>,
}

impl OwnEntries {
    /// The entries of replica `me`.
    pub fn new(me: impl Into<String>) -> Self {
        OwnEntries {
            me: me.into(),
            written: HashMap::new(),
        }
    }

    /// `levee-control-plane/<me>`, cut to the API's 128 bytes.
    pub fn field_manager(&self) -> String {
        let mut manager = format!("{FIELD_MANAGER_PREFIX}{}", self.me);
        let mut end = manager.len().min(128);
        while !manager.is_char_boundary(end) {
            end -= 1;
        }
        manager.truncate(end);
        manager
    }

    /// The entry to write on `object` for `count`, or `None` when the API
    /// server already holds what it should (by our last write, or else by
    /// the cached object).
    pub fn pending(
        &self,
        object: &DynamicObject,
        count: ProxyCount,
        now: Timestamp,
    ) -> Option<Entry> {
        let generation = object.metadata.generation.unwrap_or(0);
        let (ns, name) = (
            object.metadata.namespace.clone()?,
            object.metadata.name.clone()?,
        );
        let uid = object.metadata.uid.clone().unwrap_or_default();
        let cached = entries(object).into_iter().find(|e| e.name == self.me);
        let known = match self.written.get(&(ns, name)) {
            Some((written_uid, entry)) if *written_uid == uid => Some(entry.clone()),
            _ => cached,
        };
        needs_write(known.as_ref(), count, generation, now).then(|| Entry {
            name: self.me.clone(),
            count,
            generation,
            heartbeat: Some(now),
        })
    }

    /// One pass over `policies`: writes the entries that changed.
    pub async fn write(
        &mut self,
        client: &Client,
        policies: &[std::sync::Arc<DynamicObject>],
        counts: &std::collections::BTreeMap<ObjectName, ProxyCount>,
    ) {
        let now = Timestamp::now();
        let resource = policy_resource();
        let params = PatchParams::apply(&self.field_manager()).force();
        let mut present = std::collections::HashSet::new();
        for object in policies {
            let (Some(ns), Some(name)) = (&object.metadata.namespace, &object.metadata.name) else {
                continue;
            };
            let key = (ns.clone(), name.clone());
            present.insert(key.clone());
            let count = counts.get(&key).copied().unwrap_or_default();
            let Some(entry) = self.pending(object, count, now) else {
                continue;
            };
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource);
            let body = apply_body(object, &entry);
            match api.patch_status(name, &params, &Patch::Apply(&body)).await {
                Ok(_) => {
                    let uid = object.metadata.uid.clone().unwrap_or_default();
                    self.written.insert(key, (uid, entry));
                }
                Err(error) => tracing::warn!(
                    namespace = %ns, %name, %error,
                    "writing this replica's proxy count failed"
                ),
            }
        }
        self.written.retain(|key, _| present.contains(key));
    }

    /// Removes every entry this replica wrote (it is stopping), so the
    /// leader stops counting its proxies now instead of after
    /// [`STALE_AFTER`].
    pub async fn retire(&mut self, client: &Client) {
        let resource = policy_resource();
        let params = PatchParams::apply(&self.field_manager()).force();
        for ((ns, name), _) in std::mem::take(&mut self.written) {
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &resource);
            let body = retire_body(&ns, &name);
            if let Err(error) = api.patch_status(&name, &params, &Patch::Apply(&body)).await {
                tracing::warn!(
                    namespace = %ns, %name, %error,
                    "removing this replica's proxy count failed; it ages out"
                );
            }
        }
    }
}
