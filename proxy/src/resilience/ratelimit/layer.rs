//! [`RateLimitLayer`] and its [`RateLimitService`]: the outbound per-service
//! rate limit, outermost after telemetry, so a rejected call costs nothing.

use std::sync::Arc;
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tower::{BoxError, Layer, Service};

use super::RateLimiter;
use super::future::ResponseFuture;
use crate::errors::{ErrorKind, ProxyError};
use crate::metrics::{Direction, Metrics};

/// What a rejection needs, resolved once per service.
#[derive(Clone, Debug)]
struct Rejection {
    service: Arc<str>,
    /// `levee_rejected_total{direction="outbound",reason="rate-limited"}`.
    rejected: Counter,
}

/// Applies one service's [`RateLimiter`] to every call.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
    rejection: Rejection,
}

impl RateLimitLayer {
    pub fn new(limiter: Arc<RateLimiter>, service: &str, metrics: &Metrics) -> Self {
        RateLimitLayer {
            limiter,
            rejection: Rejection {
                service: service.into(),
                rejected: metrics.rejected(
                    Direction::Outbound,
                    service,
                    ErrorKind::RateLimited.as_str(),
                ),
            },
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: self.limiter.clone(),
            rejection: self.rejection.clone(),
        }
    }
}

/// Rejects calls over the rate with `429 rate-limited` + `Retry-After`.
#[derive(Clone, Debug)]
pub struct RateLimitService<S> {
    inner: S,
    limiter: Arc<RateLimiter>,
    rejection: Rejection,
}

impl<S, Req> Service<Req> for RateLimitService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.limiter.check() {
            Ok(()) => ResponseFuture::called(self.inner.call(req)),
            Err(quota) => {
                self.rejection.rejected.inc();
                let error = ProxyError::new(
                    ErrorKind::RateLimited,
                    &*self.rejection.service,
                    format!("over the rate limit of {} requests per second", quota.limit),
                )
                .with_retry_after(quota.reset)
                .with_quota(quota);
                ResponseFuture::rejected(error)
            }
        }
    }
}
