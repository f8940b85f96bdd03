//! Loop prevention: a request must never come back to the proxy that sent
//! it. Without these guards a destination that resolves to the proxy
//! itself is forwarded to itself until file descriptors run out.
//!
//! Two guards, because neither is enough alone:
//! - [`hops`]: every request a listener accepts carries `x-levee-hops`, the
//!   number of Levee proxies it has passed, one more at each; a request
//!   that arrives having passed more than `--max-hops` gets 508
//!   `loop-detected`. This catches loops through other proxies (A → B → A)
//!   that no single proxy can see from addresses.
//! - [`own`]: the addresses the proxy's own listeners answer on. The
//!   forwarder refuses a connect target that reaches the outbound or the
//!   admin listener (508 `loop-detected`) before any connection is made,
//!   whatever spelling of the address the policy, the control plane, DNS or
//!   the caller used. This stops a proxy calling itself at the first hop.
//!   The inbound listener stays a valid target: it is the workload's own
//!   endpoint (a service calling its own service may be balanced to it)
//!   and forwards only to the app, and the app's address may not be a
//!   listener at all (checked at startup), so it cannot close a loop.
//!
//! Both refusals are counted in `levee_rejected_total{reason="loop-detected"}`
//! by the listener that answers them. A proxy that receives another
//! proxy's refusal from upstream passes it back without retrying it
//! ([`is_loop_refusal`]).

pub mod hops;
pub mod own;

use http::Response;

use crate::errors::{ErrorKind, X_LEVEE_ERROR};

pub use hops::{DEFAULT_MAX_HOPS, X_LEVEE_HOPS};
pub use own::OwnListeners;

/// The `reason` label of loop refusals in `levee_rejected_total`.
pub const REJECTED_REASON: &str = "loop-detected";

/// Whether an upstream's response is a Levee proxy's loop refusal. It is
/// passed back as it is: never retried (a retry at every hop of a loop
/// would multiply it, 3^17 attempts for `maxRetries: 2`) and not counted by
/// a breaker (the upstream is not failing; the configuration loops).
pub fn is_loop_refusal<B>(response: &Response<B>) -> bool {
    response
        .headers()
        .get(X_LEVEE_ERROR)
        .is_some_and(|v| v.as_bytes() == ErrorKind::LoopDetected.as_str().as_bytes())
}

#[cfg(test)]
mod tests;
