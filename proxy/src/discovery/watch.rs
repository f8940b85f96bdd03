//! The watch task: one stream at a time, reconnecting with backoff; applies
//! updates, answers ACK/NACK, installs snapshots and writes the cache.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use levee_proto::policy::ServiceKey;
use levee_proto::v1 as pb;
use levee_proto::v1::discovery_client::DiscoveryClient;
use levee_proto::v1::watch_request::Kind as Request;
use levee_proto::v1::watch_response::Kind as Response;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::services::{Applied, Refusal, Services};
use super::subscriptions::Change;
use super::{DiscoveryConfig, MAX_REQUEST_SIZE, MAX_UPDATE_SIZE, PROXY_VERSION, cache};
use crate::backoff::FailureStreak;
use crate::state::Shared;
pub use hold::RESYNC_HOLD;
use hold::expiry;

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

/// Connects to the control plane: in plaintext, or over TLS presenting
/// the current workload certificate (waiting for the first one).
async fn connect(
    base: Endpoint,
    tls: Option<crate::identity::ControlPlaneTls>,
    certified: Option<crate::identity::CertifiedWatch>,
) -> Result<tonic::transport::Channel, String> {
    let endpoint = match tls {
        None => base,
        Some(tls) => {
            let current = match certified {
                Some(mut rx) => rx
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| "the identity task stopped".to_owned())?
                    .clone(),
                None => None,
            };
            let roots = current
                .as_ref()
                .map(|c| c.roots.clone())
                .unwrap_or_default();
            tls.apply(base, current.as_deref(), &roots)?
        }
    };
    endpoint
        .connect()
        .await
        .map_err(|error| format!("connecting: {}", crate::errors::error_chain(&error)))
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

    /// One stream: connect, hello, then updates until it fails or shutdown.
    async fn session(
        &mut self,
        changes: &mut mpsc::UnboundedReceiver<Change>,
        shutdown: &CancellationToken,
    ) -> End {
        let Some((_, endpoint)) = self.endpoints.get(self.current).cloned() else {
            return End::Failed("no control-plane URL".into());
        };
        let connecting = connect(
            endpoint,
            self.config.tls.clone(),
            self.config.certified.clone(),
        );
        tokio::pin!(connecting);
        let channel = loop {
            tokio::select! {
                () = shutdown.cancelled() => return End::Shutdown,
                Some(change) = changes.recv() => self.offline_changes(change, changes),
                connected = &mut connecting => match connected {
                    Ok(channel) => break channel,
                    Err(error) => return End::Failed(error),
                },
            }
        };
        // Changes while no stream was up: the hello carries their result.
        self.unsubscribed.clear();
        if let Ok(change) = changes.try_recv() {
            self.offline_changes(change, changes);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(self.hello());
        // Addresses are not part of hello: subscribed right after it.
        let addresses = self.shared.subscriptions.addresses.addresses();
        if !addresses.is_empty() {
            let addresses = addresses.iter().map(ToString::to_string).collect();
            let _ = tx.send(request(Request::Subscribe(pb::Subscribe {
                services: Vec::new(),
                addresses,
            })));
        }
        let requests = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|request| (request, rx))
        });
        let mut client = DiscoveryClient::new(channel)
            .max_decoding_message_size(MAX_UPDATE_SIZE)
            .max_encoding_message_size(MAX_REQUEST_SIZE);
        let mut responses = tokio::select! {
            () = shutdown.cancelled() => return End::Shutdown,
            answered = client.watch(requests) => match answered {
                Ok(response) => response.into_inner(),
                Err(status) => return End::Failed(format!("watch refused: {status}")),
            },
        };
        tracing::info!(url = %self.url(), subscriptions = self.subscribed.len(), "control plane stream up");
        self.shared.metrics.set_control_plane_connected(true);
        self.shared.subscriptions.set_connected(true);
        let now = Instant::now();
        self.stream_up = Some(now);
        self.hold_until = (!self.held.is_empty()).then_some(now + self.config.resync_hold);
        // The initial subscriptions not answered yet: ready (and the source
        // switches to the control plane) once this is empty.
        let mut pending: HashSet<ServiceKey> = self.subscribed.iter().cloned().collect();
        self.after_update(&pending, false).await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return End::Shutdown,
                () = expiry(self.hold_until) => self.release_held(),
                Some(change) = changes.recv() => {
                    let changed = self.on_changes(change, changes, Some(&tx), &mut pending);
                    self.after_update(&pending, changed).await;
                }
                message = responses.message() => match message {
                    Ok(Some(pb::WatchResponse { kind: Some(Response::Update(update)) })) => {
                        self.failures.reset();
                        let changed = self.on_update(update, &tx, &mut pending);
                        self.after_update(&pending, changed).await;
                    }
                    Ok(Some(pb::WatchResponse { kind: Some(Response::Address(answer)) })) => {
                        self.failures.reset();
                        self.on_address(&answer);
                    }
                    Ok(Some(pb::WatchResponse { kind: None })) => {}
                    Ok(None) => return End::Failed("the control plane ended the stream".into()),
                    Err(status) => return End::Failed(format!("stream failed: {status}")),
                },
            }
        }
    }

    /// The refusal of an update about a service this proxy never asked for
    /// (a confused or hostile control plane must not grow the proxy's
    /// state or give it routes); `None` for a subscribed one. An update
    /// naming no readable service is left to [`Services::apply`] to refuse.
    fn unsolicited(&self, update: &pb::ServiceUpdate) -> Option<Refusal> {
        let key = ServiceKey::try_from(update.service.as_ref()?).ok()?;
        if self.subscribed.contains(&key) {
            return None;
        }
        Some(Refusal {
            reason: format!("{key} was never subscribed by this proxy"),
            service: Some(key),
        })
    }

    fn hello(&self) -> pb::WatchRequest {
        let id = &self.config.identity;
        request(Request::Hello(pb::Hello {
            service: id.service.clone(),
            namespace: id.namespace.clone(),
            service_port: u32::from(id.service_port),
            address: id.address.clone(),
            inbound_port: u32::from(id.inbound_port),
            proxy_version: PROXY_VERSION.to_owned(),
            subscriptions: self.subscribed.iter().map(pb::ServiceRef::from).collect(),
        }))
    }

    /// Applies one update and answers it; returns whether the state changed.
    fn on_update(
        &mut self,
        update: pb::ServiceUpdate,
        tx: &mpsc::UnboundedSender<pb::WatchRequest>,
        pending: &mut HashSet<ServiceKey>,
    ) -> bool {
        if let Some(refusal) = self.unsolicited(&update) {
            if refusal
                .service
                .as_ref()
                .is_some_and(|key| self.recently_unsubscribed(key))
            {
                // It crossed this proxy's `Unsubscribe`: the control plane
                // has already forgotten the subscription; nothing to answer.
                tracing::debug!(service = ?refusal.service.as_ref().map(ToString::to_string), "ignoring an update that crossed an unsubscribe");
                return false;
            }
            // Not ours to keep: no state, no settle, no install; the NACK
            // tells the control plane (and its `Status`) why.
            self.shared.metrics.policy_update(false);
            tracing::warn!(service = ?refusal.service.as_ref().map(ToString::to_string), version = %update.version, "ignoring an update for a service this proxy never subscribed to");
            let nack = pb::Nack {
                service: update.service,
                version: update.version,
                nonce: update.nonce,
                reason: refusal.reason,
            };
            let _ = tx.send(request(Request::Nack(nack)));
            return false;
        }
        let previous = self.previous_endpoints(&update);
        let metrics = &self.shared.metrics;
        let (answer, key, changed) = match self.services.apply(&update, self.config.checks) {
            Ok((key, applied)) => {
                metrics.policy_update(true);
                tracing::debug!(service = %key, version = %update.version, ?applied, "update accepted");
                let ack = pb::Ack {
                    service: update.service,
                    version: update.version,
                    nonce: update.nonce,
                };
                (Request::Ack(ack), Some(key), applied == Applied::Changed)
            }
            Err(refusal) => {
                metrics.policy_update(false);
                tracing::warn!(service = ?refusal.service.as_ref().map(ToString::to_string), version = %update.version, reason = %refusal.reason, "update refused; keeping the last good config");
                let nack = pb::Nack {
                    service: update.service,
                    version: update.version,
                    nonce: update.nonce,
                    reason: refusal.reason,
                };
                (Request::Nack(nack), refusal.service, false)
            }
        };
        let _ = tx.send(request(answer));
        if let (Some(key), true) = (&key, changed) {
            self.hold_if_emptied(key, previous);
        }
        if let Some(key) = key {
            pending.remove(&key);
            self.shared.subscriptions.settle(&key);
        }
        changed
    }

    /// Installs (and caches) a changed state. Before the proxy has a first
    /// config, nothing is installed until every initial subscription is
    /// answered; then the proxy turns ready on control-plane config.
    async fn after_update(&mut self, pending: &HashSet<ServiceKey>, changed: bool) {
        self.dirty |= changed;
        let source = self.control_plane_source();
        let settled = pending.is_empty();
        if settled {
            // The cache is only for a start without a control plane.
            self.cached = None;
        } else if !self.shared.is_ready() {
            return;
        }
        let switch = settled && self.installed_source.as_ref() != Some(&source);
        if !self.dirty && !switch {
            return;
        }
        let version = self.install(source);
        tracing::info!(version, "control plane config installed");
        if settled && !self.shared.is_ready() {
            self.shared.set_ready(true);
        }
        if std::mem::take(&mut self.dirty) {
            self.write_cache().await;
        }
    }

    async fn write_cache(&self) {
        let Some(path) = &self.config.cache else {
            return;
        };
        let written = match cache::encode(&self.services, &self.config.url) {
            Ok(bytes) => cache::write(path, bytes).await.map_err(|e| e.to_string()),
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot write the policy cache");
        }
    }
}

fn request(kind: Request) -> pb::WatchRequest {
    pb::WatchRequest { kind: Some(kind) }
}

mod answers;
mod changes;
mod hold;

#[cfg(test)]
mod tests;
