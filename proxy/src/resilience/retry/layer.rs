//! [`RetryLayer`]: a route's [`RetryConfig`] as a tower layer.

use std::sync::Arc;

use tower::Layer;

use super::{Retry, RetryConfig};

#[derive(Clone, Debug)]
pub struct RetryLayer {
    config: Arc<RetryConfig>,
}

impl RetryLayer {
    pub fn new(config: Arc<RetryConfig>) -> Self {
        RetryLayer { config }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.config.clone())
    }
}
