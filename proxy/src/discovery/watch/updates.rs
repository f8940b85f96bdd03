//! One `ServiceUpdate`: an update about a service this proxy never
//! subscribed to is refused (NACK, nothing kept); any other is applied to
//! the services ([`crate::discovery::services`]) and answered ACK or NACK;
//! then a changed state is installed as a snapshot and written to the
//! policy cache.

use std::collections::HashSet;

use levee_proto::policy::ServiceKey;
use levee_proto::v1 as pb;
use levee_proto::v1::watch_request::Kind as Request;
use tokio::sync::mpsc;

use super::{Watcher, request};
use crate::discovery::cache;
use crate::discovery::services::{Applied, Refusal};

impl Watcher {
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

    /// Applies one update and answers it; returns whether the state changed.
    pub(super) fn on_update(
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
    pub(super) async fn after_update(&mut self, pending: &HashSet<ServiceKey>, changed: bool) {
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
