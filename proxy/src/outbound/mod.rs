//! The outbound data path: calls the local app makes to other services.
//!
//! The destination is the request's authority (absolute-form URI when the app
//! uses the proxy as `HTTP_PROXY`, else `Host` / `:authority`), normalised to a
//! [`ServiceKey`] with this proxy's namespace and port 80 as defaults. Its
//! endpoints come from [`Shared::resolve`]; one is picked at random (the
//! resilience work replaces this with P2C over EWMA latency). `CONNECT` is
//! tunnelled to the chosen endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use levee_proto::policy::{RouteRequest, ServiceKey};

use crate::body::{self, BoxBody};
use crate::errors::{self, ErrorKind, ProxyError};
use crate::forward::access_log::AccessLog;
use crate::forward::telemetry::Observation;
use crate::forward::{Forwarder, uri};
use crate::metrics::Direction;
use crate::server::Handler;
use crate::state::Shared;

/// The `route` label when no policy route matches.
const DEFAULT_ROUTE: &str = "default";
/// The `service` label of requests that name no valid service.
const UNKNOWN_SERVICE: &str = "unknown";

/// Handles requests arriving on the outbound listener.
pub struct Outbound {
    shared: Arc<Shared>,
    forwarder: Arc<Forwarder>,
    access_log: Option<AccessLog>,
}

impl Outbound {
    pub fn new(
        shared: Arc<Shared>,
        forwarder: Arc<Forwarder>,
        access_log: Option<AccessLog>,
    ) -> Self {
        Outbound {
            shared,
            forwarder,
            access_log,
        }
    }

    fn observation(
        &self,
        service: &str,
        route: &str,
        req: &Request<Incoming>,
        start: Instant,
        grpc: bool,
    ) -> Observation {
        let metrics = self
            .shared
            .metrics
            .requests(Direction::Outbound, service, route);
        let mut observation = Observation::new(metrics, start, grpc);
        if let Some(log) = &self.access_log {
            observation.access = Some(log.entry("outbound", service, route, req));
        }
        observation
    }

    /// The metrics handle and service label of a request to `key`.
    fn observe(
        &self,
        key: &ServiceKey,
        req: &Request<Incoming>,
        start: Instant,
        grpc: bool,
    ) -> (Observation, String) {
        let service = key.to_string();
        let policy = self.shared.policy_for(key);
        let route = policy.as_deref().and_then(|p| {
            let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let request =
                RouteRequest::new(req.method().as_str(), path).with_headers(req.headers());
            p.spec
                .outbound
                .find_route(&request)
                .map(|(_, r)| r.name.as_str())
        });
        let observation =
            self.observation(&service, route.unwrap_or(DEFAULT_ROUTE), req, start, grpc);
        (observation, service)
    }
}

impl Handler for Outbound {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        let start = Instant::now();
        let grpc = errors::is_grpc(req.headers());
        let parsed = match uri::request_authority(&req) {
            Some(authority) => ServiceKey::from_authority(authority, &self.shared.namespace, 80),
            None => Err("the request names no destination (no Host or :authority)".to_owned()),
        };
        let key = match parsed {
            Ok(key) => key,
            Err(detail) => {
                let err = ProxyError::new(ErrorKind::BadRequest, UNKNOWN_SERVICE, detail);
                return self
                    .observation(UNKNOWN_SERVICE, DEFAULT_ROUTE, &req, start, grpc)
                    .error(&err);
            }
        };
        let (observation, service) = self.observe(&key, &req, start, grpc);

        let addr = match self
            .shared
            .resolve(&key)
            .await
            .and_then(|eps| pick(&eps, &service))
        {
            Ok(addr) => addr,
            Err(err) => return observation.error(&err),
        };
        let result = if req.method() == Method::CONNECT {
            self.forwarder
                .connect(req.map(body::incoming), addr, &service)
                .await
        } else {
            self.forwarder
                .forward(req.map(body::incoming), addr, &service)
                .await
        };
        match result {
            Ok(response) => observation.response(response),
            Err(err) => observation.error(&err),
        }
    }
}

/// One endpoint, uniformly at random: no shared counter to contend on.
fn pick(endpoints: &[SocketAddr], service: &str) -> Result<SocketAddr, ProxyError> {
    match endpoints.len() {
        0 => Err(ProxyError::new(
            ErrorKind::NoEndpoints,
            service,
            "the service has no endpoints",
        )),
        1 => Ok(endpoints[0]),
        n => Ok(endpoints[rand::random_range(0..n)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_spreads_over_endpoints_and_fails_on_none() {
        let eps: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(pick(&eps, "s").expect("endpoint"));
        }
        assert_eq!(seen.len(), 3);
        let err = pick(&[], "svc.ns:80").expect_err("no endpoints");
        assert_eq!(err.kind, ErrorKind::NoEndpoints);
        assert_eq!(err.service, "svc.ns:80");
    }
}
