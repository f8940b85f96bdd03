//! The proxy's Prometheus metrics: one [`Metrics`] owns a `prometheus-client`
//! registry (no global registry, so tests can build their own) and every
//! metric family of DESIGN.md §5. Names and labels are a contract; the catalog
//! is `docs/metrics.md`.
//!
//! Hot path: [`Metrics::requests`] hands out a [`RequestMetrics`] whose label
//! handles are resolved once per (direction, service, route) and cached.
//!
//! Bounded: every series with a `service` label is remembered under its
//! service ([`series`], and the route cache for the request families), so
//! [`Metrics::forget_destination`] removes all of a forgotten destination's
//! series; tables that forget entries count it in
//! `levee_state_evictions_total{table}`.
//!
//! Layout: `registry.rs` builds the registry and its families and encodes
//! them; `family.rs` registers one family; `labels.rs` holds the label sets
//! and values. Handles by family: `request.rs` (requests and durations),
//! `resilience.rs` (retries, breakers, refusals, timeouts), `endpoints.rs`
//! (`levee_endpoints` and who writes it), `policy.rs` (the policy stream),
//! `tcp.rs`, `tls.rs`, `identity.rs`. `series.rs` tracks each service's
//! series and `forget.rs` removes them.

mod endpoints;
mod family;
mod forget;
pub mod identity;
mod labels;
mod policy;
mod registry;
mod request;
mod resilience;
mod series;
mod tcp;
mod tls;

pub use labels::{Direction, StateTable};
pub use registry::Metrics;
pub use request::RequestMetrics;
pub use resilience::CircuitState;
pub use tcp::{TcpMetrics, TcpOutcome, target as tcp_target};
pub use tls::{MAX_CLIENT_LABELS, NO_IDENTITY, OTHER_CLIENTS, TlsMetrics, TlsResult};

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Suggested values of the `outcome` label of `levee_requests_total`. Proxy-made
/// errors use their `x-levee-error` name (`timeout`, `circuit-open`, ...).
pub mod outcome {
    /// The upstream answered and the answer is not a failure (HTTP < 500, gRPC OK or a client error).
    pub const SUCCESS: &str = "success";
    /// The upstream answered with a failure (HTTP 5xx, gRPC UNAVAILABLE, ...).
    pub const FAILURE: &str = "failure";
}

#[cfg(test)]
mod tests;
