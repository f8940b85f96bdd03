//! Endpoint breakers (outlier ejection): one breaker state machine per
//! endpoint of a service, the same one the service breaker uses. An endpoint
//! whose breaker is OPEN is ejected: [`EndpointHealth::is_available`] says
//! no and the balancer leaves it out. When its open time is over it turns
//! HALF_OPEN and is offered again; its next `halfOpenProbes` results decide
//! (all succeed → back in, any fails → ejected for longer).
//!
//! Never more than `maxEjectedPercent` of the endpoints (rounded down) are
//! ejected at once: a trip over the cap is refused and the endpoint stays in.
//! A lone endpoint is therefore never ejected at the default 50%; the
//! service breaker is what protects a service that is down as a whole.
//!
//! Availability has no side effect (the balancer asks about candidates it may
//! not pick); the endpoint the balancer chose is then let in by
//! [`EndpointHealth::begin`], which for a HALF_OPEN endpoint hands out one of
//! its `halfOpenProbes` probe slots (or refuses when all are out). Only those
//! probes' results decide; a probe that ends without an outcome (its caller
//! hung up) gives its slot back.
//!
//! With a breaker configured, endpoint health owns `levee_endpoints` for its
//! service (ready = known − ejected); without one, discovery's count stands.
//!
//! Hot path: an `ArcSwap` read of the table, the endpoint's breaker found by
//! its position in the balancer's set ([`EndpointRef`]: the table keeps the
//! endpoints in the same order, so no hashing), one small per-endpoint mutex
//! only while it is not CLOSED; the ejected count is an atomic.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::metrics::{CircuitState, Metrics};
use crate::resilience::balance::{EndpointRef, Pass};
use crate::resilience::breaker::machine::{Admission, Machine};
use crate::resilience::breaker::{BreakerConfig, BreakerMetrics};
use crate::resilience::classify::Outcome;

/// The health of every endpoint of one service.
#[derive(Debug)]
pub struct EndpointHealth {
    service: String,
    metrics: Metrics,
    /// The breakers; replaced as a whole when endpoints or config change.
    table: ArcSwap<Table>,
    /// Endpoints currently OPEN or HALF_OPEN.
    ejected: AtomicUsize,
    /// Serialises `set_endpoints` and `update_config`.
    update: Mutex<()>,
}

#[derive(Debug, Default)]
struct Table {
    cfg: Option<BreakerConfig>,
    /// The service's endpoints, kept also while no breaker is configured, so
    /// a policy that adds one later covers the endpoints already known.
    addrs: Vec<SocketAddr>,
    /// How many endpoints the cap is a percentage of.
    count: usize,
    /// One breaker per distinct address, in the order of `addrs` (the
    /// balancer's order: [`EndpointRef::at`] indexes it). Empty without a
    /// breaker config.
    breakers: Vec<(SocketAddr, Arc<EndpointBreaker>)>,
}

impl Table {
    /// `endpoint`'s breaker: at its position when the address there
    /// matches (always, but while a new endpoint set is being installed),
    /// else found by address.
    fn breaker(&self, endpoint: EndpointRef) -> Option<&Arc<EndpointBreaker>> {
        match self.breakers.get(endpoint.at) {
            Some((addr, breaker)) if *addr == endpoint.addr => Some(breaker),
            _ => self
                .breakers
                .iter()
                .find(|(addr, _)| *addr == endpoint.addr)
                .map(|(_, breaker)| breaker),
        }
    }
}

#[derive(Debug)]
struct EndpointBreaker {
    machine: Mutex<Machine>,
    /// Mirrors "the machine is CLOSED" (written under the lock): the
    /// balancer's availability check takes no lock for healthy endpoints.
    closed: AtomicBool,
    metrics: BreakerMetrics,
}

impl EndpointBreaker {
    fn new(service: &str, addr: SocketAddr, cfg: &BreakerConfig, metrics: &Metrics) -> Self {
        EndpointBreaker {
            machine: Mutex::new(Machine::new(cfg, Instant::now())),
            closed: AtomicBool::new(true),
            metrics: BreakerMetrics::new(metrics, service, &addr.to_string()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Updates the lock-free CLOSED flag; called with the lock held.
    fn mirror(&self, machine: &Machine) {
        self.closed
            .store(machine.state() == CircuitState::Closed, Ordering::Release);
    }
}

impl EndpointHealth {
    /// No endpoints yet; `cfg` `None` means no ejection at all.
    pub fn new(service: &str, cfg: Option<&BreakerConfig>, metrics: &Metrics) -> Self {
        EndpointHealth {
            service: service.to_owned(),
            metrics: metrics.clone(),
            table: ArcSwap::from_pointee(Table {
                cfg: cfg.cloned(),
                ..Table::default()
            }),
            ejected: AtomicUsize::new(0),
            update: Mutex::new(()),
        }
    }

    fn serialise(&self) -> MutexGuard<'_, ()> {
        self.update.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the balancer may send to `endpoint`: false while it is
    /// ejected. Unknown endpoints are available.
    pub fn is_available(&self, endpoint: impl Into<EndpointRef>) -> bool {
        let table = self.table.load();
        let Some(breaker) = table.breaker(endpoint.into()) else {
            return true;
        };
        if breaker.closed.load(Ordering::Acquire) {
            return true;
        }
        let mut machine = breaker.lock();
        let before = machine.state();
        let available = machine.would_admit(Instant::now());
        let after = machine.state();
        breaker.mirror(&machine);
        drop(machine);
        if after != before {
            breaker.metrics.transition(after);
        }
        available
    }

    /// Lets one attempt go to `endpoint` (the balancer's choice). CLOSED and
    /// unknown endpoints take it as an ordinary call; a HALF_OPEN one as a
    /// probe while it has a slot left; otherwise `None`.
    pub fn begin(&self, endpoint: impl Into<EndpointRef>) -> Option<Pass> {
        let table = self.table.load();
        let Some(breaker) = table.breaker(endpoint.into()) else {
            return Some(Pass::default());
        };
        if breaker.closed.load(Ordering::Acquire) {
            return Some(Pass::default());
        }
        let mut machine = breaker.lock();
        let (admission, changed) = machine.admit(Instant::now());
        breaker.mirror(&machine);
        drop(machine);
        if let Some(state) = changed {
            breaker.metrics.transition(state);
        }
        match admission {
            Admission::Admitted {
                probe: true,
                generation,
            } => Some(Pass {
                probe: Some(generation),
            }),
            Admission::Admitted { probe: false, .. } => Some(Pass::default()),
            Admission::Rejected { .. } => None,
        }
    }

    /// Reports the outcome of one attempt on `endpoint` that [`Self::begin`] let in.
    pub fn record(
        &self,
        endpoint: impl Into<EndpointRef>,
        pass: Pass,
        outcome: &Outcome,
        latency: Duration,
    ) {
        self.record_at(endpoint, pass, outcome, latency, Instant::now());
    }

    /// [`Self::record`] for an attempt that ended at `now` (the balancer
    /// read the clock for its latency).
    pub fn record_at(
        &self,
        endpoint: impl Into<EndpointRef>,
        pass: Pass,
        outcome: &Outcome,
        latency: Duration,
        now: Instant,
    ) {
        let table = self.table.load();
        let (Some(cfg), Some(breaker)) = (&table.cfg, table.breaker(endpoint.into())) else {
            return;
        };
        if outcome.is_ignored() {
            if let Some(generation) = pass.probe {
                breaker.lock().release(generation);
            }
            return;
        }
        let failed = outcome.is_failure(&cfg.failure_on);
        let cap = ejection_cap(table.count, cfg.max_ejected_percent);
        let mut machine = breaker.lock();
        let before = machine.state();
        let slow = machine.is_slow(latency);
        let changed = machine.record(now, failed, slow, pass.probe, || self.try_eject(cap));
        breaker.mirror(&machine);
        drop(machine);
        let Some(state) = changed else { return };
        // A table replaced meanwhile was recounted: its old endpoints no
        // longer count (the balancer trusts a zero count to skip checks).
        if before == CircuitState::HalfOpen
            && state == CircuitState::Closed
            && Arc::ptr_eq(&*self.table.load(), &*table)
        {
            let _ = self
                .ejected
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
        breaker.metrics.transition(state);
        self.publish(table.count);
    }

    /// Counts one more ejection unless that would pass `cap`.
    fn try_eject(&self, cap: usize) -> bool {
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Applies a new policy's breaker config; unchanged config keeps every
    /// endpoint's state, a changed one starts every endpoint over CLOSED.
    pub fn update_config(&self, cfg: Option<&BreakerConfig>) {
        let _serialised = self.serialise();
        let current = self.table.load_full();
        if current.cfg.as_ref() == cfg {
            return;
        }
        self.rebuild(cfg.cloned(), &current.addrs, None);
    }

    /// The service's endpoints now. Known endpoints keep their state; new
    /// ones start CLOSED; removed ones are forgotten.
    pub fn set_endpoints(&self, addrs: &[SocketAddr]) {
        let _serialised = self.serialise();
        let current = self.table.load_full();
        self.rebuild(current.cfg.clone(), addrs, Some(&current));
    }

    /// Installs a table for `addrs`, reusing `keep`'s breakers when given.
    /// Duplicates count once, at their first position, as in the
    /// balancer's [`EndpointSet`](crate::resilience::balance::EndpointSet).
    fn rebuild(&self, cfg: Option<BreakerConfig>, addrs: &[SocketAddr], keep: Option<&Table>) {
        let mut breakers: Vec<(SocketAddr, Arc<EndpointBreaker>)> = Vec::new();
        let mut ejected = 0;
        if let Some(cfg) = &cfg {
            breakers.reserve(addrs.len());
            let kept: HashMap<SocketAddr, &Arc<EndpointBreaker>> = keep
                .map(|t| t.breakers.iter().map(|(a, b)| (*a, b)).collect())
                .unwrap_or_default();
            let mut seen = HashSet::with_capacity(addrs.len());
            for &addr in addrs {
                if !seen.insert(addr) {
                    continue;
                }
                let breaker = kept.get(&addr).map(|b| Arc::clone(b)).unwrap_or_else(|| {
                    Arc::new(EndpointBreaker::new(
                        &self.service,
                        addr,
                        cfg,
                        &self.metrics,
                    ))
                });
                if breaker.lock().state() != CircuitState::Closed {
                    ejected += 1;
                }
                breakers.push((addr, breaker));
            }
        }
        let count = addrs.len();
        self.table.store(Arc::new(Table {
            cfg,
            addrs: addrs.to_vec(),
            count,
            breakers,
        }));
        // Racing records of removed endpoints may adjust the old count: the
        // recount here is the truth from now on.
        self.ejected.store(ejected, Ordering::Release);
        self.publish(count);
    }

    /// Sets `levee_endpoints{state=ready|ejected}`: owned here while a
    /// breaker is configured (discovery's count is ignored then), handed
    /// back to discovery with the plain count when not.
    fn publish(&self, count: usize) {
        if self.table.load().cfg.is_none() {
            self.metrics.release_endpoint_health(&self.service, count);
            return;
        }
        let ejected = self.ejected.load(Ordering::Acquire).min(count);
        self.metrics
            .set_endpoint_health(&self.service, count - ejected, ejected);
    }

    /// How many endpoints are ejected (OPEN or HALF_OPEN) now.
    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Acquire)
    }

    /// Whether every endpoint is available without asking: no breaker is
    /// configured, or none is OPEN or HALF_OPEN.
    pub fn none_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire) == 0 || self.table.load().cfg.is_none()
    }
}

/// How many of `count` endpoints may be ejected at `percent`.
fn ejection_cap(count: usize, percent: f64) -> usize {
    let cap = (count as f64 * percent.clamp(0.0, 100.0) / 100.0).floor();
    // In range by construction: 0 ≤ cap ≤ count.
    cap as usize
}

#[cfg(test)]
mod tests;
