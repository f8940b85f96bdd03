//! [`BalanceLayer`]: a service's [`Balancer`] as a tower layer.

use std::sync::Arc;

use tower::Layer;

use super::{Balance, Balancer};

#[derive(Clone, Debug)]
pub struct BalanceLayer {
    balancer: Arc<Balancer>,
}

impl BalanceLayer {
    pub fn new(balancer: Arc<Balancer>) -> Self {
        BalanceLayer { balancer }
    }
}

impl<S> Layer<S> for BalanceLayer {
    type Service = Balance<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Balance::new(inner, self.balancer.clone())
    }
}
