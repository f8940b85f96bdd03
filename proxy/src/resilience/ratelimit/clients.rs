//! The inbound rate limit: one bucket for every caller together, or with
//! `perClient` one bucket per client IP address, kept in a bounded table.
//!
//! The table holds at most a fixed number of clients (one count over all
//! shards, so `capacity` clients fit however the hash spreads them), spread
//! over shards (each its own small mutex, chosen by a keyed hash so no
//! client can aim at one shard). A client whose bucket is full again is
//! idle and can be forgotten without changing anything; while the table is
//! full, a newcomer makes every shard drop its idle clients (at most once a
//! second for the whole table). When there is still no room, newcomers
//! share one overflow bucket with the per-client limit: a flood of distinct addresses neither
//! grows memory nor pushes out the clients already known.
//! Idle clients dropped count in `levee_state_evictions_total{table="clients"}`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use levee_proto::policy::EffectiveRateLimit;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use super::RateLimiter;
use crate::errors::{ErrorKind, ProxyError, Quota};
use crate::metrics::{Direction, Metrics, StateTable};

/// Clients remembered at most, over all shards.
pub const MAX_CLIENTS: usize = 65_536;
const SHARDS: usize = 16;
/// A full table looks for idle clients at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Buckets keyed by client address, bounded in number.
#[derive(Debug)]
pub struct ClientTable {
    cfg: EffectiveRateLimit,
    /// Clients remembered at most, over all shards.
    capacity: usize,
    /// Clients remembered now, over all shards (a slot is taken before a
    /// client is inserted, so concurrent shards never exceed `capacity`).
    len: AtomicUsize,
    /// When the table was made, and (in milliseconds since then) when a
    /// newcomer last swept it.
    created: Instant,
    swept_ms: AtomicU64,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    /// Shared by clients that find their shard full.
    overflow: RateLimiter,
    /// `levee_state_evictions_total{table="clients"}`.
    evicted: Counter,
}

#[derive(Debug)]
struct Shard {
    clients: HashMap<IpAddr, RateLimiter>,
}

impl ClientTable {
    /// A table for at most `capacity` clients (at least one); idle clients
    /// dropped are counted in `evicted`.
    pub fn new(cfg: &EffectiveRateLimit, capacity: usize, evicted: Counter) -> ClientTable {
        let now = Instant::now();
        ClientTable {
            cfg: *cfg,
            capacity: capacity.max(1),
            len: AtomicUsize::new(0),
            created: now,
            swept_ms: AtomicU64::new(0),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        clients: HashMap::new(),
                    })
                })
                .collect(),
            overflow: RateLimiter::new(cfg),
            evicted,
        }
    }

    /// Admits one request from `client`.
    pub fn check(&self, client: IpAddr) -> Result<(), Quota> {
        let index = (self.hasher.hash_one(client) % SHARDS as u64) as usize;
        let mut shard = self.lock(index);
        if let Some(bucket) = shard.clients.get(&client) {
            return bucket.check();
        }
        if !self.take_slot() {
            // Full: drop idle clients in every shard (at most once a second
            // for the whole table), this shard's lock released first so
            // shards are never locked two at a time.
            drop(shard);
            if self.sweep_due() {
                for i in 0..SHARDS {
                    self.sweep(&mut self.lock(i));
                }
            }
            if !self.take_slot() {
                return self.overflow.check();
            }
            shard = self.lock(index);
            if let Some(bucket) = shard.clients.get(&client) {
                // Inserted meanwhile by another request of this client.
                self.len.fetch_sub(1, Ordering::AcqRel);
                return bucket.check();
            }
        }
        let bucket = RateLimiter::new(&self.cfg);
        let verdict = bucket.check();
        shard.clients.insert(client, bucket);
        verdict
    }

    fn lock(&self, index: usize) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this caller should sweep the table: at most once a second,
    /// so a flood of newcomers to a table full of active clients does not
    /// lock every shard per request.
    fn sweep_due(&self) -> bool {
        let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.swept_ms.load(Ordering::Acquire);
        now.saturating_sub(last) >= SWEEP_EVERY.as_millis() as u64
            && self
                .swept_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Drops `shard`'s idle clients.
    fn sweep(&self, shard: &mut Shard) {
        let before = shard.clients.len();
        shard.clients.retain(|_, bucket| !bucket.is_idle());
        let dropped = before - shard.clients.len();
        self.len.fetch_sub(dropped, Ordering::AcqRel);
        self.evicted.inc_by(dropped as u64);
    }

    /// Takes one of the table's `capacity` slots for a new client, if one
    /// is free.
    fn take_slot(&self) -> bool {
        self.len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Clients remembered now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
enum Buckets {
    Total(RateLimiter),
    PerClient(ClientTable),
}

/// The inbound admission rate limit of the local service.
#[derive(Debug)]
pub struct InboundRateLimit {
    cfg: EffectiveRateLimit,
    buckets: Buckets,
    service: String,
    /// `levee_rejected_total{direction="inbound",reason="rate-limited"}`.
    rejected: Counter,
}

impl InboundRateLimit {
    pub fn new(cfg: &EffectiveRateLimit, service: &str, metrics: &Metrics) -> Self {
        Self::with_capacity(cfg, service, metrics, MAX_CLIENTS)
    }

    /// As [`InboundRateLimit::new`] with a per-client table of `capacity`.
    pub fn with_capacity(
        cfg: &EffectiveRateLimit,
        service: &str,
        metrics: &Metrics,
        capacity: usize,
    ) -> Self {
        let buckets = if cfg.per_client {
            Buckets::PerClient(ClientTable::new(
                cfg,
                capacity,
                metrics.state_evictions(StateTable::Clients),
            ))
        } else {
            Buckets::Total(RateLimiter::new(cfg))
        };
        InboundRateLimit {
            cfg: *cfg,
            buckets,
            service: service.to_owned(),
            rejected: metrics.rejected(
                Direction::Inbound,
                service,
                ErrorKind::RateLimited.as_str(),
            ),
        }
    }

    /// Admits one request from `client` (`None`: unknown, counted as one
    /// shared client), or returns the `429 rate-limited` error.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), ProxyError> {
        let verdict = match (&self.buckets, client) {
            (Buckets::Total(bucket), _) => bucket.check(),
            (Buckets::PerClient(table), Some(ip)) => table.check(ip),
            (Buckets::PerClient(table), None) => table.overflow.check(),
        };
        verdict.map_err(|quota| {
            self.rejected.inc();
            let whose = if self.cfg.per_client {
                "per-client "
            } else {
                ""
            };
            ProxyError::new(
                ErrorKind::RateLimited,
                &*self.service,
                format!(
                    "over the inbound {whose}rate limit of {} requests per second",
                    quota.limit
                ),
            )
            .with_retry_after(quota.reset)
            .with_quota(quota)
        })
    }
}
