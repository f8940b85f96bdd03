//! Counters of one flaky instance, so tests can count upstream attempts
//! (in-process via [`super::FlakyUpstream::stats`], or `GET /__flaky/stats`).

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use serde::{Deserialize, Serialize};

#[derive(Default)]
pub(crate) struct Stats {
    requests: AtomicU64,
    grpc_requests: AtomicU64,
    injected_failures: AtomicU64,
    resets: AtomicU64,
    connections: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    by_path: Mutex<BTreeMap<String, u64>>,
}

/// A copy of an instance's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Requests received (HTTP and gRPC; not `/__flaky/stats`).
    pub requests: u64,
    pub grpc_requests: u64,
    /// Requests answered with an injected HTTP status or gRPC code.
    pub injected_failures: u64,
    /// Connections reset on purpose.
    pub resets: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// Requests whose handler is running now (delays included).
    pub in_flight: u64,
    /// The most requests ever in flight at once.
    pub max_in_flight: u64,
    /// Requests per path.
    pub by_path: BTreeMap<String, u64>,
}

/// Counts a request as in flight until dropped.
pub(crate) struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl Stats {
    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
    }

    pub(crate) fn request(&self, path: &str, grpc: bool) -> InFlight<'_> {
        self.requests.fetch_add(1, Relaxed);
        if grpc {
            self.grpc_requests.fetch_add(1, Relaxed);
        }
        *self
            .by_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(path.to_owned())
            .or_default() += 1;
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Relaxed);
        InFlight(self)
    }

    pub(crate) fn injected_failure(&self) {
        self.injected_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn reset(&self) {
        self.resets.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Relaxed),
            grpc_requests: self.grpc_requests.load(Relaxed),
            injected_failures: self.injected_failures.load(Relaxed),
            resets: self.resets.load(Relaxed),
            connections: self.connections.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            max_in_flight: self.max_in_flight.load(Relaxed),
            by_path: self
                .by_path
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}
