//! Inbound admission: the local service's `spec.inbound` (rate limit, in
//! total or per client; concurrency; request timeout), compiled once per
//! policy version. A policy update rebuilds only the parts whose config
//! changed, so a limiter's state and the calls holding bulkhead slots
//! survive updates that did not touch them.
//!
//! Order per request (DESIGN.md §2): rate limit (429) → bulkhead (503
//! overloaded, queued wait included in the request timeout) → the app,
//! bounded by the request timeout (504).

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use levee_proto::policy::{DEFAULT_ROUTE, EffectiveInbound, ServiceKey};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::errors::{ErrorKind, ProxyError};
use crate::metrics::Direction;
use crate::resilience::concurrency::Bulkhead;
use crate::resilience::ratelimit::InboundRateLimit;
use crate::state::Shared;

/// The limits of one policy version.
#[derive(Debug, Default)]
struct Compiled {
    /// The snapshot version these were built from.
    version: u64,
    rate: Option<Arc<InboundRateLimit>>,
    bulkhead: Option<Arc<Bulkhead>>,
    timeout: Option<Duration>,
}

/// What an admitted request carries to the app.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The bulkhead slot, held until the response head is back.
    pub _permit: Option<OwnedSemaphorePermit>,
    /// The deadline for the app's answer (the queued wait counts too).
    pub deadline: Option<Instant>,
    /// The configured request timeout, for the error message.
    pub timeout: Option<Duration>,
}

/// The local service's inbound limits, following policy updates.
#[derive(Debug)]
pub(crate) struct InboundLimits {
    shared: Arc<Shared>,
    /// The local service as policies target it (`None`: no policy applies).
    key: Option<ServiceKey>,
    service: String,
    current: ArcSwap<Compiled>,
    /// Serialises rebuilds after a policy update.
    rebuild: Mutex<()>,
}

impl InboundLimits {
    /// `service` is `--service`; `service_port` the port its policies target
    /// (`--service-port`, else `--app-port`).
    pub(crate) fn new(shared: Arc<Shared>, service: &str, service_port: u16) -> InboundLimits {
        let key = ServiceKey::from_authority(service, &shared.namespace, service_port).ok();
        InboundLimits {
            shared,
            key,
            service: service.to_owned(),
            // Version 0 is "nothing loaded": compiled empty, rebuilt on the first install.
            current: ArcSwap::from_pointee(Compiled::default()),
            rebuild: Mutex::new(()),
        }
    }

    /// Admits a request from `client` or returns the error to answer with.
    pub(crate) async fn admit(&self, client: Option<IpAddr>) -> Result<Admitted, ProxyError> {
        let limits = self.compiled();
        let deadline = limits.timeout.map(|t| Instant::now() + t);
        if let Some(rate) = &limits.rate {
            rate.check(client)?;
        }
        let permit = match (&limits.bulkhead, deadline, limits.timeout) {
            (Some(bulkhead), Some(deadline), Some(limit)) => Some(
                tokio::time::timeout_at(deadline, bulkhead.acquire())
                    .await
                    .map_err(|_| self.timed_out(limit))??,
            ),
            (Some(bulkhead), _, _) => Some(bulkhead.acquire().await?),
            (None, _, _) => None,
        };
        Ok(Admitted {
            _permit: permit,
            deadline,
            timeout: limits.timeout,
        })
    }

    /// The `timeout` error of a request that waited `limit` in vain; counts
    /// `levee_timeouts_total{kind="request"}`.
    pub(crate) fn timed_out(&self, limit: Duration) -> ProxyError {
        self.shared
            .metrics
            .timeouts(&self.service, DEFAULT_ROUTE, "request")
            .inc();
        ProxyError::new(
            ErrorKind::Timeout,
            &*self.service,
            format!("inbound request timeout: no response within {limit:?}"),
        )
    }

    /// The limits for the current policy version, rebuilt when it moved on.
    fn compiled(&self) -> Arc<Compiled> {
        let version = self.shared.snapshot.load().version;
        let current = self.current.load_full();
        if current.version == version {
            return current;
        }
        let _serialised = self.rebuild.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load_full();
        let snapshot = self.shared.snapshot.load_full();
        if current.version == snapshot.version {
            return current;
        }
        let cfg: Option<EffectiveInbound> = self
            .key
            .as_ref()
            .and_then(|key| snapshot.policy_for(key))
            .map(|policy| policy.spec.inbound.effective());
        let metrics = &self.shared.metrics;
        let rate = cfg.and_then(|c| c.rate_limit).map(|want| {
            match current.rate.as_ref().filter(|r| *r.config() == want) {
                Some(same) => same.clone(),
                None => Arc::new(InboundRateLimit::new(&want, &self.service, metrics)),
            }
        });
        let bulkhead = cfg.and_then(|c| c.concurrency).map(|want| {
            match current.bulkhead.as_ref().filter(|b| *b.config() == want) {
                Some(same) => same.clone(),
                None => Arc::new(Bulkhead::new(
                    &want,
                    Direction::Inbound,
                    &self.service,
                    metrics,
                )),
            }
        });
        let compiled = Arc::new(Compiled {
            version: snapshot.version,
            rate,
            bulkhead,
            timeout: cfg.and_then(|c| c.request_timeout).map(|d| d.get()),
        });
        self.current.store(compiled.clone());
        compiled
    }
}
