//! Subscriptions by destination address: in transparent mode the proxy
//! knows where a connection was going (`ip:port`), not a service name. The
//! first connection to an address subscribes it ([`AddressBook`], inside
//! [`super::Subscriptions`]); the control plane answers with the service
//! port that owns it (a virtual IP or an endpoint of the service) or
//! "unknown", and again whenever that changes.
//!
//! The answers are read on every redirected request, so the map is an
//! `ArcSwap` snapshot: a lookup is one atomic load, a hash lookup and one
//! relaxed store (the least-recently-used stamp), no lock. Only a new
//! address copies the map (under a writers' mutex), which is rare next to
//! requests and bounded by the capacity. A full book drops its least
//! recently used eighth ([`crate::recency`]), unsubscribes them and counts
//! them in `levee_state_evictions_total{table="addresses"}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, ArcSwapOption};
use levee_proto::policy::ServiceKey;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, mpsc};

use super::change::Change;
use crate::recency::{self, Clock, Stamp};

/// Addresses kept at most by default (`--max-destinations` sets it).
pub const MAX_ADDRESSES: usize = 4096;

/// One address: its answer (once the control plane gave one) and its last use.
#[derive(Debug)]
pub struct AddressAnswer {
    /// The owning service port; `None`: unknown (or not answered yet).
    owner: ArcSwapOption<ServiceKey>,
    answered: AtomicBool,
    /// Dropped from the book (a waiter stops waiting).
    dropped: AtomicBool,
    notify: Notify,
    used: Stamp,
}

impl AddressAnswer {
    fn new(clock: &Clock) -> Self {
        AddressAnswer {
            owner: ArcSwapOption::empty(),
            answered: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            notify: Notify::new(),
            used: Stamp::new(clock),
        }
    }

    /// Whether the control plane has answered.
    pub fn is_answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }

    /// The owner, as last answered (`None`: unknown or unanswered).
    pub fn owner(&self) -> Option<Arc<ServiceKey>> {
        self.owner.load_full()
    }

    /// Waits until answered or dropped.
    pub async fn answered(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_answered() || self.dropped.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// What a lookup found.
pub enum Lookup {
    /// The answer is in: the owner, or `None` (unknown: passthrough).
    Answered(Option<Arc<ServiceKey>>),
    /// Subscribed, no answer yet.
    Pending(Arc<AddressAnswer>),
    /// Never met (or dropped since).
    Missing,
}

#[derive(Debug)]
struct Bounds {
    capacity: usize,
    evictions: Option<Counter>,
}

/// The addresses met on redirected connections and their answers.
#[derive(Debug)]
pub struct AddressBook {
    entries: ArcSwap<HashMap<SocketAddr, Arc<AddressAnswer>>>,
    /// Serialises writers (insert, evict); readers never take it.
    writing: Mutex<Bounds>,
    clock: Clock,
}

impl Default for AddressBook {
    fn default() -> Self {
        AddressBook {
            entries: ArcSwap::default(),
            writing: Mutex::new(Bounds {
                capacity: MAX_ADDRESSES,
                evictions: None,
            }),
            clock: Clock::default(),
        }
    }
}

impl AddressBook {
    /// Bounds the book at `capacity`; drops count in `evictions`.
    pub fn limit(&self, capacity: usize, evictions: Counter) {
        let mut bounds = self.write();
        bounds.capacity = capacity.max(1);
        bounds.evictions = Some(evictions);
    }

    /// What the book knows about `addr` (lock-free; marks it used).
    pub fn lookup(&self, addr: &SocketAddr) -> Lookup {
        let entries = self.entries.load();
        let Some(found) = entries.get(addr) else {
            return Lookup::Missing;
        };
        found.used.touch(&self.clock);
        if found.is_answered() {
            Lookup::Answered(found.owner())
        } else {
            Lookup::Pending(found.clone())
        }
    }

    /// Adds `addr` (unless present) and tells the watch task; a full book
    /// first drops its least recently used eighth.
    pub(super) fn insert(
        &self,
        addr: SocketAddr,
        sender: &mpsc::UnboundedSender<Change>,
    ) -> Arc<AddressAnswer> {
        let bounds = self.write();
        let current = self.entries.load();
        if let Some(found) = current.get(&addr) {
            return found.clone();
        }
        let mut next: HashMap<SocketAddr, Arc<AddressAnswer>> = (**current).clone();
        if next.len() >= bounds.capacity {
            let oldest = recency::oldest(
                next.iter().map(|(a, e)| (*a, e.used.get())),
                recency::batch(bounds.capacity),
            );
            if let Some(evictions) = &bounds.evictions {
                evictions.inc_by(oldest.len() as u64);
            }
            for gone in oldest {
                if let Some(entry) = next.remove(&gone) {
                    entry.dropped.store(true, Ordering::Release);
                    entry.notify.notify_waiters();
                    let _ = sender.send(Change::UnsubscribeAddress(gone));
                }
            }
        }
        let entry = Arc::new(AddressAnswer::new(&self.clock));
        next.insert(addr, entry.clone());
        self.entries.store(Arc::new(next));
        // Sent under the writers' lock: the watch task sees changes in order.
        let _ = sender.send(Change::SubscribeAddress(addr));
        entry
    }

    /// Records the control plane's answer for `addr` (ignored if the book
    /// no longer holds it); wakes the connections waiting for it.
    pub(crate) fn answer(&self, addr: &SocketAddr, owner: Option<ServiceKey>) {
        let entries = self.entries.load();
        let Some(entry) = entries.get(addr) else {
            return;
        };
        entry.owner.store(owner.map(Arc::new));
        entry.answered.store(true, Ordering::Release);
        entry.notify.notify_waiters();
    }

    /// Every address in the book (a new stream subscribes them all again).
    pub(crate) fn addresses(&self) -> Vec<SocketAddr> {
        self.entries.load().keys().copied().collect()
    }

    /// Addresses held now.
    pub fn len(&self) -> usize {
        self.entries.load().len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write(&self) -> std::sync::MutexGuard<'_, Bounds> {
        self.writing.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
