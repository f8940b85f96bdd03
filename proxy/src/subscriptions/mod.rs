//! The outbound path's door to discovery: [`Subscriptions`] lives in
//! [`crate::state::Shared`]. The first request to a destination subscribes
//! it (later requests check one flag of the [`Subscription`] their
//! destination holds) and waits a short while for the control plane's first
//! answer, so that first request already uses the service's policy and
//! endpoints.
//!
//! Subscriptions are bounded like the destinations that make them: the
//! outbound table unsubscribes a destination it evicts
//! ([`Subscriptions::unsubscribe`]), and the set itself holds at most
//! [`subscription_capacity`] of `--max-destinations` (a safety net: a full
//! set drops its oldest subscriptions, counted in
//! `levee_state_evictions_total{table="subscriptions"}`). Each change goes to
//! the watch task as a [`Change`], in the order the set saw it.
//!
//! Static mode never enables it: [`Subscriptions::discovered`] returns at once.
//!
//! The table sits below both of its users: `state::Shared` holds it and
//! `discovery` (the watch task) drains its [`Change`]s, and neither is
//! imported here. [`addresses`] is the same for destinations met by
//! address (transparent mode); `change.rs` holds [`Change`], which both
//! tables send.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use levee_proto::policy::ServiceKey;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, mpsc};

pub mod addresses;
mod change;

use addresses::{AddressBook, Lookup};
pub use change::Change;

/// Subscriptions kept at most before `--max-destinations` sets the bound
/// ([`subscription_capacity`] of the default 4096 destinations is more).
pub const MAX_SUBSCRIPTIONS: usize = 4096;

/// The fewest subscriptions kept, whatever `--max-destinations` says.
const MIN_SUBSCRIPTIONS: usize = 64;

/// Subscriptions kept at most for a table of `max_destinations`: twice the
/// table (every destination kept is subscribed, and the policy cache and
/// the proxy's own service add some), at least [`MIN_SUBSCRIPTIONS`].
pub fn subscription_capacity(max_destinations: usize) -> usize {
    max_destinations.saturating_mul(2).max(MIN_SUBSCRIPTIONS)
}

/// How long a first request to a new destination waits for its first update
/// while the control plane is connected.
pub const FIRST_UPDATE_WAIT: Duration = Duration::from_secs(2);

/// One destination's subscription: whether it has an answer yet, and
/// whether it was dropped since (then the next request subscribes again).
#[derive(Debug, Default)]
pub struct Subscription {
    done: AtomicBool,
    dropped: AtomicBool,
    notify: Notify,
    /// Order of subscribing: a full set drops the smallest first.
    seq: u64,
    /// The proxy's own service: never dropped (the inbound side needs it).
    pinned: bool,
}

impl Subscription {
    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether it still stands (false once unsubscribed).
    pub fn is_live(&self) -> bool {
        !self.dropped.load(Ordering::Acquire)
    }

    fn drop_it(&self) {
        self.dropped.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

#[derive(Debug)]
struct Table {
    services: HashMap<ServiceKey, Arc<Subscription>>,
    next_seq: u64,
    capacity: usize,
    /// `levee_state_evictions_total{table="subscriptions"}` once configured.
    evictions: Option<Counter>,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            services: HashMap::new(),
            next_seq: 0,
            capacity: MAX_SUBSCRIPTIONS,
            evictions: None,
        }
    }
}

impl Table {
    fn add(&mut self, service: ServiceKey, pinned: bool) -> Arc<Subscription> {
        self.next_seq += 1;
        let subscription = Arc::new(Subscription {
            seq: self.next_seq,
            pinned,
            ..Subscription::default()
        });
        self.services.insert(service, subscription.clone());
        subscription
    }
}

/// The destinations this proxy has met, and the channel to the watch task.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Set once by the watch task's start; unset in static mode.
    sender: OnceLock<mpsc::UnboundedSender<Change>>,
    table: RwLock<Table>,
    /// Whether the stream is up (only then is waiting for a first update useful).
    connected: AtomicBool,
    /// What destinations that need no subscription hold (always live).
    unneeded: OnceLock<Arc<Subscription>>,
    /// Destination addresses and the service ports owning them.
    pub addresses: AddressBook,
}

impl Subscriptions {
    /// Turns subscriptions on; returns the receiving end for the watch task,
    /// or `None` if they were already on.
    pub(crate) fn enable(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.sender.set(tx).ok().map(|()| rx)
    }

    /// Bounds the set at `capacity` (see [`subscription_capacity`]); a full
    /// set's drops count in `evictions`.
    pub fn limit(&self, capacity: usize, evictions: Counter) {
        let mut table = self.write();
        table.capacity = capacity.max(1);
        table.evictions = Some(evictions);
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    /// Whether the stream is up (first answers are awaited only then).
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Subscriptions in the set now.
    pub fn len(&self) -> usize {
        self.read().services.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Subscribes `service` if it is new, then waits (up to
    /// [`FIRST_UPDATE_WAIT`], and only while connected) for its first update.
    /// Returns at once in static mode and for known destinations.
    pub async fn discovered(&self, service: &ServiceKey) -> Arc<Subscription> {
        self.discovered_while(service, false).await
    }

    /// [`Subscriptions::discovered`]; `starting` (the proxy has no first
    /// config yet) waits also while disconnected: the first connection
    /// attempt, or the policy cache installed when it fails, answers soon,
    /// and a request let through before would run on no config at all.
    /// The returned subscription says when it was dropped (a caller keeping
    /// it then calls again).
    pub async fn discovered_while(
        &self,
        service: &ServiceKey,
        starting: bool,
    ) -> Arc<Subscription> {
        let Some(sender) = self.sender.get() else {
            return self.unneeded();
        };
        // IP literals and external names have no namespace: nothing to discover.
        if service.namespace.is_empty() {
            return self.unneeded();
        }
        let known = self.read().services.get(service).cloned();
        let subscription = match known {
            Some(subscription) if subscription.is_done() => return subscription,
            Some(subscription) => subscription,
            None => self.insert(service, sender),
        };
        if !starting && !self.connected.load(Ordering::Acquire) {
            return subscription;
        }
        let wait = async {
            loop {
                let notified = subscription.notify.notified();
                if subscription.is_done() || !subscription.is_live() {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(FIRST_UPDATE_WAIT, wait).await;
        subscription
    }

    /// The service port owning the destination address `addr`, as the
    /// control plane answers: known answers at once (no lock); a new
    /// address is subscribed, and while the stream is up its first answer
    /// is awaited for at most `wait`. `None`: unknown, not answered in
    /// time, or static mode (then the connection is passed through).
    pub async fn address_owner(&self, addr: SocketAddr, wait: Duration) -> Option<Arc<ServiceKey>> {
        let sender = self.sender.get()?;
        let pending = match self.addresses.lookup(&addr) {
            Lookup::Answered(owner) => return owner,
            Lookup::Pending(pending) => pending,
            Lookup::Missing => self.addresses.insert(addr, sender),
        };
        if !self.is_connected() {
            return None;
        }
        let _ = tokio::time::timeout(wait, pending.answered()).await;
        pending.owner()
    }

    fn unneeded(&self) -> Arc<Subscription> {
        self.unneeded
            .get_or_init(|| {
                let subscription = Subscription::default();
                subscription.set();
                Arc::new(subscription)
            })
            .clone()
    }

    /// Adds `service` and tells the watch task; a full set first drops its
    /// oldest eighth (the proxy's own service stays).
    fn insert(
        &self,
        service: &ServiceKey,
        sender: &mpsc::UnboundedSender<Change>,
    ) -> Arc<Subscription> {
        let mut table = self.write();
        if let Some(subscription) = table.services.get(service) {
            return subscription.clone();
        }
        if table.services.len() >= table.capacity {
            let batch = crate::recency::batch(table.capacity);
            let oldest = crate::recency::oldest(
                table
                    .services
                    .iter()
                    .filter(|(_, s)| !s.pinned)
                    .map(|(key, s)| (key.clone(), s.seq)),
                batch,
            );
            tracing::debug!(
                capacity = table.capacity,
                dropped = oldest.len(),
                "subscriptions full: dropping the oldest"
            );
            if let Some(evictions) = &table.evictions {
                evictions.inc_by(oldest.len() as u64);
            }
            for key in oldest {
                remove(&mut table, key, sender);
            }
        }
        let subscription = table.add(service.clone(), false);
        // Sent under the lock: the watch task sees changes in set order.
        // It only stops at shutdown; a lost change then does not matter.
        let _ = sender.send(Change::Subscribe(service.clone()));
        subscription
    }

    /// Unsubscribes `services` (destinations the outbound table no longer
    /// keeps): each is dropped from the set, its holders see it dropped,
    /// and the watch task unsubscribes it and forgets its state. The
    /// proxy's own service and unknown keys are left alone.
    pub fn unsubscribe<'a>(&self, services: impl IntoIterator<Item = &'a ServiceKey>) {
        let Some(sender) = self.sender.get() else {
            return;
        };
        let mut table = self.write();
        for service in services {
            if table.services.get(service).is_some_and(|s| !s.pinned) {
                remove(&mut table, service.clone(), sender);
            }
        }
    }

    /// Records known destinations (from the cache) without notifying the
    /// watch task, which already has them.
    pub(crate) fn preload(&self, keys: impl IntoIterator<Item = ServiceKey>) {
        let mut table = self.write();
        for key in keys {
            if !table.services.contains_key(&key) {
                table.add(key, false);
            }
        }
    }

    /// Records the proxy's own service: never dropped.
    pub(crate) fn pin(&self, key: ServiceKey) {
        self.write().add(key, true);
    }

    /// Subscribes another port of the proxy's own service, met after the
    /// start (a port an inbound connection was redirected from), pinned as
    /// the own service is: its `spec.inbound` keeps arriving. The inbound
    /// side bounds how many ([`crate::inbound::MAX_OTHER_PORTS`]). Nothing
    /// happens in static mode or for a key already in the set.
    pub fn pin_own_port(&self, key: ServiceKey) {
        let Some(sender) = self.sender.get() else {
            return;
        };
        let mut table = self.write();
        if table.services.contains_key(&key) {
            return;
        }
        table.add(key.clone(), true);
        let _ = sender.send(Change::Subscribe(key));
    }

    /// Marks `service` as answered (its first update arrived, was refused,
    /// or came from the cache): waiting requests go on.
    pub(crate) fn settle(&self, service: &ServiceKey) {
        let subscription = self.read().services.get(service).cloned();
        if let Some(subscription) = subscription {
            subscription.set();
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn remove(table: &mut Table, key: ServiceKey, sender: &mpsc::UnboundedSender<Change>) {
    if let Some(subscription) = table.services.remove(&key) {
        subscription.drop_it();
        let _ = sender.send(Change::Unsubscribe(key));
    }
}

#[cfg(test)]
mod tests;
