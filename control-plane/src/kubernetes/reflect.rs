//! The three reflectors (Services, EndpointSlices, ResiliencePolicies, all
//! namespaces) and the sync loop that feeds their state into the discovery
//! [`Registry`], the same registry the redb mode feeds.
//!
//! Each reflector is kube-runtime's `watcher` (LIST, then WATCH from the
//! list's resourceVersion with `allowWatchBookmarks`, so a restarted watch
//! resumes from the last bookmark; a `410 Gone` makes it re-list) feeding a
//! reflector store; a re-list replaces the store's content atomically at its
//! end. Errors are retried with kube's default backoff.
//!
//! The sync loop waits until all three stores have listed once, then, on
//! every change (and every `resync` interval, a full re-translation that
//! repairs anything missed), translates the whole state ([`translate`]) and
//! hands the registry only what changed: upserts and removals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use levee_proto::policy::Document;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio_stream::StreamExt;

use super::policy_resource;
use super::translate::{Translated, translate};
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

/// Starts the watchers and the sync loop; they run until `shutdown`.
pub fn start(
    client: Client,
    registry: Arc<Registry>,
    resync: Duration,
    shutdown: watch::Receiver<bool>,
) -> Reflectors {
    let wake = Arc::new(Notify::new());
    let services = reflect(Api::<Service>::all(client.clone()), &(), &wake, &shutdown);
    let slices = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        &(),
        &wake,
        &shutdown,
    );
    let resource = policy_resource();
    let policies = reflect(
        Api::<DynamicObject>::all_with(client, &resource),
        &resource,
        &wake,
        &shutdown,
    );
    let (tx, synced) = watch::channel((0, Arc::new(Translated::default())));
    let reflectors = Reflectors {
        services,
        slices,
        policies,
        synced,
        wake,
    };
    tokio::spawn(sync_loop(
        reflectors.clone(),
        registry,
        resync,
        tx,
        shutdown,
    ));
    reflectors
}

/// One watcher + reflector store; every event wakes the sync loop.
fn reflect<K>(
    api: Api<K>,
    dyntype: &K::DynamicType,
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
            // Managed fields are most of an object's size and never read.
            .map(|event| event.map(|e| e.modify(|o| o.managed_fields_mut().clear())))
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
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                Some(Ok(_)) => wake.notify_one(),
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
    resync: Duration,
    tx: watch::Sender<(u64, Arc<Translated>)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ready = async {
        let _ = reflectors.services.wait_until_ready().await;
        let _ = reflectors.slices.wait_until_ready().await;
        let _ = reflectors.policies.wait_until_ready().await;
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
        let translated = translate(
            policies.iter().map(AsRef::as_ref),
            services.iter().map(AsRef::as_ref),
            slices.iter().map(AsRef::as_ref),
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
    for key in gone {
        applied.remove(&key);
        registry.remove(&key);
    }
    let changed: Vec<(DocKey, u64, Document)> = translated
        .docs
        .iter()
        .filter(|(k, v)| applied.get(*k) != Some(*v))
        .map(|(k, (revision, doc))| (k.clone(), *revision, doc.clone()))
        .collect();
    if changed.is_empty() {
        return;
    }
    for (key, revision, doc) in &changed {
        applied.insert(key.clone(), (*revision, doc.clone()));
    }
    registry.upsert(changed);
}
