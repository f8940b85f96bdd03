//! Sending a routed call: a request through its route's ready-built
//! resilience stack, bounded by the proxy's [`TimeoutDefaults`] where no
//! policy bounds it, or a tunnel (`CONNECT`, upgrade) straight to a
//! balanced endpoint, outside the retry and timeout layers.

use http::{Method, Request, Response};

use super::Outbound;
use crate::body::BoxBody;
use crate::errors::ProxyError;
use crate::resilience::call::{CallAttempts, CallContext};
use crate::resilience::timeout::idle::IdleTimeoutBody;
use crate::resilience::timeout::{TimeoutDefaults, elapsed};
use crate::resilience::{Destination, RouteStack};

impl Outbound {
    /// Sends a tunnel (`CONNECT` or upgrade) to a balanced endpoint, outside
    /// the retry and timeout layers; only the default response-head timeout
    /// bounds the wait for the upstream's answer (`101`).
    pub(super) async fn tunnel(
        &self,
        destination: &Destination,
        req: Request<BoxBody>,
    ) -> Result<Response<BoxBody>, ProxyError> {
        let addr = destination.balancer.pick(None)?.addr;
        CallAttempts::record_in(&req, addr);
        let label = &destination.label;
        let answer = async {
            if req.method() == Method::CONNECT {
                self.forwarder.connect(req, addr, label).await
            } else {
                self.forwarder.forward(req, addr, label).await
            }
        };
        match self.timeout_defaults.request {
            None => answer.await,
            Some(after) => tokio::time::timeout(after, answer)
                .await
                .unwrap_or_else(|_| Err(elapsed(label, "request", after))),
        }
    }
}

/// Sends a request through its route's stack. `defaults` bound what no
/// policy does: the response head wait when the route's policy sets no
/// `timeouts.request`, the body's stream idle for services without a policy.
pub(super) async fn request(
    route: &RouteStack,
    service: &str,
    explicit_policy: bool,
    defaults: TimeoutDefaults,
    mut req: Request<BoxBody>,
) -> Result<Response<BoxBody>, ProxyError> {
    let config = &route.config;
    if explicit_policy {
        CallContext::of(&mut req).connect_timeout = Some(config.connect_timeout);
    }
    let call = route.call(req);
    let head_timeout = defaults
        .request
        .filter(|_| !(explicit_policy && config.request_timeout_set));
    let answered = match head_timeout {
        None => call.await,
        Some(after) => match tokio::time::timeout(after, call).await {
            Ok(answered) => answered,
            Err(_) => {
                config.request_timeouts.inc();
                Err(elapsed(service, "request", after).into())
            }
        },
    };
    let response = answered.map_err(|e| ProxyError::from_stack(e, service))?;
    let idle = if explicit_policy {
        Some(config.stream_idle_timeout)
    } else {
        defaults.stream_idle
    };
    let Some(idle) = idle else {
        return Ok(response);
    };
    let fired = config.stream_idle_timeouts.clone();
    Ok(response.map(|b| BoxBody::new(IdleTimeoutBody::new(b, idle, fired))))
}
