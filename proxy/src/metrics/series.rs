//! Which labelled series each `service` owns, so that a destination the
//! proxy forgets (evicted from its bounded table) takes every series it
//! created with it and `/metrics` stays bounded however many `Host` values
//! callers invent. The request families are tracked by the route cache
//! ([`super::request`]); this tracks the others.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use super::labels::{
    CircuitLabels, RejectedLabels, RetryLabels, ServiceRouteLabels, TimeoutLabels, TransitionLabels,
};

/// One series of a family with a `service` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) enum Series {
    Retry(RetryLabels),
    BudgetExhausted(ServiceRouteLabels),
    Circuit(CircuitLabels),
    Transition(TransitionLabels),
    Rejected(RejectedLabels),
    Timeout(TimeoutLabels),
}

/// Series by the service they belong to.
#[derive(Debug, Default)]
pub(super) struct SeriesByService {
    by_service: Mutex<HashMap<Box<str>, HashSet<Series>>>,
}

impl SeriesByService {
    /// Records that `series` of `service` exists.
    pub(super) fn record(&self, service: &str, series: Series) {
        let mut map = self
            .by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(service) {
            Some(set) => {
                set.insert(series);
            }
            None => {
                map.insert(service.into(), HashSet::from([series]));
            }
        }
    }

    /// Forgets and returns every series recorded for `service`.
    pub(super) fn take(&self, service: &str) -> HashSet<Series> {
        self.by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(service)
            .unwrap_or_default()
    }

    /// Services with series recorded (for tests).
    #[cfg(test)]
    pub(super) fn services(&self) -> usize {
        self.by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
