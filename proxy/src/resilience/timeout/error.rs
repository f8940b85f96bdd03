//! The error a fired timeout produces: a `timeout` [`ProxyError`], which the
//! edge renders as 504 / DEADLINE_EXCEEDED.

use std::time::Duration;

use crate::errors::{ErrorKind, ProxyError};

/// `kind` is the `levee_timeouts_total` kind (request, per-try, connect, idle).
pub fn elapsed(service: &str, kind: &str, after: Duration) -> ProxyError {
    ProxyError::new(
        ErrorKind::Timeout,
        service,
        format!("{kind} timeout: no response within {after:?}"),
    )
}
