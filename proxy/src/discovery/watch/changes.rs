//! Subscription changes from the outbound path ([`Change`]): a new
//! destination is subscribed on the stream; a dropped one is unsubscribed
//! and everything the proxy holds for it (policy, endpoints, held
//! endpoints, its entry in the policy cache) is forgotten, so discovered
//! state stays as bounded as the destinations table.
//!
//! An update already on its way when the proxy unsubscribed crosses the
//! `Unsubscribe`: it is ignored quietly (no state, no NACK) while the key is
//! in [`Watcher::unsubscribed`], which only lasts for the stream (a new
//! stream's hello no longer names the service) and is bounded.

use std::collections::HashSet;

use levee_proto::policy::ServiceKey;
use levee_proto::v1 as pb;
use levee_proto::v1::watch_request::Kind as Request;
use tokio::sync::mpsc;

use super::{Watcher, request};
use crate::subscriptions::Change;

/// Keys remembered as unsubscribed on one stream at most (then the memory
/// starts over: a very late crossing update is NACKed as unsolicited).
pub(super) const MAX_UNSUBSCRIBED: usize = 4096;

impl Watcher {
    /// Applies `change`, then every change already queued behind it; tells
    /// the control plane when a stream is up (`tx`). Returns whether the
    /// proxy's state changed (a service with state was dropped).
    pub(super) fn on_changes(
        &mut self,
        change: Change,
        changes: &mut mpsc::UnboundedReceiver<Change>,
        tx: Option<&mpsc::UnboundedSender<pb::WatchRequest>>,
        pending: &mut HashSet<ServiceKey>,
    ) -> bool {
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        let mut subscribe_addresses = Vec::new();
        let mut unsubscribe_addresses = Vec::new();
        let mut changed = false;
        let mut next = Some(change);
        while let Some(change) = next {
            match change {
                Change::Subscribe(key) => {
                    self.unsubscribed.remove(&key);
                    if self.subscribed.insert(key.clone()) {
                        tracing::debug!(service = %key, "subscribing");
                        subscribe.push(key);
                    }
                }
                Change::Unsubscribe(key) => {
                    if self.subscribed.remove(&key) {
                        tracing::debug!(service = %key, "unsubscribing");
                        changed |= self.forget(&key);
                        pending.remove(&key);
                        if self.unsubscribed.len() >= MAX_UNSUBSCRIBED {
                            self.unsubscribed.clear();
                        }
                        self.unsubscribed.insert(key.clone());
                        if let Some(i) = subscribe.iter().position(|k| k == &key) {
                            // Subscribed and dropped before the stream heard of it.
                            subscribe.remove(i);
                        } else {
                            unsubscribe.push(key);
                        }
                    }
                }
                Change::SubscribeAddress(addr) => {
                    unsubscribe_addresses.retain(|a| *a != addr);
                    subscribe_addresses.push(addr.to_string());
                }
                Change::UnsubscribeAddress(addr) => {
                    let text = addr.to_string();
                    subscribe_addresses.retain(|a| *a != text);
                    unsubscribe_addresses.push(addr);
                }
            }
            next = changes.try_recv().ok();
        }
        if let Some(tx) = tx {
            // Drops first: a key dropped and met again is in both lists and
            // must be subscribed anew (the control plane then sends a fresh
            // first update; a plain subscribe of a key it has is a no-op).
            if !unsubscribe.is_empty() || !unsubscribe_addresses.is_empty() {
                let services = unsubscribe.iter().map(pb::ServiceRef::from).collect();
                let addresses = unsubscribe_addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let _ = tx.send(request(Request::Unsubscribe(pb::Unsubscribe {
                    services,
                    addresses,
                })));
            }
            if !subscribe.is_empty() || !subscribe_addresses.is_empty() {
                let services = subscribe.iter().map(pb::ServiceRef::from).collect();
                let _ = tx.send(request(Request::Subscribe(pb::Subscribe {
                    services,
                    addresses: subscribe_addresses,
                })));
            }
        }
        changed
    }

    /// [`Watcher::on_changes`] while no stream is up (the next hello carries
    /// the result); a dropped service's state leaves the config at once.
    pub(super) fn offline_changes(
        &mut self,
        change: Change,
        changes: &mut mpsc::UnboundedReceiver<Change>,
    ) {
        let mut none = HashSet::new();
        if self.on_changes(change, changes, None, &mut none) {
            self.dirty = true;
            if self.shared.is_ready() {
                let source = self.installed_source.clone().unwrap_or_default();
                self.install(source);
            }
        }
    }

    /// Drops what the proxy holds for `key`; returns whether it held state.
    fn forget(&mut self, key: &ServiceKey) -> bool {
        let held = self.held.remove(key).is_some();
        if let Some(cached) = &mut self.cached {
            cached.remove(key);
        }
        self.services.remove(key) || held
    }

    /// Whether `key` was unsubscribed on this stream (an update for it may
    /// still be on its way).
    pub(super) fn recently_unsubscribed(&self, key: &ServiceKey) -> bool {
        self.unsubscribed.contains(key)
    }
}
