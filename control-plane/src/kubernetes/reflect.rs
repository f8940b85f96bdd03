//! The reflectors (Services, EndpointSlices, ResiliencePolicies, and Pods
//! when identities are on; all namespaces) and the sync loop that feeds
//! their state into the discovery [`Registry`], the same registry the redb
//! mode feeds.
//!
//! Each reflector is kube-runtime's `watcher` (LIST, then WATCH from the
//! list's resourceVersion with `allowWatchBookmarks`, so a restarted watch
//! resumes from the last bookmark; a `410 Gone` makes it re-list) feeding a
//! reflector store; a re-list replaces the store's content atomically at its
//! end. Errors are retried with kube's default backoff.
//!
//! Pods are kept stripped to what identities need ([`pods::strip`]), and a
//! pod event wakes the sync loop only when that part changed (pods' status
//! churns far more often than it matters here).
//!
//! The sync loop waits until every store has listed once, then, on
//! every change (and every `resync` interval, a full re-translation that
//! repairs anything missed), translates the whole state ([`translate`]) and
//! hands the registry only what changed (upserts and removals) together
//! with the identities expected at meshed pods' IPs, as one batch.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use levee_proto::policy::Document;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio_stream::StreamExt;

use super::pods::{self, PodIdentities};
use super::policy_resource;
use super::translate::{ObjectName, Translated, translate};
use crate::discovery::registry::Registry;
use crate::store::DocKey;

/// Readers of the three caches and the latest translation.
#[derive(Clone)]
pub struct Reflectors {
    /// Services, all namespaces.
    pub services: Store<Service>,
    /// EndpointSlices, all namespaces.
    pub slices: Store<EndpointSlice>,
    /// ResiliencePolicy custom resources, all namespaces.
    pub policies: Store<DynamicObject>,
    /// Pods, all namespaces, stripped ([`pods::strip`]); `None`: not
    /// watched (identities off).
    pub pods: Option<Store<Pod>>,
    /// The last translation handed to the registry, and how many syncs ran.
    pub synced: watch::Receiver<(u64, Arc<Translated>)>,
    /// Wakes the sync loop (a change, or a forced resync).
    wake: Arc<Notify>,
}

impl Reflectors {
    /// Asks for a sync now (it sees the caches as they are at least now).
    pub fn resync(&self) {
        self.wake.notify_one();
    }
}

/// Starts the watchers and the sync loop without pods (no identities);
/// they run until `shutdown`.
pub fn start(
    client: Client,
    registry: Arc<Registry>,
    resync: Duration,
    shutdown: watch::Receiver<bool>,
) -> Reflectors {
    start_with(client, registry, resync, None, shutdown)
}

/// Starts the watchers and the sync loop; with a `trust_domain`, Pods are
/// watched too and meshed pods' endpoints expect
/// `spiffe://<trust_domain>/ns/<namespace>/sa/<serviceAccountName>`.
pub fn start_with(
    client: Client,
    registry: Arc<Registry>,
    resync: Duration,
    trust_domain: Option<String>,
    shutdown: watch::Receiver<bool>,
) -> Reflectors {
    let wake = Arc::new(Notify::new());
    let services = reflect(
        Api::<Service>::all(client.clone()),
        &(),
        clear_managed_fields,
        every_change,
        &wake,
        &shutdown,
    );
    let slices = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        &(),
        clear_managed_fields,
        every_change,
        &wake,
        &shutdown,
    );
    let resource = policy_resource();
    // Status writes (every replica's heartbeat) change no spec: they do
    // not wake a translation.
    let mut policy_changes = Changes::new(policy_digest);
    let policies = reflect(
        Api::<DynamicObject>::all_with(client.clone(), &resource),
        &resource,
        clear_managed_fields,
        move |event| policy_changes.wakes(event),
        &wake,
        &shutdown,
    );
    let pods = trust_domain.is_some().then(|| {
        let mut changes = Changes::new(pods::digest);
        reflect(
            Api::<Pod>::all(client),
            &(),
            pods::strip,
            move |event| changes.wakes(event),
            &wake,
            &shutdown,
        )
    });
    let (tx, synced) = watch::channel((0, Arc::new(Translated::default())));
    let reflectors = Reflectors {
        services,
        slices,
        policies,
        pods,
        synced,
        wake,
    };
    tokio::spawn(sync_loop(
        reflectors.clone(),
        registry,
        (resync, trust_domain),
        tx,
        shutdown,
    ));
    reflectors
}

/// Managed fields are most of an object's size and never read.
fn clear_managed_fields<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
}

/// Every event but a re-list's first steps wakes the sync loop (the
/// re-list's end does, once).
fn every_change<K>(event: &watcher::Event<K>) -> bool {
    !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_))
}

/// Which events change what the translation reads: an object wakes the
/// sync loop only when its `digest` differs from the one last seen (a
/// pod's status churn, or a policy's status write, does not).
pub(super) struct Changes<K> {
    digest: fn(&K) -> u64,
    seen: HashMap<ObjectName, u64>,
    /// Being re-listed: replaces `seen` at the list's end.
    relisting: HashMap<ObjectName, u64>,
}

impl<K: Resource> Changes<K> {
    pub(super) fn new(digest: fn(&K) -> u64) -> Self {
        Changes {
            digest,
            seen: HashMap::new(),
            relisting: HashMap::new(),
        }
    }

    pub(super) fn wakes(&mut self, event: &watcher::Event<K>) -> bool {
        let name = |object: &K| {
            let meta = object.meta();
            (
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            )
        };
        match event {
            watcher::Event::Init => {
                self.relisting.clear();
                false
            }
            watcher::Event::InitApply(object) => {
                self.relisting.insert(name(object), (self.digest)(object));
                false
            }
            watcher::Event::InitDone => {
                self.seen = std::mem::take(&mut self.relisting);
                true
            }
            watcher::Event::Apply(object) => {
                let digest = (self.digest)(object);
                self.seen.insert(name(object), digest) != Some(digest)
            }
            watcher::Event::Delete(object) => self.seen.remove(&name(object)).is_some(),
        }
    }
}

/// What the translation reads of a policy: its spec, which moves its
/// `metadata.generation` (the status subresource's writes do not). Without
/// a generation, every version counts.
pub(super) fn policy_digest(policy: &DynamicObject) -> u64 {
    let meta = &policy.metadata;
    let mut hasher = DefaultHasher::new();
    meta.uid.hash(&mut hasher);
    match meta.generation {
        Some(generation) => generation.hash(&mut hasher),
        None => meta.resource_version.hash(&mut hasher),
    }
    hasher.finish()
}

/// One watcher + reflector store, each object `strip`ped before it is
/// stored; the events `wakes` says so wake the sync loop.
fn reflect<K>(
    api: Api<K>,
    dyntype: &K::DynamicType,
    strip: fn(&mut K),
    mut wakes: impl FnMut(&watcher::Event<K>) -> bool + Send + 'static,
    wake: &Arc<Notify>,
    shutdown: &watch::Receiver<bool>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    let writer = reflector::store::Writer::new(dyntype.clone());
    let reader = writer.as_reader();
    let kind = K::kind(dyntype).to_string();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default())
            .map(move |event| event.map(|e| e.modify(strip)))
            .default_backoff(),
    );
    let wake = wake.clone();
    let mut shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::pin!(stream);
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match event {
                Some(Ok(event)) => {
                    if wakes(&event) {
                        wake.notify_one();
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%kind, %error, "Kubernetes watch failed; retrying")
                }
                None => return,
            }
        }
    });
    reader
}

/// Waits for the first complete state, then translates on every wake-up
/// and every `resync`, handing the registry what changed.
async fn sync_loop(
    reflectors: Reflectors,
    registry: Arc<Registry>,
    (resync, trust_domain): (Duration, Option<String>),
    tx: watch::Sender<(u64, Arc<Translated>)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ready = async {
        let _ = reflectors.services.wait_until_ready().await;
        let _ = reflectors.slices.wait_until_ready().await;
        let _ = reflectors.policies.wait_until_ready().await;
        // Identities are on: serve no endpoint before knowing which are meshed.
        if let Some(pods) = &reflectors.pods {
            let _ = pods.wait_until_ready().await;
        }
    };
    tokio::select! {
        () = ready => {}
        _ = shutdown.wait_for(|stop| *stop) => return,
    }
    let mut applied: BTreeMap<DocKey, (u64, Document)> = BTreeMap::new();
    let mut syncs = 0u64;
    loop {
        let services = reflectors.services.state();
        let slices = reflectors.slices.state();
        let policies = reflectors.policies.state();
        let pod_identities = match (&reflectors.pods, &trust_domain) {
            (Some(pods), Some(trust_domain)) => Some(PodIdentities::new(
                trust_domain,
                pods.state().iter().map(AsRef::as_ref),
            )),
            _ => None,
        };
        let translated = translate(
            policies.iter().map(AsRef::as_ref),
            services.iter().map(AsRef::as_ref),
            slices.iter().map(AsRef::as_ref),
            pod_identities.as_ref(),
        );
        apply(&registry, &mut applied, &translated);
        syncs += 1;
        if syncs == 1 {
            tracing::info!(
                services = services.len(),
                slices = slices.len(),
                policies = policies.len(),
                "Kubernetes state listed; serving discovery"
            );
        }
        tx.send_replace((syncs, Arc::new(translated)));
        tokio::select! {
            () = reflectors.wake.notified() => {}
            () = tokio::time::sleep(resync) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Hands the registry the difference between `applied` and `translated`.
fn apply(
    registry: &Registry,
    applied: &mut BTreeMap<DocKey, (u64, Document)>,
    translated: &Translated,
) {
    let gone: Vec<DocKey> = applied
        .keys()
        .filter(|k| !translated.docs.contains_key(*k))
        .cloned()
        .collect();
    let changed: Vec<(DocKey, u64, Document)> = translated
        .docs
        .iter()
        .filter(|(k, v)| applied.get(*k) != Some(*v))
        .map(|(k, (revision, doc))| (k.clone(), *revision, doc.clone()))
        .collect();
    if gone.is_empty() && changed.is_empty() && translated.identities.is_none() {
        return;
    }
    for key in &gone {
        applied.remove(key);
    }
    for (key, revision, doc) in &changed {
        applied.insert(key.clone(), (*revision, doc.clone()));
    }
    // One batch: a new endpoint arrives with its identity, never before it.
    registry.apply(&gone, changed, translated.identities.clone());
}
