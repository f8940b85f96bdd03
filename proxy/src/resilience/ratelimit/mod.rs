//! Rate limits: [`RateLimiter`] (one GCRA bucket), the inbound
//! [`InboundRateLimit`] (in total, or per client in a bounded table), and
//! [`RateLimitLayer`], the tower middleware that applies either: outbound
//! one bucket per target service, inbound the local service's limit.
//!
//! A rejected request gets `429 rate-limited` (gRPC RESOURCE_EXHAUSTED) with
//! `Retry-After` (when the next request would pass, rounded up to seconds)
//! and the IETF draft headers `RateLimit-Policy: "levee";q=<rps>;w=1` and
//! `RateLimit: "levee";r=0;t=<seconds>`, rendered by
//! [`crate::errors::to_response`] from [`crate::errors::Quota`].

mod clients;
mod future;
mod gcra;
mod layer;

pub use clients::{ClientTable, InboundRateLimit, MAX_CLIENTS};
pub use future::ResponseFuture;
pub use gcra::RateLimiter;
pub use layer::{Limit, RateLimitLayer, RateLimitService};

#[cfg(test)]
mod tests;
