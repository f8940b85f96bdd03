//! `levee_endpoints{service,state}` and who writes it: discovery (static
//! lists, DNS) by default, endpoint health (a breaker is configured) once it
//! claims a service, until it releases it or the destination is forgotten.

use std::collections::HashSet;
use std::sync::{MutexGuard, PoisonError};

use super::labels::EndpointLabels;
use super::registry::Metrics;

impl Metrics {
    /// Sets `levee_endpoints{service,state}` (state: ready or ejected) as
    /// discovery sees it (static lists, DNS). Ignored while endpoint health
    /// owns the service's series ([`Metrics::set_endpoint_health`]).
    pub fn set_endpoints(&self, service: &str, state: &'static str, count: usize) {
        let owned = self.endpoint_health_owned();
        if !owned.contains(service) {
            self.write_endpoints(service, state, count);
        }
    }

    /// Endpoint health's numbers for `levee_endpoints{service}`: from now on
    /// it owns the series and discovery's [`Metrics::set_endpoints`] is ignored.
    pub fn set_endpoint_health(&self, service: &str, ready: usize, ejected: usize) {
        let mut owned = self.endpoint_health_owned();
        if !owned.contains(service) {
            owned.insert(service.to_owned());
        }
        // Written under the lock, so a concurrent discovery write cannot land last.
        self.write_endpoints(service, "ready", ready);
        self.write_endpoints(service, "ejected", ejected);
    }

    /// Endpoint health stops owning `levee_endpoints{service}` (its breaker
    /// was removed): `ready` becomes `count`, `ejected` goes away, and
    /// discovery's counts apply again. Nothing happens when it did not own it.
    pub fn release_endpoint_health(&self, service: &str, count: usize) {
        self.forget_endpoint_health(service, Some(count));
    }

    /// The endpoint-health part of [`Metrics::forget_destination`]: when
    /// endpoint health owned `service`'s series, `ready` goes back to
    /// `static_endpoints` (or goes, without any) and `ejected` goes.
    pub(super) fn forget_endpoint_health(&self, service: &str, static_endpoints: Option<usize>) {
        let inner = &self.inner;
        let mut owned = self.endpoint_health_owned();
        if owned.remove(service) {
            match static_endpoints {
                Some(count) => self.write_endpoints(service, "ready", count),
                None => {
                    inner.endpoints.remove(&EndpointLabels {
                        service: service.into(),
                        state: "ready",
                    });
                }
            }
            inner.endpoints.remove(&EndpointLabels {
                service: service.into(),
                state: "ejected",
            });
        }
    }

    fn endpoint_health_owned(&self) -> MutexGuard<'_, HashSet<String>> {
        self.inner
            .endpoint_health_owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_endpoints(&self, service: &str, state: &'static str, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.inner
            .endpoints
            .get_or_create(&EndpointLabels {
                service: service.into(),
                state,
            })
            .set(count);
    }

    /// Drops the `levee_endpoints` series of a service that is gone.
    pub fn remove_endpoints(&self, service: &str) {
        for state in ["ready", "ejected"] {
            self.inner.endpoints.remove(&EndpointLabels {
                service: service.into(),
                state,
            });
        }
    }
}
