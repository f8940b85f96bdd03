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
}

impl RequestTimeoutLayer {
    pub fn new(timeout: Option<Duration>, service: Arc<str>, fired: Counter) -> Self {
        RequestTimeoutLayer {
            timeout,
            service,
            fired,
        }
    }
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout::new(
            inner,
            self.timeout,
            self.service.clone(),
            self.fired.clone(),
        )
    }
}
