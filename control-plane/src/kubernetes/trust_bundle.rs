//! The trust bundle in every meshed namespace: the leader keeps a ConfigMap
//! `levee-trust-bundle` (key `ca.crt`: the control plane's trust bundle,
//! PEM) in each namespace labelled `levee.dev/inject=enabled`, because an
//! injected pod mounts it from its own namespace (a ConfigMap volume cannot
//! cross namespaces) and its proxy verifies the control plane against it.
//!
//! - Namespaces come from a watch filtered by that label (every replica
//!   watches; only the leader writes).
//! - Each copy is written with server-side apply (field manager
//!   `levee-control-plane`, `force`): it creates the ConfigMap or takes over
//!   `ca.crt` of one made by hand, in one request. The leader never reads
//!   ConfigMaps: it applies a namespace's copy when the namespace appears
//!   (or when it becomes leader), and again every [`REAPPLY`], which
//!   repairs a copy deleted or edited meanwhile (an apply that changes
//!   nothing is not a write). A failed apply is retried at the next
//!   [`TICK`].
//! - A namespace being deleted is skipped (the API server refuses new
//!   objects there). A copy is never deleted: unlabelling a namespace
//!   leaves it behind, harmless.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::StreamExt;

pub use crate::webhook::inject::sidecar::{TRUST_BUNDLE, TRUST_BUNDLE_KEY};

/// The namespaces that get a copy (the injector's namespace label).
pub const INJECT_SELECTOR: &str = "levee.dev/inject=enabled";
/// Field manager of the copies (the same for every leader, so a new
/// leader owns what the old one wrote).
pub const FIELD_MANAGER: &str = "levee-control-plane";
/// Every copy is applied again this often.
pub const REAPPLY: Duration = Duration::from_secs(600);
/// How often due copies are looked for without a namespace event.
pub const TICK: Duration = Duration::from_secs(30);

/// The ConfigMap applied in `namespace`.
pub fn config_map(namespace: &str, bundle_pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": TRUST_BUNDLE,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "levee",
                "app.kubernetes.io/managed-by": FIELD_MANAGER,
            },
        },
        "data": {TRUST_BUNDLE_KEY: bundle_pem},
    })
}

/// Whether `namespace` is being deleted.
fn terminating(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// The leader's copies: when each namespace's was last applied.
#[derive(Debug)]
pub struct Copier {
    bundle_pem: String,
    applied: HashMap<String, Instant>,
}

impl Copier {
    /// Copies of `bundle_pem`.
    pub fn new(bundle_pem: impl Into<String>) -> Self {
        Copier {
            bundle_pem: bundle_pem.into(),
            applied: HashMap::new(),
        }
    }

    /// The namespaces of `namespaces` whose copy is due at `now`.
    pub fn due(&self, namespaces: &[Arc<Namespace>], now: Instant) -> Vec<String> {
        let mut out: Vec<String> = namespaces
            .iter()
            .filter(|ns| !terminating(ns))
            .filter_map(|ns| ns.metadata.name.clone())
            .filter(|name| {
                self.applied
                    .get(name)
                    .is_none_or(|at| now.duration_since(*at) >= REAPPLY)
            })
            .collect();
        out.sort();
        out
    }

    /// Records that `namespace`'s copy was applied at `at`.
    pub fn applied(&mut self, namespace: &str, at: Instant) {
        self.applied.insert(namespace.to_owned(), at);
    }

    /// Forgets every copy (leadership lost: a new term applies them all).
    pub fn forget(&mut self) {
        self.applied.clear();
    }

    /// Applies the due copies; `namespaces` is every labelled namespace.
    pub async fn apply(&mut self, client: &Client, namespaces: &[Arc<Namespace>]) {
        let now = Instant::now();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for ns in self.due(namespaces, now) {
            let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
            let body = config_map(&ns, &self.bundle_pem);
            match api.patch(TRUST_BUNDLE, &params, &Patch::Apply(&body)).await {
                Ok(_) => {
                    tracing::debug!(namespace = %ns, "trust bundle applied");
                    self.applied(&ns, now);
                }
                Err(error) => {
                    tracing::warn!(namespace = %ns, %error, "applying the trust bundle failed")
                }
            }
        }
        // An unlabelled (or deleted) namespace is applied afresh if it
        // comes back.
        self.applied.retain(|name, _| {
            namespaces
                .iter()
                .any(|ns| ns.metadata.name.as_ref() == Some(name))
        });
    }
}

/// Watches the labelled namespaces and, while `leader`, keeps their copies
/// of `bundle_pem`, until `shutdown`.
pub async fn run(
    client: Client,
    bundle_pem: String,
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let writer = reflector::store::Writer::<Namespace>::default();
    let namespaces: Store<Namespace> = writer.as_reader();
    let config = watcher::Config::default().labels(INJECT_SELECTOR);
    let stream = reflector(
        writer,
        watcher(Api::<Namespace>::all(client.clone()), config)
            .map(|event| event.map(|e| e.modify(|o| o.metadata.managed_fields = None)))
            .default_backoff(),
    );
    tokio::pin!(stream);
    let mut copier = Copier::new(bundle_pem);
    let mut listed = false;
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(watcher::Event::InitDone)) => listed = true,
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(%error, "namespace watch failed; retrying");
                }
                None => return,
            },
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(TICK) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if !*leader.borrow() {
            copier.forget();
        } else if listed {
            copier.apply(&client, &namespaces.state()).await;
        }
    }
}
