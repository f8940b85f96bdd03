//! [`RequestTimeoutLayer`]: the per-route settings of [`RequestTimeout`].

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tower::Layer;

use super::RequestTimeout;

/// Wraps a service in a [`RequestTimeout`]. `timeout: None` still honours a
/// caller's `grpc-timeout`.
#[derive(Clone, Debug)]
pub struct RequestTimeoutLayer {
    timeout: Option<Duration>,
    service: Arc<str>,
    fired: Counter,
    caller_deadline: bool,
}

impl RequestTimeoutLayer {
    pub fn new(timeout: Option<Duration>, service: Arc<str>, fired: Counter) -> Self {
        RequestTimeoutLayer {
            timeout,
            service,
            fired,
            caller_deadline: true,
        }
    }

    /// Only the policy's timeout counts: a caller's `grpc-timeout` neither
    /// shortens the deadline nor sets one (the inbound side, whose app
    /// reads that header itself).
    pub fn without_caller_deadline(mut self) -> Self {
        self.caller_deadline = false;
        self
    }
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let mut service = RequestTimeout::new(
            inner,
            self.timeout,
            self.service.clone(),
            self.fired.clone(),
        );
        service.caller_deadline = self.caller_deadline;
        service
    }
}
