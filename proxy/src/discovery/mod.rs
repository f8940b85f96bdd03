//! Control-plane mode (`--control-plane URL`): the proxy's side of
//! `levee.v1.Discovery/Watch` (docs/control-plane.md).
//!
//! One task ([`watch`]) owns the stream: it says hello (service, namespace,
//! app port, inbound address and port, version, every destination
//! subscribed), subscribes destinations as the outbound path meets them and
//! unsubscribes those it evicts ([`crate::subscriptions`], kept in
//! [`Shared`], forgetting their state), and turns each `ServiceUpdate`
//! into a new [`crate::snapshot::Snapshot`] installed with [`Shared::install`],
//! answering ACK, or NACK with the reason when the update cannot be applied
//! ([`services`]) or names a service the proxy never subscribed to (such an
//! update is ignored: no state, no route). After any disconnect it reconnects with jittered
//! exponential backoff ([`RECONNECT_BACKOFF`]) and resends hello with every
//! subscription (a full resync); meanwhile the last good snapshot serves.
//! `--control-plane` may list several replicas (comma-separated): each
//! failed stream or connect moves to the next one in the list (round robin).
//!
//! `--policy-cache FILE` ([`cache`]) keeps the last good state on disk after
//! each accepted update; a proxy that starts while the control plane is
//! unreachable installs it (`/config` `source` says `policy-cache:…`).
//! `/ready` turns 200 once the first stream has answered every initial
//! subscription, or the cache was installed.

pub mod cache;
pub mod services;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Endpoint;

use crate::backoff::Backoff;
use crate::body::BoxError;
use crate::state::Shared;

pub use services::LocalChecks;
pub use watch::RESYNC_HOLD;

/// Who this proxy is, as its hello tells the control plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// `--service` (empty: registers no endpoint).
    pub service: String,
    /// `--namespace`.
    pub namespace: String,
    /// The port callers use for the service (`--service-port`, else `--app-port`).
    pub service_port: u16,
    /// The inbound listener's IP when bound to one; empty lets the control
    /// plane use the stream's peer address.
    pub address: String,
    /// The inbound listener's bound port.
    pub inbound_port: u16,
}

impl Identity {
    /// The identity of a proxy with these flags and bound listeners.
    pub fn new(
        service: Option<&str>,
        namespace: &str,
        service_port: u16,
        inbound: SocketAddr,
    ) -> Self {
        Identity {
            service: service.unwrap_or_default().to_owned(),
            namespace: namespace.to_owned(),
            service_port,
            address: if inbound.ip().is_unspecified() {
                String::new()
            } else {
                inbound.ip().to_string()
            },
            inbound_port: inbound.port(),
        }
    }
}

impl Identity {
    /// The proxy's own service port (`service.namespace:service_port`), if it has one.
    pub fn own_service(&self) -> Option<levee_proto::policy::ServiceKey> {
        if self.service.is_empty() || self.service_port == 0 {
            return None;
        }
        levee_proto::policy::ServiceKey::from_authority(
            &self.service,
            &self.namespace,
            self.service_port,
        )
        .ok()
    }
}

/// Everything the watch task needs.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// `--control-plane`: one URL, e.g. `http://127.0.0.1:8090`, or a
    /// comma-separated list of replicas tried in turn.
    pub url: String,
    pub identity: Identity,
    /// `--policy-cache`.
    pub cache: Option<PathBuf>,
    pub backoff: Backoff,
    pub checks: LocalChecks,
    /// How long endpoints emptied right after a (re)connect are held
    /// ([`RESYNC_HOLD`]; shorter in tests).
    pub resync_hold: Duration,
    /// TLS to the control plane (`None`: `--insecure-plaintext`).
    pub tls: Option<crate::identity::ControlPlaneTls>,
    /// The workload certificate to present (mTLS); streams wait for the
    /// first one. `None`: no identity flags.
    pub certified: Option<crate::identity::CertifiedWatch>,
}

/// The proxy's version as hello reports it.
pub const PROXY_VERSION: &str = concat!("levee-proxy/", env!("CARGO_PKG_VERSION"));

/// How long to wait before reconnecting after the n-th failed stream in a
/// row (full jitter, from 100ms up to 10s; reset once a stream worked).
pub const RECONNECT_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_secs(10),
};

/// Largest message the proxy reads from the control plane: one
/// `ServiceUpdate` (a policy and its endpoints; about 25 bytes per
/// endpoint). Above the control plane's default `--grpc-max-message-size`
/// (4 MiB), so raising that there needs nothing here; a bigger update ends
/// the stream (`OUT_OF_RANGE`) and the last good config keeps serving.
pub const MAX_UPDATE_SIZE: usize = 16 * 1024 * 1024;

/// Largest message the proxy sends (a hello with every subscription).
pub const MAX_REQUEST_SIZE: usize = 4 * 1024 * 1024;

/// Connecting to the control plane fails after this long (then backoff).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The replicas of a `--control-plane` value (comma-separated URLs), in
/// the order given.
fn endpoints(flag: &str) -> Result<Vec<(String, Endpoint)>, BoxError> {
    let mut out = Vec::new();
    for url in flag.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("--control-plane {url:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        out.push((url.to_owned(), endpoint));
    }
    if out.is_empty() {
        return Err(format!("--control-plane {flag:?}: no URL").into());
    }
    Ok(out)
}

/// Starts watching: checks the URL and the names the hello will carry,
/// reads the cache (if any), and spawns the watch task on `tasks` until
/// `shutdown`. Errors: the URL is not usable, or `--service`/`--namespace`
/// are names the control plane refuses (it would end every stream).
pub async fn start(
    shared: Arc<Shared>,
    config: DiscoveryConfig,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Result<(), BoxError> {
    let endpoints = endpoints(&config.url)?;
    let names = levee_proto::v1::Hello {
        service: config.identity.service.clone(),
        namespace: config.identity.namespace.clone(),
        ..Default::default()
    };
    levee_proto::policy::check_hello(&names).map_err(|errors| {
        format!("--service/--namespace (sent to the control plane in hello): {errors}")
    })?;
    let changes = shared
        .subscriptions
        .enable()
        .ok_or("discovery is already running")?;
    let cached = match &config.cache {
        Some(path) if path.exists() => match cache::load(path).await {
            Ok(services) => {
                tracing::info!(path = %path.display(), services = services.iter().count(), "policy cache read");
                Some(services)
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring an unreadable policy cache");
                None
            }
        },
        _ => None,
    };
    let watcher = watch::Watcher::new(shared, config, endpoints, cached);
    tasks.spawn(watcher.run(changes, shutdown));
    Ok(())
}
