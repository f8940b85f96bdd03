//! The inbound side per port of the workload. A pod may serve several
//! ports (8080 HTTP, 9090 gRPC); in transparent mode each connection
//! redirected to the inbound listener says which one its caller meant
//! ([`OriginalDst`]), and that port gets its own `spec.inbound` stack
//! (limiters and bulkhead of its own) and its own `service` label.
//!
//! - The main port: a request without an original destination (explicit
//!   mode: the listener itself was dialled), or one whose original port is
//!   the app port (`--app-port`). Its policy is that of
//!   `service.namespace:service_port` (`--service-port`, else
//!   `--app-port`) and its label `--service`, as before there were ports.
//! - Any other original port `P`: the policy of `service.namespace:P` (a
//!   policy naming port `P`, else one for every port of the service) and
//!   the label `<service>:<P>`.
//!
//! At most [`MAX_OTHER_PORTS`] other ports get a stack of their own (a
//! peer sweeping the pod's ports must not grow the proxy's state or
//! metrics without bound). Beyond that, a port that a policy names still
//! gets its own; any other shares one stack labelled `<service>:other`,
//! under the policy for every port of the service.
//!
//! With a control plane, a port's policy is subscribed (pinned, like the
//! proxy's own service) when the port is first met; until it arrives the
//! port runs on the defaults. Lookups are wait-free (an [`ArcSwap`] of the
//! map, replaced on the rare insert).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use http::Request;
use levee_proto::policy::{ServiceKey, SpiffeId};
use prometheus_client::metrics::counter::Counter;
use tower::ServiceExt;

use super::app::AppService;
use super::limits::{InboundLimits, ResponseFuture};
use crate::body::BoxBody;
use crate::errors::{ErrorKind, ProxyError};
use crate::loops;
use crate::metrics::{Direction, Metrics, RequestMetrics, TlsMetrics};
use crate::resilience::timeout::TimeoutDefaults;
use crate::state::Shared;
use crate::tls::ClientIdentity;
use crate::transparent::OriginalDst;

/// Other ports (besides the main one) with a stack of their own, at most.
pub const MAX_OTHER_PORTS: usize = 64;

/// The label suffix of the stack shared by ports over [`MAX_OTHER_PORTS`].
const OVERFLOW: &str = "other";

/// What one port of the workload has: its labels, counters and limits.
pub(crate) struct PortInbound {
    /// The `service` label of everything counted for this port.
    pub(crate) label: Arc<str>,
    pub(crate) metrics: RequestMetrics,
    /// `levee_rejected_total{direction="inbound",reason="loop-detected"}`.
    pub(crate) loops_refused: Counter,
    /// `levee_timeouts_total{kind="idle"}`.
    pub(crate) idle_timeouts: Counter,
    /// `spec.inbound` in front of the app (`None`: no policy source).
    limits: Option<InboundLimits<AppService>>,
    /// Where this port's `spec.inbound.mtls` is read (`None`: no policy
    /// source, every caller admitted).
    policy_key: Option<(Arc<Shared>, ServiceKey)>,
    /// `levee_rejected_total{direction="inbound",reason="unauthorized"}`.
    unauthorized: Counter,
    app: AppService,
}

impl PortInbound {
    fn new(
        label: Arc<str>,
        key: Option<ServiceKey>,
        policy: Option<&PolicySource>,
        metrics: &Metrics,
        app: AppService,
    ) -> PortInbound {
        let policy_key = policy.and_then(|p| key.clone().map(|k| (p.shared.clone(), k)));
        let limits = policy.map(|p| {
            InboundLimits::new(
                p.shared.clone(),
                key,
                label.clone(),
                app.clone(),
                p.defaults,
            )
        });
        PortInbound {
            metrics: metrics.requests(Direction::Inbound, &label, "default"),
            loops_refused: metrics.rejected(Direction::Inbound, &label, loops::REJECTED_REASON),
            idle_timeouts: metrics.timeouts(&label, "default", "idle"),
            unauthorized: metrics.rejected(
                Direction::Inbound,
                &label,
                ErrorKind::Unauthorized.as_str(),
            ),
            label,
            limits,
            policy_key,
            app,
        }
    }

    /// Whether this port's `spec.inbound.mtls` admits `client`; a refusal
    /// is counted (`levee_rejected_total`, `levee_authz_denied_total`).
    pub(crate) fn authorize(
        &self,
        client: Option<&ClientIdentity>,
        tls_metrics: &TlsMetrics,
    ) -> Result<(), ProxyError> {
        let policy = self
            .policy_key
            .as_ref()
            .and_then(|(shared, key)| shared.policy_for(key));
        let mtls = policy.as_ref().and_then(|p| p.spec.inbound.mtls.as_ref());
        let id = client.map(|c| &c.0);
        super::authz::decide(mtls, id).map_err(|denied| {
            self.unauthorized.inc();
            tls_metrics.denied(&self.label, id.map(SpiffeId::as_str));
            ProxyError::new(ErrorKind::Unauthorized, &*self.label, denied.detail(id))
        })
    }

    /// Sends `req` through this port's stack to the app (boxed in a plain
    /// `fn`, as [`InboundLimits::call`] explains).
    pub(crate) fn send(&self, req: Request<BoxBody>) -> ResponseFuture {
        match &self.limits {
            Some(limits) => limits.call(req),
            None => Box::pin(self.app.clone().oneshot(req)),
        }
    }
}

/// Where inbound policies come from.
struct PolicySource {
    shared: Arc<Shared>,
    defaults: TimeoutDefaults,
}

/// Every port's [`PortInbound`], made on first use.
pub(crate) struct InboundPorts {
    /// `--service`: the main port's label, the others' prefix.
    service: Arc<str>,
    /// Redirected connections to this original port are the main port's.
    app_port: u16,
    policy: Option<PolicySource>,
    metrics: Metrics,
    app: AppService,
    main: Arc<PortInbound>,
    others: ArcSwap<HashMap<u16, Arc<PortInbound>>>,
    /// Made on first use by a port over the cap.
    overflow: ArcSwap<Option<Arc<PortInbound>>>,
    /// Serialises inserts.
    grow: Mutex<()>,
}

impl InboundPorts {
    /// No policy yet: every port forwards without limits.
    pub(crate) fn new(service: Arc<str>, app_port: u16, metrics: Metrics, app: AppService) -> Self {
        let main = PortInbound::new(service.clone(), None, None, &metrics, app.clone());
        InboundPorts {
            service,
            app_port,
            policy: None,
            metrics,
            app,
            main: Arc::new(main),
            others: ArcSwap::from_pointee(HashMap::new()),
            overflow: ArcSwap::from_pointee(None),
            grow: Mutex::new(()),
        }
    }

    /// Applies the local service's policies from `shared`; the main port's
    /// is that of `service_port`.
    pub(crate) fn with_policy(
        mut self,
        shared: Arc<Shared>,
        service_port: u16,
        defaults: TimeoutDefaults,
    ) -> Self {
        self.policy = Some(PolicySource { shared, defaults });
        let key = self.key(service_port);
        self.main = Arc::new(self.port(self.service.clone(), key));
        self.others.store(Arc::new(HashMap::new()));
        self
    }

    /// The port a request with `original` (its [`OriginalDst`]) is for.
    pub(crate) fn for_request(&self, original: Option<&OriginalDst>) -> Arc<PortInbound> {
        match original {
            Some(OriginalDst(addr)) if addr.port() != self.app_port => self.other(addr.port()),
            _ => self.main.clone(),
        }
    }

    fn other(&self, port: u16) -> Arc<PortInbound> {
        if let Some(found) = self.others.load().get(&port) {
            return found.clone();
        }
        let _serialised = self.grow.lock().unwrap_or_else(PoisonError::into_inner);
        let others = self.others.load_full();
        if let Some(found) = others.get(&port) {
            return found.clone();
        }
        if others.len() >= MAX_OTHER_PORTS && !self.named_by_a_policy(port) {
            return self.overflow();
        }
        let label: Arc<str> = format!("{}:{port}", self.service).into();
        let key = self.key(port);
        // In control-plane mode the port's policy comes by subscription.
        if let (Some(policy), Some(key)) = (&self.policy, &key) {
            policy.shared.subscriptions.pin_own_port(key.clone());
        }
        let made = Arc::new(self.port(label, key));
        let mut grown = HashMap::clone(&others);
        grown.insert(port, made.clone());
        self.others.store(Arc::new(grown));
        made
    }

    /// The stack shared by ports over the cap (called with `grow` held).
    fn overflow(&self) -> Arc<PortInbound> {
        if let Some(made) = self.overflow.load().as_ref() {
            return made.clone();
        }
        let label: Arc<str> = format!("{}:{OVERFLOW}", self.service).into();
        // Port 0 is no policy's port: the policy for every port applies.
        let made = Arc::new(self.port(label, self.key(0)));
        self.overflow.store(Arc::new(Some(made.clone())));
        made
    }

    /// Whether a policy names `port` of the local service.
    fn named_by_a_policy(&self, port: u16) -> bool {
        let (Some(policy), Some(key)) = (&self.policy, self.key(port)) else {
            return false;
        };
        policy
            .shared
            .policy_for(&key)
            .is_some_and(|p| p.spec.target.port == Some(port))
    }

    /// The local service's `port`, as policies target it (`None`: no
    /// policy source, or `--service` is no service name).
    fn key(&self, port: u16) -> Option<ServiceKey> {
        let namespace = &self.policy.as_ref()?.shared.namespace;
        let mut key = ServiceKey::from_authority(&self.service, namespace, 1).ok()?;
        key.port = port;
        Some(key)
    }

    fn port(&self, label: Arc<str>, key: Option<ServiceKey>) -> PortInbound {
        PortInbound::new(
            label,
            key,
            self.policy.as_ref(),
            &self.metrics,
            self.app.clone(),
        )
    }
}

#[cfg(test)]
mod tests;
