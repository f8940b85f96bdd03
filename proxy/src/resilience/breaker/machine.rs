//! The breaker state machine shared by the service breaker and the endpoint
//! breakers: plain data, no locks, no clock of its own (callers pass `now`),
//! so it is tested directly and each owner decides how to guard it.
//!
//! ```text
//!            failure trip (consecutive / rate / slow)
//!   CLOSED ─────────────────────────────────────────► OPEN (base·2^(trips-1), ≤ max, jittered)
//!     ▲                                                 │
//!     │ all halfOpenProbes probes succeed               │ open time over (next call)
//!     │                                                 ▼
//!     └────────────────────────────────────────────── HALF_OPEN ── any probe fails ──► OPEN (longer)
//! ```

use std::time::Duration;

use levee_proto::policy::EffectiveCircuitBreaker;
use tokio::time::Instant;

use super::window::{Counts, Window};
use crate::metrics::CircuitState;

/// Jitter takes up to this fraction off an open time, so breakers that
/// tripped together do not probe together.
const JITTER: f64 = 0.1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

/// What [`Machine::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Go ahead; `probe` when the call is one of HALF_OPEN's trial calls.
    /// `generation` identifies the state the call was admitted in.
    Admitted { probe: bool, generation: u64 },
    /// Fail fast; the breaker is open for this much longer (or all probes are out).
    Rejected { retry_after: Duration },
}

/// One breaker: state, counters and the open-time growth.
#[derive(Debug)]
pub(crate) struct Machine {
    cfg: EffectiveCircuitBreaker,
    state: State,
    /// Bumped on every transition, so late results of an earlier state are ignored.
    generation: u64,
    consecutive_failures: u32,
    window: Window,
    /// Trips since the breaker last closed: the open time doubles with each.
    trips: u32,
}

impl Machine {
    pub(crate) fn new(cfg: &EffectiveCircuitBreaker, now: Instant) -> Machine {
        Machine {
            cfg: cfg.clone(),
            state: State::Closed,
            generation: 0,
            consecutive_failures: 0,
            window: Window::new(cfg.failure_rate_window.get(), now),
            trips: 0,
        }
    }

    pub(crate) fn config(&self) -> &EffectiveCircuitBreaker {
        &self.cfg
    }

    /// The state as `levee_circuit_state` shows it.
    pub(crate) fn state(&self) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Moves OPEN → HALF_OPEN once the open time is over. Returns the new
    /// state when it changed.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<CircuitState> {
        match self.state {
            State::Open { until } if now >= until => {
                self.enter(State::HalfOpen {
                    admitted: 0,
                    succeeded: 0,
                });
                Some(CircuitState::HalfOpen)
            }
            _ => None,
        }
    }

    /// Whether a call would be admitted now (no side effect besides [`Machine::poll`]).
    pub(crate) fn would_admit(&mut self, now: Instant) -> bool {
        self.poll(now);
        match self.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen { admitted, .. } => admitted < self.probes(),
        }
    }

    /// Admits or rejects one call.
    pub(crate) fn admit(&mut self, now: Instant) -> (Admission, Option<CircuitState>) {
        let changed = self.poll(now);
        let probes = self.probes();
        let generation = self.generation;
        let admission = match &mut self.state {
            State::Closed => Admission::Admitted {
                probe: false,
                generation,
            },
            State::Open { until } => Admission::Rejected {
                retry_after: until.saturating_duration_since(now),
            },
            State::HalfOpen { admitted, .. } if *admitted < probes => {
                *admitted += 1;
                Admission::Admitted {
                    probe: true,
                    generation,
                }
            }
            // Every probe is out: callers wait for their verdict.
            State::HalfOpen { .. } => Admission::Rejected {
                retry_after: Duration::ZERO,
            },
        };
        (admission, changed)
    }

    /// Gives back a probe slot whose call ended without an outcome (cancelled).
    pub(crate) fn release(&mut self, generation: u64) {
        if generation != self.generation {
            return;
        }
        if let State::HalfOpen { admitted, .. } = &mut self.state {
            *admitted = admitted.saturating_sub(1);
        }
    }

    /// Records a call's result. `generation` is the one the call was admitted
    /// in (`None`: not admitted through [`Machine::admit`], e.g. an endpoint
    /// call while CLOSED; in HALF_OPEN only admitted probes count, so it is
    /// then ignored). `may_open` is asked
    /// before CLOSED trips to OPEN and can veto it (the ejection cap).
    /// Returns the new state when it changed.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        failed: bool,
        slow: bool,
        generation: Option<u64>,
        may_open: impl FnOnce() -> bool,
    ) -> Option<CircuitState> {
        let probes = self.probes();
        match &mut self.state {
            // Late results of calls admitted before the trip say nothing new.
            State::Open { .. } => None,
            State::HalfOpen { succeeded, .. } => {
                if generation != Some(self.generation) {
                    return None;
                }
                if failed || slow {
                    self.trip(now);
                    return Some(CircuitState::Open);
                }
                *succeeded += 1;
                if *succeeded >= probes {
                    self.trips = 0;
                    self.enter(State::Closed);
                    return Some(CircuitState::Closed);
                }
                None
            }
            State::Closed => {
                let counts = self.window.record(now, failed, slow);
                self.consecutive_failures = if failed {
                    self.consecutive_failures.saturating_add(1)
                } else {
                    0
                };
                if self.should_trip(counts) && may_open() {
                    self.trip(now);
                    return Some(CircuitState::Open);
                }
                None
            }
        }
    }

    /// Whether to trip, given the window's `counts` now.
    fn should_trip(&self, counts: Counts) -> bool {
        let cfg = &self.cfg;
        if cfg.consecutive_failures > 0 && self.consecutive_failures >= cfg.consecutive_failures {
            return true;
        }
        if counts.total < cfg.failure_rate_min_requests.max(1) {
            return false;
        }
        let total = f64::from(counts.total);
        let rate_tripped = cfg.failure_rate_percent > 0.0
            && f64::from(counts.failed) * 100.0 >= cfg.failure_rate_percent * total;
        let slow_tripped = cfg.slow_call.is_some_and(|s| {
            s.percent > 0.0 && f64::from(counts.slow) * 100.0 >= s.percent * total
        });
        rate_tripped || slow_tripped
    }

    /// Whether `latency` makes a call slow under this config.
    pub(crate) fn is_slow(&self, latency: Duration) -> bool {
        self.cfg
            .slow_call
            .is_some_and(|s| latency >= s.duration.get())
    }

    fn trip(&mut self, now: Instant) {
        self.trips = self.trips.saturating_add(1);
        let open_for = open_duration(&self.cfg, self.trips, rand::random::<f64>());
        self.enter(State::Open {
            until: crate::deadline::deadline_after(now, open_for),
        });
    }

    fn enter(&mut self, state: State) {
        self.state = state;
        self.generation = self.generation.wrapping_add(1);
        self.consecutive_failures = 0;
        self.window.clear();
    }

    fn probes(&self) -> u32 {
        self.cfg.half_open_probes.max(1)
    }
}

/// The open time of the `trips`-th consecutive trip: `base · 2^(trips-1)`
/// capped at `max`, less up to [`JITTER`] of it (`unit` is uniform in [0, 1)).
pub(crate) fn open_duration(cfg: &EffectiveCircuitBreaker, trips: u32, unit: f64) -> Duration {
    let base = cfg.open_base.get();
    let max = cfg.open_max.get().max(base);
    let factor = 2u32.saturating_pow(trips.saturating_sub(1).min(31));
    let full = base.checked_mul(factor).map_or(max, |d| d.min(max));
    full.mul_f64(1.0 - JITTER * unit.clamp(0.0, 1.0))
}

#[cfg(test)]
pub(crate) mod tests;
