//! The DNS fallback: cached answers by service, bounded, with short
//! positive and negative lifetimes. Services come from `Host` headers, so a
//! full cache drops its expired answers, or else the eighth expiring first
//! (counted in `levee_state_evictions_total{table="dns"}`, their
//! `levee_endpoints` series removed).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use levee_proto::policy::ServiceKey;
use tokio::time::Instant;

use super::{dns_host, no_endpoints};
use crate::errors::ProxyError;
use crate::metrics::{Metrics, StateTable};
use crate::recency;

/// How long answers are kept, and how many.
#[derive(Clone, Copy, Debug)]
pub struct DnsConfig {
    /// How long a successful answer is reused.
    pub positive_ttl: Duration,
    /// How long a failure is reused (so a bad name does not hammer the resolver).
    pub negative_ttl: Duration,
    /// Entries kept at most; expired ones, else the eighth expiring first, make room.
    pub capacity: usize,
    /// A lookup taking longer fails.
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            positive_ttl: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(1),
            capacity: 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Looks a host and port up; the system resolver unless a test swaps it.
pub type Lookup =
    Arc<dyn Fn(String, u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> + Send + Sync>;

fn system_lookup() -> Lookup {
    Arc::new(|host, port| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    })
}

/// Cached DNS answers by service.
pub struct DnsCache {
    config: DnsConfig,
    lookup: Lookup,
    entries: RwLock<HashMap<ServiceKey, Entry>>,
}

type Answer = Result<Arc<[SocketAddr]>, String>;

#[derive(Clone, Debug)]
struct Entry {
    host: String,
    answer: Answer,
    expires: Instant,
    /// Set while one caller refreshes an expired answer; until then the
    /// others keep using the old one instead of all asking DNS at once.
    refreshing_until: Option<Instant>,
}

/// One cached answer, as `/endpoints` shows it.
#[derive(Clone, Debug)]
pub struct CachedAnswer {
    pub service: ServiceKey,
    pub host: String,
    /// The addresses, or why the lookup failed.
    pub answer: Result<Arc<[SocketAddr]>, String>,
    /// Time left before the answer is looked up again.
    pub expires_in: Duration,
}

impl Default for DnsCache {
    fn default() -> Self {
        DnsCache::new(DnsConfig::default())
    }
}

impl fmt::Debug for DnsCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsCache")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DnsCache {
    /// A cache over the system resolver.
    pub fn new(config: DnsConfig) -> DnsCache {
        DnsCache::with_lookup(config, system_lookup())
    }

    /// A cache over `lookup` (tests count and script lookups with it).
    pub fn with_lookup(config: DnsConfig, lookup: Lookup) -> DnsCache {
        DnsCache {
            config,
            lookup,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The addresses of `service`: from the cache while fresh; once expired,
    /// the first caller looks it up again while the others use the old answer.
    pub async fn resolve(
        &self,
        service: &ServiceKey,
        own_namespace: &str,
        metrics: &Metrics,
    ) -> Result<Arc<[SocketAddr]>, ProxyError> {
        if let Some(answer) = self.cached(service) {
            return answer.map_err(|why| no_endpoints(service, why));
        }
        let host = dns_host(service, own_namespace).into_owned();
        let answer: Answer = match tokio::time::timeout(
            self.config.timeout,
            (self.lookup)(host.clone(), service.port),
        )
        .await
        {
            Ok(Ok(addresses)) if addresses.is_empty() => {
                Err(format!("DNS: {host} has no addresses"))
            }
            Ok(Ok(addresses)) => Ok(Arc::from(addresses)),
            Ok(Err(error)) => Err(format!("DNS lookup of {host} failed: {error}")),
            Err(_) => Err(format!(
                "DNS lookup of {host} timed out after {:?}",
                self.config.timeout
            )),
        };
        let label = service.to_string();
        match &answer {
            Ok(addresses) => metrics.set_endpoints(&label, "ready", addresses.len()),
            Err(why) => {
                tracing::debug!(service = %label, %why, "no endpoints");
                metrics.set_endpoints(&label, "ready", 0);
            }
        }
        let ttl = if answer.is_ok() {
            self.config.positive_ttl
        } else {
            self.config.negative_ttl
        };
        let entry = Entry {
            host,
            answer: answer.clone(),
            expires: crate::deadline::deadline_after(Instant::now(), ttl),
            refreshing_until: None,
        };
        self.insert(service, entry, metrics);
        answer.map_err(|why| no_endpoints(service, why))
    }

    /// The answer to use now, or `None` when the caller must look it up
    /// (nothing cached, or expired and nobody refreshing it yet).
    fn cached(&self, service: &ServiceKey) -> Option<Answer> {
        let now = Instant::now();
        let usable = |entry: &Entry| {
            entry.expires > now || entry.refreshing_until.is_some_and(|until| until > now)
        };
        {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            match entries.get(service) {
                None => return None,
                Some(entry) if usable(entry) => return Some(entry.answer.clone()),
                Some(_) => {}
            }
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get_mut(service)?;
        if usable(entry) {
            return Some(entry.answer.clone());
        }
        // This caller refreshes; a refresh that never finishes (its request
        // was dropped) is given up after the lookup timeout.
        entry.refreshing_until = Some(crate::deadline::deadline_after(now, self.config.timeout));
        None
    }

    /// Stores `entry`; when full, drops the expired entries, or else the
    /// eighth expiring first (one pass per batch, not per insert).
    fn insert(&self, service: &ServiceKey, entry: Entry, metrics: &Metrics) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if !entries.contains_key(service) && entries.len() >= self.config.capacity {
            let now = Instant::now();
            let mut evict: Vec<ServiceKey> = entries
                .iter()
                .filter(|(_, e)| e.expires <= now)
                .map(|(key, _)| key.clone())
                .collect();
            if evict.is_empty() {
                evict = recency::oldest(
                    entries.iter().map(|(key, e)| (key.clone(), e.expires)),
                    recency::batch(self.config.capacity),
                );
            }
            for key in &evict {
                entries.remove(key);
                metrics.remove_endpoints(&key.to_string());
            }
            metrics
                .state_evictions(StateTable::Dns)
                .inc_by(evict.len() as u64);
        }
        entries.insert(service.clone(), entry);
    }

    /// Every cached answer, fresh or not, sorted by service.
    pub fn answers(&self) -> Vec<CachedAnswer> {
        let now = Instant::now();
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let mut answers: Vec<CachedAnswer> = entries
            .iter()
            .map(|(service, entry)| CachedAnswer {
                service: service.clone(),
                host: entry.host.clone(),
                answer: entry.answer.clone(),
                expires_in: entry.expires.saturating_duration_since(now),
            })
            .collect();
        answers.sort_by(|a, b| a.service.cmp(&b.service));
        answers
    }
}
