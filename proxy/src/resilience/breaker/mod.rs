//! The service circuit breaker: one [`ServiceBreaker`] per target service,
//! shared by every request to it, and [`ServiceBreakerLayer`], the tower
//! middleware that consults it for each logical call: it sits outside the
//! request timeout and the retry layer, so a call that failed once and
//! recovered on a retry is a success, and one that ran out of time is a
//! timeout. (Endpoint breakers, in `health`, judge each attempt.)
//!
//! Semantics are Resilience4j's (see `docs/resilience.md` for the drawing):
//! CLOSED counts outcomes and trips to OPEN on `consecutiveFailures`, on a
//! `failureRate` over the sliding window (after `minRequests`) or on the
//! `slowCall` rate; OPEN fails calls fast with `503 circuit-open` and
//! `Retry-After` = the remaining open time; the first call after the open
//! time moves it to HALF_OPEN, which admits `halfOpenProbes` trial calls: all
//! succeed → CLOSED, any fails → OPEN again for twice as long (up to
//! `open.max`, jittered). OPEN → HALF_OPEN happens on that next call, so the
//! state gauge shows OPEN until traffic arrives.
//!
//! The state sits behind one small mutex per service, held for a few
//! comparisons; a policy update with the same breaker config keeps it.

mod body;
mod future;
mod layer;
pub(crate) mod machine;
mod window;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use levee_proto::policy::EffectiveCircuitBreaker;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

pub use future::ResponseFuture;
pub use layer::{ServiceBreakerLayer, ServiceBreakerService};

use self::machine::{Admission, Machine};
use crate::errors::{ErrorKind, ProxyError};
use crate::metrics::{CircuitState, Direction, Metrics};
use crate::resilience::classify::Outcome;

/// The generation of calls admitted on the lock-free CLOSED path: matches no
/// HALF_OPEN generation, so such calls never count as probes.
const CLOSED_GENERATION: u64 = u64::MAX;

/// The breaker config as the policy model resolves it.
pub type BreakerConfig = EffectiveCircuitBreaker;

/// Transition counters and the state gauge of one breaker, resolved once.
#[derive(Debug)]
pub(crate) struct BreakerMetrics {
    metrics: Metrics,
    service: String,
    /// `""` for the service breaker, else the endpoint address.
    endpoint: String,
    to_closed: Counter,
    to_open: Counter,
    to_half_open: Counter,
}

impl BreakerMetrics {
    pub(crate) fn new(metrics: &Metrics, service: &str, endpoint: &str) -> BreakerMetrics {
        let handles = BreakerMetrics {
            metrics: metrics.clone(),
            service: service.to_owned(),
            endpoint: endpoint.to_owned(),
            to_closed: metrics.circuit_transitions(service, endpoint, CircuitState::Closed),
            to_open: metrics.circuit_transitions(service, endpoint, CircuitState::Open),
            to_half_open: metrics.circuit_transitions(service, endpoint, CircuitState::HalfOpen),
        };
        handles.gauge(CircuitState::Closed);
        handles
    }

    /// Counts a transition into `to` and sets the gauge.
    pub(crate) fn transition(&self, to: CircuitState) {
        match to {
            CircuitState::Closed => self.to_closed.inc(),
            CircuitState::Open => self.to_open.inc(),
            CircuitState::HalfOpen => self.to_half_open.inc(),
        };
        self.gauge(to);
        tracing::info!(service = %self.service, endpoint = %self.endpoint, state = ?to, "circuit breaker");
    }

    fn gauge(&self, state: CircuitState) {
        self.metrics
            .set_circuit_state(&self.service, &self.endpoint, state);
    }
}

/// The circuit breaker of one target service.
#[derive(Debug)]
pub struct ServiceBreaker {
    service: String,
    machine: Mutex<Machine>,
    /// Mirrors "the machine is CLOSED" (written under the lock), so that
    /// admitting a call in the common case takes no lock.
    closed: AtomicBool,
    /// Whether the config judges slow calls (`slowCall`): only then is a
    /// call's latency measured (two clock reads saved per call otherwise).
    /// A call admitted before an update that adds `slowCall` is not timed,
    /// so not judged slow.
    times_calls: AtomicBool,
    metrics: BreakerMetrics,
    /// `levee_rejected_total{direction="outbound",reason="circuit-open"}`.
    rejected: Counter,
}

impl ServiceBreaker {
    pub fn new(service: &str, cfg: &BreakerConfig, metrics: &Metrics) -> ServiceBreaker {
        ServiceBreaker {
            service: service.to_owned(),
            machine: Mutex::new(Machine::new(cfg, Instant::now())),
            closed: AtomicBool::new(true),
            times_calls: AtomicBool::new(cfg.slow_call.is_some()),
            metrics: BreakerMetrics::new(metrics, service, ""),
            rejected: metrics.rejected(
                Direction::Outbound,
                service,
                ErrorKind::CircuitOpen.as_str(),
            ),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a new policy's breaker config. An unchanged config keeps the
    /// state; a changed one starts over CLOSED.
    pub fn update_config(&self, cfg: &BreakerConfig) {
        let mut machine = self.lock();
        if machine.config() == cfg {
            return;
        }
        let was = machine.state();
        *machine = Machine::new(cfg, Instant::now());
        self.closed.store(true, Ordering::Release);
        self.times_calls
            .store(cfg.slow_call.is_some(), Ordering::Release);
        drop(machine);
        if was != CircuitState::Closed {
            self.metrics.transition(CircuitState::Closed);
        }
    }

    /// The current state (OPEN until a call notices the open time is over).
    pub fn state(&self) -> CircuitState {
        self.lock().state()
    }

    /// Admits a call, or fails fast with a `circuit-open` [`ProxyError`]
    /// whose `retry_after` is the remaining open time.
    pub fn try_acquire(self: &Arc<Self>) -> Result<BreakerPermit, ProxyError> {
        if self.closed.load(Ordering::Acquire) {
            // CLOSED admits without the clock; the start only times slow calls.
            let start = self.times_calls.load(Ordering::Acquire).then(Instant::now);
            return Ok(BreakerPermit {
                breaker: Some(self.clone()),
                generation: CLOSED_GENERATION,
                start,
                head_latency: None,
                deadline: None,
            });
        }
        let now = Instant::now();
        let mut machine = self.lock();
        let (admission, changed) = machine.admit(now);
        self.mirror(&machine);
        drop(machine);
        if let Some(state) = changed {
            self.metrics.transition(state);
        }
        match admission {
            Admission::Admitted { generation, .. } => Ok(BreakerPermit {
                breaker: Some(self.clone()),
                generation,
                start: Some(now),
                head_latency: None,
                deadline: None,
            }),
            Admission::Rejected { retry_after } => {
                self.rejected.inc();
                let detail = if retry_after.is_zero() {
                    "the circuit breaker is half-open and its probes are in flight".to_owned()
                } else {
                    format!("the circuit breaker is open for another {retry_after:?}")
                };
                Err(
                    ProxyError::new(ErrorKind::CircuitOpen, &*self.service, detail)
                        .with_retry_after(retry_after),
                )
            }
        }
    }

    /// Updates the lock-free CLOSED flag; called with the lock held.
    fn mirror(&self, machine: &Machine) {
        self.closed
            .store(machine.state() == CircuitState::Closed, Ordering::Release);
    }

    /// Records a call; `latency` (to the response head) judges slowness.
    fn finish(&self, generation: u64, outcome: &Outcome, latency: Duration) {
        let now = Instant::now();
        let mut machine = self.lock();
        if outcome.is_ignored() {
            machine.release(generation);
            return;
        }
        let failed = outcome.is_failure(&machine.config().failure_on);
        let slow = machine.is_slow(latency);
        let changed = machine.record(now, failed, slow, Some(generation), || true);
        self.mirror(&machine);
        drop(machine);
        if let Some(state) = changed {
            self.metrics.transition(state);
        }
    }
}

/// One admitted call. [`BreakerPermit::record`] reports its outcome; a
/// permit dropped unrecorded counts as cancelled (never a failure), unless
/// it is dropped at or after its deadline (when one was set): then a layer
/// outside gave up on it, and it counts as a timeout.
#[derive(Debug)]
pub struct BreakerPermit {
    breaker: Option<Arc<ServiceBreaker>>,
    generation: u64,
    /// When the call was admitted (`None`: not timed, see `times_calls`).
    start: Option<Instant>,
    /// Time to the response head, once it arrived (the outcome may wait
    /// for the end of the body; slowness is judged on the head).
    head_latency: Option<Duration>,
    /// The call's deadline, if the layer knew one.
    deadline: Option<Instant>,
}

impl BreakerPermit {
    /// Sets the deadline past which a drop counts as a timeout.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Notes that the response head arrived now (its latency is the call's).
    pub(super) fn head_arrived(mut self) -> Self {
        self.head_latency = self.start.map(|start| start.elapsed());
        self
    }

    /// The call's latency (zero when it was not timed: never slow).
    fn latency(&self) -> Duration {
        self.head_latency
            .or_else(|| self.start.map(|start| start.elapsed()))
            .unwrap_or_default()
    }

    /// Reports the call's outcome; latency is measured from admission to
    /// the response head (or to now, without one).
    pub fn record(mut self, outcome: &Outcome) {
        if let Some(breaker) = self.breaker.take() {
            breaker.finish(self.generation, outcome, self.latency());
        }
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take() {
            let timed_out = self.deadline.is_some_and(|d| Instant::now() >= d);
            let outcome = if timed_out {
                Outcome::Error(ErrorKind::Timeout)
            } else {
                Outcome::Cancelled
            };
            breaker.finish(self.generation, &outcome, self.latency());
        }
    }
}

#[cfg(test)]
mod tests;
