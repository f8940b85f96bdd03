//! The watch task ([`Watcher`]): its state, and the loop that runs one
//! stream at a time, moving to the next replica and backing off after each
//! failure, and installs the cache when no stream has answered yet. What
//! one stream does and what an update does are in the files below:
//! - `session.rs`: one stream: connect (plaintext or mTLS), hello, and the
//!   loop over updates, address answers and subscription changes;
//! - `updates.rs`: one `ServiceUpdate`: refuse it if unsolicited, apply it,
//!   answer ACK/NACK, install the snapshot and write the cache;
//! - `changes.rs`: subscription changes from the outbound path;
//! - `answers.rs`: address answers;
//! - `hold.rs`: endpoints held through a resync.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use levee_proto::policy::ServiceKey;
use levee_proto::v1 as pb;
use levee_proto::v1::watch_request::Kind as Request;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::DiscoveryConfig;
use super::services::Services;
use crate::backoff::FailureStreak;
use crate::state::Shared;
use crate::subscriptions::Change;
pub use hold::RESYNC_HOLD;

/// A stream that lasted this long worked: the backoff starts over (as it
/// does on any update).
const STREAM_WORKED: Duration = Duration::from_secs(30);

/// The state of the watch task.
pub(super) struct Watcher {
    shared: Arc<Shared>,
    config: DiscoveryConfig,
    /// The control-plane replicas (URL, endpoint), never empty.
    endpoints: Vec<(String, Endpoint)>,
    /// The replica tried now (index into `endpoints`).
    current: usize,
    /// What the proxy runs (the last good update per service).
    services: Services,
    /// Every destination subscribed now: all of them go into each hello.
    subscribed: BTreeSet<ServiceKey>,
    /// Destinations unsubscribed on the current stream ([`changes`]).
    unsubscribed: HashSet<ServiceKey>,
    /// The cache read at start, until it is installed or superseded.
    cached: Option<Services>,
    /// `source` of the snapshot in force, when this task installed it.
    installed_source: Option<String>,
    /// `services` changed since the last install.
    dirty: bool,
    /// Endpoints kept through a resync that came back empty (for
    /// `config.resync_hold`, [`RESYNC_HOLD`] by default).
    held: BTreeMap<ServiceKey, Arc<[SocketAddr]>>,
    /// When `held` is let go.
    hold_until: Option<Instant>,
    /// When the current stream came up.
    stream_up: Option<Instant>,
    failures: FailureStreak,
}

/// Why a stream ended.
enum End {
    Shutdown,
    Failed(String),
}

impl Watcher {
    pub(super) fn new(
        shared: Arc<Shared>,
        config: DiscoveryConfig,
        endpoints: Vec<(String, Endpoint)>,
        cached: Option<Services>,
    ) -> Watcher {
        let mut subscribed = BTreeSet::new();
        if let Some(cached) = &cached {
            subscribed.extend(cached.iter().map(|(key, _)| key.clone()));
        }
        shared.subscriptions.preload(subscribed.iter().cloned());
        // Its own service too (never dropped): the inbound side enforces
        // that policy's `spec.inbound`.
        if let Some(own) = config.identity.own_service() {
            shared.subscriptions.pin(own.clone());
            subscribed.insert(own);
        }
        Watcher {
            shared,
            failures: FailureStreak::new(config.backoff),
            config,
            endpoints,
            current: 0,
            services: Services::default(),
            subscribed,
            unsubscribed: HashSet::new(),
            cached,
            installed_source: None,
            dirty: false,
            held: BTreeMap::new(),
            hold_until: None,
            stream_up: None,
        }
    }

    /// Watches until `shutdown`.
    pub(super) async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<Change>,
        shutdown: CancellationToken,
    ) {
        self.shared.metrics.set_control_plane_connected(false);
        'watch: loop {
            self.stream_up = None;
            let end = self.session(&mut changes, &shutdown).await;
            if self
                .stream_up
                .is_some_and(|up| up.elapsed() >= STREAM_WORKED)
            {
                self.failures.reset();
            }
            self.shared.metrics.set_control_plane_connected(false);
            self.shared.subscriptions.set_connected(false);
            match end {
                End::Shutdown => break,
                End::Failed(error) => {
                    let ready = self.shared.is_ready();
                    tracing::warn!(url = %self.url(), %error, ready, "control plane stream down; keeping the last good config");
                    // The next try goes to the next replica.
                    self.current = (self.current + 1) % self.endpoints.len().max(1);
                }
            }
            if !self.shared.is_ready() {
                self.install_cache();
            }
            let delay = self.failures.next_delay();
            tracing::debug!(?delay, "reconnecting to the control plane after a delay");
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break 'watch,
                    // Dropped destinations are forgotten also while
                    // disconnected (and the queue stays short).
                    Some(change) = changes.recv() => self.offline_changes(change, &mut changes),
                    () = &mut sleep => break,
                }
            }
        }
        tracing::debug!("control plane watch stopped");
    }

    /// The proxy could not get a first config from the control plane: the
    /// cache read at start, if any, becomes the config.
    fn install_cache(&mut self) {
        let Some(cached) = self.cached.take() else {
            return;
        };
        let path = self
            .config
            .cache
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let source = format!(
            "policy-cache:{path} (control plane {} unreachable)",
            self.config.url
        );
        // Anything a short-lived stream already answered is newer.
        for (key, state) in cached.iter() {
            if self.services.get(key).is_none() {
                self.services.insert(key.clone(), state.clone());
            }
        }
        let version = self.install(source);
        for (key, _) in self.services.iter() {
            self.shared.subscriptions.settle(key);
        }
        self.shared.set_ready(true);
        tracing::warn!(%path, version, "control plane unreachable: serving the cached config");
    }

    /// Installs the snapshot of the current services (with held endpoints).
    fn install(&mut self, source: String) -> u64 {
        let mut snapshot = self.services.snapshot(source.clone());
        for (key, endpoints) in &self.held {
            snapshot
                .endpoints
                .entry(key.clone())
                .or_insert_with(|| endpoints.clone());
        }
        self.installed_source = Some(source);
        self.shared.install(snapshot)
    }

    fn control_plane_source(&self) -> String {
        format!("control-plane:{}", self.url())
    }

    /// The URL of the replica tried now.
    fn url(&self) -> &str {
        self.endpoints
            .get(self.current)
            .map_or(self.config.url.as_str(), |(url, _)| url.as_str())
    }
}

fn request(kind: Request) -> pb::WatchRequest {
    pb::WatchRequest { kind: Some(kind) }
}

mod answers;
mod changes;
mod hold;
mod session;
mod updates;

#[cfg(test)]
mod tests;
