//! The retry backoff is the proxy's one backoff schedule, shared with the
//! control-plane reconnect: see [`crate::backoff`].

pub use crate::backoff::Backoff;
