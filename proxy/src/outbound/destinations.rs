//! [`Destinations`]: the outbound side's table of destinations, one
//! [`Entry`] per target service, holding everything a request to it needs:
//! the [`Destination`] (label, resilience state, compiled routes with their
//! ready-built stacks and metric handles), the current [`View`] (route
//! table, endpoint answer) and whether its control-plane subscription is in
//! place.
//!
//! A request costs one table read (a read lock and an `Arc` clone, keyed by
//! the request's authority text, so no key is parsed or allocated) and one
//! snapshot load to check the view's version. The view is rebuilt only when
//! the snapshot version changed or a DNS answer is due for a re-check; only
//! then are the policy looked up, the routes recompiled (if the policy
//! changed) and the endpoints pushed into the balancer (if they changed).
//!
//! A transparent call whose authority names no known service reaches the
//! entry of the service discovery maps its original destination address to
//! ([`Destinations::service`], the address being one more way to the same
//! entry), else its original destination's own entry
//! ([`Destinations::original`]): the same table, keyed by the address.
//!
//! Memory is bounded (authorities come from the app's requests, so from
//! whoever can make it call out): at most `capacity` destinations
//! ([`MAX_DESTINATIONS`] by default, `--max-destinations`) and twice as many
//! spellings. A full table evicts its least recently used eighth
//! ([`crate::recency`]): hot destinations stay, and each evicted one takes
//! its metric series with it ([`Metrics::forget_destination`]) and its
//! control-plane subscription (with the policy and endpoints discovered for
//! it: [`crate::subscriptions::Subscriptions::unsubscribe`]), and is counted in
//! `levee_state_evictions_total{table="destinations"}`. Met again, it is
//! subscribed again and gets a fresh first answer.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use levee_proto::policy::{AppProtocol, ServiceKey};
use tokio::time::Instant;

use crate::errors::ProxyError;
use crate::forward::{EndpointService, Forwarder};
use crate::metrics::{Metrics, StateTable};
use crate::recency::{self, Clock, Stamp};
use crate::resilience::{Destination, RouteTable};
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::subscriptions::Subscription;

/// The `service` label of a transparent call to an unknown destination
/// (followed by its original address).
pub const PASSTHROUGH_PREFIX: &str = "passthrough:";

/// Destinations whose state is kept, by default (`--max-destinations`).
pub const MAX_DESTINATIONS: usize = 4096;
/// Spellings (authorities) kept per destination kept, on average.
const AUTHORITIES_PER_DESTINATION: usize = 2;

/// How often a DNS-sourced endpoint answer is asked for again (the DNS
/// cache decides whether that means a lookup).
const DNS_RECHECK: Duration = Duration::from_secs(1);

/// The outbound destinations met so far.
pub struct Destinations {
    shared: Arc<Shared>,
    forwarder: Arc<Forwarder>,
    /// Destinations kept at most.
    capacity: usize,
    /// Ticks for the entries' last-use stamps.
    clock: Clock,
    table: RwLock<Table>,
}

#[derive(Default)]
struct Table {
    /// Authorities as requests spell them; several may share one entry.
    by_authority: HashMap<Box<str>, Alias>,
    by_key: HashMap<ServiceKey, Arc<Entry>>,
}

/// One spelling of a destination.
struct Alias {
    entry: Arc<Entry>,
    used: Stamp,
}

/// One destination and what requests to it need.
pub struct Entry {
    pub key: ServiceKey,
    /// When a request last used it (least recently used ones are evicted).
    used: Stamp,
    pub destination: Destination,
    /// The current view (`None` until the first request builds it).
    view: ArcSwapOption<View>,
    /// The control-plane subscription (`None` before the first request;
    /// one that is no longer live is made again).
    subscription: ArcSwapOption<Subscription>,
    /// Serialises installing views, so the balancer's endpoints and the
    /// stored view always agree.
    installing: Mutex<()>,
}

/// What requests to a destination use under one snapshot version.
pub struct View {
    /// The snapshot version it was built from.
    version: u64,
    /// When a DNS-sourced answer is asked for again (`None`: static).
    recheck_at: Option<Instant>,
    pub routes: Arc<RouteTable>,
    /// The endpoint answer; `Ok` ones are in the balancer.
    pub endpoints: Result<Arc<[SocketAddr]>, ProxyError>,
    /// The port's declared protocol (`None`: learned per endpoint).
    pub app_protocol: Option<AppProtocol>,
}

impl Destinations {
    /// A table of at most `capacity` destinations (at least one).
    pub fn new(shared: Arc<Shared>, forwarder: Arc<Forwarder>, capacity: usize) -> Self {
        let subscriptions = crate::subscriptions::subscription_capacity(capacity.max(1));
        let evictions = shared.metrics.state_evictions(StateTable::Subscriptions);
        shared.subscriptions.limit(subscriptions, evictions);
        // Addresses lead to destinations: as many as the table keeps.
        let evictions = shared.metrics.state_evictions(StateTable::Addresses);
        shared
            .subscriptions
            .addresses
            .limit(capacity.max(1), evictions);
        Destinations {
            shared,
            forwarder,
            capacity: capacity.max(1),
            clock: Clock::default(),
            table: RwLock::new(Table::default()),
        }
    }

    /// The entry for `authority`, created on first use. `Err` when the
    /// authority names no valid service.
    pub fn get(&self, authority: &str) -> Result<Arc<Entry>, String> {
        if let Some(found) = self.spelled(authority) {
            return Ok(found);
        }
        let key = ServiceKey::from_authority(authority, &self.shared.namespace, 80)?;
        Ok(self.insert(authority, key, None))
    }

    /// The entry of the service port `key` (a transparent call's original
    /// destination that discovery mapped to it): the same entry an explicit
    /// call naming the service reaches (one table read when kept).
    pub fn service(&self, key: &ServiceKey) -> Arc<Entry> {
        {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = table.by_key.get(key) {
                entry.used.touch(&self.clock);
                return entry.clone();
            }
        }
        self.insert(&key.to_string(), key.clone(), None)
    }

    /// The entry of a transparent call's original destination `addr`, when
    /// its authority names no known service: the address as an IP-literal
    /// destination (its own endpoint, no DNS, no subscription), labelled
    /// [`PASSTHROUGH_PREFIX`]`<addr>` (unless an explicit call to the same
    /// IP literal created the entry first: one destination, one entry).
    pub fn original(&self, addr: SocketAddr) -> Arc<Entry> {
        // Not a valid authority (two colons), so no request spells it.
        let spelling = format!("{PASSTHROUGH_PREFIX}{addr}");
        if let Some(found) = self.spelled(&spelling) {
            return found;
        }
        let key = ServiceKey {
            name: addr.ip().to_string(),
            namespace: String::new(),
            port: addr.port(),
        };
        // No namespace: `Entry::discovered` subscribes nothing for it.
        self.insert(&spelling, key, Some(spelling.clone()))
    }

    /// The entry spelled `authority`, if kept (one read lock).
    pub fn spelled(&self, authority: &str) -> Option<Arc<Entry>> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let found = table.by_authority.get(authority)?;
        let now = self.clock.tick();
        found.used.set(now);
        found.entry.used.set(now);
        Some(found.entry.clone())
    }

    /// The entry of `key`, created (labelled `label`, else the key) if new,
    /// and recorded under the spelling `authority`.
    fn insert(&self, authority: &str, key: ServiceKey, label: Option<String>) -> Arc<Entry> {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let entry = match table.by_key.get(&key) {
            Some(entry) => {
                entry.used.touch(&self.clock);
                entry.clone()
            }
            None => {
                if table.by_key.len() >= self.capacity {
                    self.evict_destinations(&mut table);
                }
                let entry = Arc::new(self.entry(key.clone(), label));
                table.by_key.insert(key, entry.clone());
                entry
            }
        };
        let authorities = self.capacity.saturating_mul(AUTHORITIES_PER_DESTINATION);
        if !table.by_authority.contains_key(authority) && table.by_authority.len() >= authorities {
            // Only spellings go: their destinations stay.
            let batch = recency::batch(authorities);
            let evict = recency::oldest(
                table
                    .by_authority
                    .iter()
                    .map(|(a, alias)| (a.clone(), alias.used.get())),
                batch,
            );
            for authority in evict {
                table.by_authority.remove(&authority);
            }
        }
        let alias = Alias {
            entry: entry.clone(),
            used: Stamp::new(&self.clock),
        };
        table.by_authority.insert(authority.into(), alias);
        entry
    }

    /// Destinations kept now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_key
            .len()
    }

    /// Drops the least recently used destinations, their spellings and
    /// their metric series. Requests in flight keep their `Arc<Entry>`.
    fn evict_destinations(&self, table: &mut Table) {
        let batch = recency::batch(self.capacity);
        let evict = recency::oldest(
            table
                .by_key
                .iter()
                .map(|(key, e)| (key.clone(), e.used.get())),
            batch,
        );
        let snapshot = self.shared.snapshot.load();
        let mut labels = HashSet::with_capacity(evict.len());
        for key in &evict {
            if let Some(entry) = table.by_key.remove(key) {
                let static_endpoints = snapshot.endpoints.get(key).map(|a| a.len());
                forget(&self.shared.metrics, &entry, static_endpoints);
                labels.insert(entry.destination.label.clone());
            }
        }
        table
            .by_authority
            .retain(|_, alias| !labels.contains(&alias.entry.destination.label));
        self.shared.subscriptions.unsubscribe(&evict);
        self.shared
            .metrics
            .state_evictions(StateTable::Destinations)
            .inc_by(evict.len() as u64);
    }

    fn entry(&self, key: ServiceKey, label: Option<String>) -> Entry {
        let label = label.unwrap_or_else(|| key.to_string());
        let policy = self.shared.policy_for(&key);
        let endpoint = EndpointService::new(self.forwarder.clone(), label.as_str().into());
        let destination = Destination::new(&label, policy.as_ref(), &self.shared.metrics, endpoint);
        Entry {
            key,
            used: Stamp::new(&self.clock),
            destination,
            view: ArcSwapOption::empty(),
            subscription: ArcSwapOption::empty(),
            installing: Mutex::new(()),
        }
    }
}

/// Removes an evicted destination's metric series.
fn forget(metrics: &Metrics, entry: &Entry, static_endpoints: Option<usize>) {
    metrics.forget_destination(&entry.destination.label, static_endpoints);
}

impl Entry {
    /// In control-plane mode, subscribes the destination on its first
    /// request (and waits briefly for its first update); afterwards free.
    pub async fn discovered(&self, shared: &Shared) {
        if self
            .subscription
            .load()
            .as_ref()
            .is_some_and(|s| s.is_live())
        {
            return;
        }
        // Boxed: the first call only; later ones do not carry this future.
        let subscription = Box::pin(shared.discovered(&self.key)).await;
        self.subscription.store(Some(subscription));
    }

    /// The view for the current snapshot: the stored one while its version
    /// is current (and a DNS answer not due), else a fresh one.
    pub async fn view(&self, shared: &Shared) -> Arc<View> {
        let version = shared.snapshot.load().version;
        if let Some(view) = self.view.load().as_ref()
            && view.is_current(version)
        {
            return view.clone();
        }
        let snapshot = shared.snapshot.load_full();
        // Boxed: a rebuild (endpoint resolution included) is rare; requests
        // that find the view current do not carry its future.
        Box::pin(self.refresh(shared, &snapshot)).await
    }

    async fn refresh(&self, shared: &Shared, snapshot: &Snapshot) -> Arc<View> {
        let policy = snapshot.policy_for(&self.key);
        let routes = self.destination.routes_for(policy.as_ref());
        let endpoints = shared.resolve(&self.key).await;
        let recheck_at =
            crate::endpoints::from_dns(snapshot, &self.key).then(|| Instant::now() + DNS_RECHECK);
        let view = Arc::new(View {
            version: snapshot.version,
            recheck_at,
            routes,
            endpoints,
            app_protocol: snapshot.app_protocols.get(&self.key).copied(),
        });
        let _one_at_a_time = self
            .installing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = self.view.load().as_ref()
            && current.version > view.version
        {
            // A newer snapshot's view landed meanwhile: it stands.
            return current.clone();
        }
        if let Ok(addrs) = &view.endpoints {
            self.destination.balancer.set_endpoints(addrs);
        }
        self.view.store(Some(view.clone()));
        view
    }
}

impl View {
    fn is_current(&self, version: u64) -> bool {
        self.version == version && self.recheck_at.is_none_or(|at| Instant::now() < at)
    }
}

#[cfg(test)]
mod tests;
