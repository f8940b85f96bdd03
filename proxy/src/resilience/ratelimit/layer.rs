//! [`RateLimitLayer`] and its [`RateLimitService`]: a rate limit as tower
//! middleware, outermost after telemetry, so a rejected call costs nothing.
//!
//! The layer applies any [`Limit`]: outbound the per-service bucket
//! ([`RateLimitLayer::new`]), inbound the local service's limit in total or
//! per client ([`RateLimitLayer::inbound`]). The client is the peer address
//! the listener records in the request ([`ClientAddr`]).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use prometheus_client::metrics::counter::Counter;
use tower::{BoxError, Layer, Service};

use super::future::ResponseFuture;
use super::{InboundRateLimit, RateLimiter};
use crate::errors::{ErrorKind, ProxyError};
use crate::metrics::{Direction, Metrics};
use crate::server::ClientAddr;

/// Decides whether one request passes: `Err` is the `429 rate-limited`
/// error to answer with (the limit counts its own rejections).
pub trait Limit: fmt::Debug + Send + Sync + 'static {
    /// `client`: the caller's address, when the listener recorded one.
    fn check(&self, client: Option<IpAddr>) -> Result<(), ProxyError>;
}

/// The outbound limit: one bucket for every call to a service.
#[derive(Debug)]
struct ServiceLimit {
    limiter: Arc<RateLimiter>,
    service: Arc<str>,
    /// `levee_rejected_total{direction="outbound",reason="rate-limited"}`.
    rejected: Counter,
}

impl Limit for ServiceLimit {
    fn check(&self, _client: Option<IpAddr>) -> Result<(), ProxyError> {
        self.limiter.check().map_err(|quota| {
            self.rejected.inc();
            ProxyError::new(
                ErrorKind::RateLimited,
                &*self.service,
                format!("over the rate limit of {} requests per second", quota.limit),
            )
            .with_retry_after(quota.reset)
            .with_quota(quota)
        })
    }
}

impl Limit for InboundRateLimit {
    fn check(&self, client: Option<IpAddr>) -> Result<(), ProxyError> {
        InboundRateLimit::check(self, client)
    }
}

/// Applies one [`Limit`] to every call.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limit: Arc<dyn Limit>,
}

impl RateLimitLayer {
    /// The outbound limit of `service`: `limiter` for every call.
    pub fn new(limiter: Arc<RateLimiter>, service: &str, metrics: &Metrics) -> Self {
        RateLimitLayer {
            limit: Arc::new(ServiceLimit {
                limiter,
                service: service.into(),
                rejected: metrics.rejected(
                    Direction::Outbound,
                    service,
                    ErrorKind::RateLimited.as_str(),
                ),
            }),
        }
    }

    /// The inbound limit of the local service (in total or per client).
    pub fn inbound(limit: Arc<InboundRateLimit>) -> Self {
        RateLimitLayer { limit }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limit: self.limit.clone(),
        }
    }
}

/// Rejects calls over the rate with `429 rate-limited` + `Retry-After`.
#[derive(Clone, Debug)]
pub struct RateLimitService<S> {
    inner: S,
    limit: Arc<dyn Limit>,
}

impl<S, B> Service<Request<B>> for RateLimitService<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
        match self.limit.check(client) {
            Ok(()) => ResponseFuture::called(self.inner.call(req)),
            Err(error) => ResponseFuture::rejected(error),
        }
    }
}
