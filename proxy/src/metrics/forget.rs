//! Forgetting an outbound destination: every series it created goes with
//! it, so `/metrics` stays bounded however many destinations callers name.

use super::labels::Direction;
use super::registry::Metrics;
use super::series::Series;

impl Metrics {
    /// Removes every series of the outbound destination `service` (it was
    /// evicted): its request, retry, breaker, rejection and timeout series,
    /// and `levee_endpoints` when endpoint health owned it (then `ready`
    /// goes back to `static_endpoints` when the snapshot lists some, else
    /// both states go). Discovery's own `levee_endpoints` series stay: the
    /// snapshot and the DNS cache bound and remove those.
    pub fn forget_destination(&self, service: &str, static_endpoints: Option<usize>) {
        let inner = &self.inner;
        for route in inner.routes.remove_service(Direction::Outbound, service) {
            route.remove_series(&inner.request_duration);
        }
        for series in inner.series.take(service) {
            match series {
                Series::Retry(labels) => {
                    inner.retries_total.remove(&labels);
                }
                Series::BudgetExhausted(labels) => {
                    inner.retry_budget_exhausted_total.remove(&labels);
                }
                Series::Circuit(labels) => {
                    inner.circuit_state.remove(&labels);
                }
                Series::Transition(labels) => {
                    inner.circuit_transitions_total.remove(&labels);
                }
                Series::Rejected(labels) => {
                    inner.rejected_total.remove(&labels);
                }
                Series::Timeout(labels) => {
                    inner.timeouts_total.remove(&labels);
                }
            }
        }
        self.forget_endpoint_health(service, static_endpoints);
    }
}
