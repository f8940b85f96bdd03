//! The outbound path's door to discovery: [`Subscriptions`] lives in
//! [`crate::state::Shared`]. The first request to a destination subscribes
//! it (a set lookup under a read lock on every later request) and waits a
//! short while for the control plane's first answer, so that first request
//! already uses the service's policy and endpoints.
//!
//! Static mode never enables it: [`Subscriptions::discovered`] returns at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use levee_proto::policy::ServiceKey;
use tokio::sync::{Notify, mpsc};

/// At most this many destinations are subscribed; more (a client sending
/// random `Host` headers) run on defaults and DNS.
pub const MAX_SUBSCRIPTIONS: usize = 4096;

/// How long a first request to a new destination waits for its first update
/// while the control plane is connected.
pub const FIRST_UPDATE_WAIT: Duration = Duration::from_secs(2);

/// One destination's "has an answer" flag.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    done: AtomicBool,
    notify: Notify,
}

impl Settled {
    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// The destinations this proxy has met, and the channel to the watch task.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Set once by the watch task's start; unset in static mode.
    sender: OnceLock<mpsc::UnboundedSender<ServiceKey>>,
    services: RwLock<HashMap<ServiceKey, Arc<Settled>>>,
    /// Whether the stream is up (only then is waiting for a first update useful).
    connected: AtomicBool,
    /// Logged once when [`MAX_SUBSCRIPTIONS`] is reached.
    full_logged: AtomicBool,
}

impl Subscriptions {
    /// Turns subscriptions on; returns the receiving end for the watch task,
    /// or `None` if they were already on.
    pub(crate) fn enable(&self) -> Option<mpsc::UnboundedReceiver<ServiceKey>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.sender.set(tx).ok().map(|()| rx)
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    /// Subscribes `service` if it is new, then waits (up to
    /// [`FIRST_UPDATE_WAIT`], and only while connected) for its first update.
    /// Returns at once in static mode and for known destinations.
    pub async fn discovered(&self, service: &ServiceKey) {
        self.discovered_while(service, false).await;
    }

    /// [`Subscriptions::discovered`]; `starting` (the proxy has no first
    /// config yet) waits also while disconnected: the first connection
    /// attempt, or the policy cache installed when it fails, answers soon,
    /// and a request let through before would run on no config at all.
    pub async fn discovered_while(&self, service: &ServiceKey, starting: bool) {
        let Some(sender) = self.sender.get() else {
            return;
        };
        // IP literals and external names have no namespace: nothing to discover.
        if service.namespace.is_empty() {
            return;
        }
        let known = self
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(service)
            .cloned();
        let settled = match known {
            Some(settled) if settled.is_done() => return,
            Some(settled) => settled,
            None => match self.insert(service, sender) {
                Some(settled) => settled,
                None => return,
            },
        };
        if !starting && !self.connected.load(Ordering::Acquire) {
            return;
        }
        let wait = async {
            loop {
                let notified = settled.notify.notified();
                if settled.is_done() {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(FIRST_UPDATE_WAIT, wait).await;
    }

    /// Adds `service` and tells the watch task; `None` when full.
    fn insert(
        &self,
        service: &ServiceKey,
        sender: &mpsc::UnboundedSender<ServiceKey>,
    ) -> Option<Arc<Settled>> {
        let mut services = self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(settled) = services.get(service) {
            return Some(settled.clone());
        }
        if services.len() >= MAX_SUBSCRIPTIONS {
            if !self.full_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max = MAX_SUBSCRIPTIONS,
                    "too many destinations: new ones are not subscribed"
                );
            }
            return None;
        }
        let settled = Arc::new(Settled::default());
        services.insert(service.clone(), settled.clone());
        // The watch task only stops at shutdown; a lost key then does not matter.
        let _ = sender.send(service.clone());
        Some(settled)
    }

    /// Records known destinations (from the cache) without notifying the
    /// watch task, which already has them.
    pub(crate) fn preload(&self, keys: impl IntoIterator<Item = ServiceKey>) {
        let mut services = self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            services.entry(key).or_default();
        }
    }

    /// Marks `service` as answered (its first update arrived, was refused,
    /// or came from the cache): waiting requests go on.
    pub(crate) fn settle(&self, service: &ServiceKey) {
        let settled = self
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(service)
            .cloned();
        if let Some(settled) = settled {
            settled.set();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ServiceKey {
        ServiceKey {
            name: name.into(),
            namespace: "default".into(),
            port: 80,
        }
    }

    #[tokio::test]
    async fn static_mode_never_subscribes() {
        let subs = Subscriptions::default();
        subs.discovered(&key("a")).await;
        assert!(subs.services.read().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn first_sight_subscribes_once_and_waits_for_the_answer() {
        let subs = Arc::new(Subscriptions::default());
        let mut rx = subs.enable().expect("first enable");
        assert!(subs.enable().is_none());
        subs.set_connected(true);
        let waiter = {
            let subs = subs.clone();
            tokio::spawn(async move { subs.discovered(&key("a")).await })
        };
        assert_eq!(rx.recv().await, Some(key("a")));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits for the first update");
        subs.settle(&key("a"));
        waiter.await.expect("waiter");
        subs.discovered(&key("a")).await;
        assert!(rx.try_recv().is_err(), "a known destination is not resent");
        // IP literals have no namespace and are not subscribed.
        let ip = ServiceKey {
            name: "127.0.0.1".into(),
            namespace: String::new(),
            port: 80,
        };
        subs.discovered(&ip).await;
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn before_a_first_config_a_cached_destination_waits_while_disconnected() {
        let subs = Arc::new(Subscriptions::default());
        let _rx = subs.enable();
        subs.preload([key("cached")]);
        // Starting, not connected yet: waits for the cache (or the control
        // plane) to settle it instead of running on no config.
        let waiter = {
            let subs = subs.clone();
            tokio::spawn(async move { subs.discovered_while(&key("cached"), true).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while starting");
        subs.settle(&key("cached"));
        waiter.await.expect("waiter");
        // Still bounded when nothing answers.
        let start = tokio::time::Instant::now();
        subs.discovered_while(&key("nobody"), true).await;
        assert_eq!(start.elapsed(), FIRST_UPDATE_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_first_update_stops_waiting_after_the_bound() {
        let subs = Subscriptions::default();
        let _rx = subs.enable();
        subs.set_connected(true);
        let start = tokio::time::Instant::now();
        subs.discovered(&key("slow")).await;
        assert_eq!(start.elapsed(), FIRST_UPDATE_WAIT);
        // Disconnected: no waiting at all.
        subs.set_connected(false);
        let start = tokio::time::Instant::now();
        subs.discovered(&key("other")).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
