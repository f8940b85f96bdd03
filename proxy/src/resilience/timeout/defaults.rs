//! [`TimeoutDefaults`]: the proxy's own timeouts for calls no policy bounds,
//! so that no call waits forever for a head or a body frame.
//!
//! - Response head (`--default-request-timeout`, 15s, Envoy's route timeout
//!   default): when no policy `timeouts.request` applies to a call (no
//!   policy, or a policy that does not set it; a policy's `0s` still means
//!   off), the wait for the response head, all attempts included, is
//!   bounded by this and answered 504 `timeout`. Unlike a policy's, it is
//!   not sent on as `grpc-timeout`: a gRPC stream without a policy is not
//!   given a deadline by the proxy, only its head wait is bounded.
//! - Stream idle (`--default-stream-idle-timeout`, 5m, Envoy's
//!   `stream_idle_timeout` default): a response body with no frame for this
//!   long ends with an error, for services without a policy (a policy's
//!   `timeouts.idle` defaults to 60s) and for the local app's responses on
//!   the inbound side.
//!
//! `0s` turns either off.

use std::time::Duration;

/// The default of `--default-request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The default of `--default-stream-idle-timeout`.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The proxy-wide timeouts for calls whose policy does not set them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutDefaults {
    /// Response head wait; `None`: off.
    pub request: Option<Duration>,
    /// Stream idle of response bodies; `None`: off.
    pub stream_idle: Option<Duration>,
}

impl Default for TimeoutDefaults {
    fn default() -> Self {
        TimeoutDefaults {
            request: Some(DEFAULT_REQUEST_TIMEOUT),
            stream_idle: Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        }
    }
}

impl TimeoutDefaults {
    /// From the flags' values, where `0s` is off.
    pub fn new(request: Duration, stream_idle: Duration) -> Self {
        let on = |d: Duration| (!d.is_zero()).then_some(d);
        TimeoutDefaults {
            request: on(request),
            stream_idle: on(stream_idle),
        }
    }

    /// No default timeouts at all.
    pub fn off() -> Self {
        TimeoutDefaults {
            request: None,
            stream_idle: None,
        }
    }
}
