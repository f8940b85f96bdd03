//! The proxy's life: bind the three listeners, publish their addresses, load
//! policy, serve, and on shutdown drain in-flight work for up to the grace
//! period before cutting what is left.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::BoxError;
use crate::config::{AccessLogFormat, ProxyConfig};
use crate::forward::Forwarder;
use crate::forward::pool::PoolSettings;
use crate::forward::upgrade::AllowedUpgrades;
use crate::inbound::Inbound;
use crate::loops::OwnListeners;
use crate::metrics::{Direction, Metrics, tcp_target};
use crate::observe::access_log::AccessLog;
use crate::outbound::Outbound;
use crate::resilience::timeout::TimeoutDefaults;
use crate::server::{self, Limits, Shutdown};
use crate::state::Shared;
use crate::tls::{Credentials, Origination, Termination, TlsConfigs, watch_credentials};
use crate::trace::Tracing;
use crate::transparent::{MeshOrigination, Passthrough, Transparent};

/// How long spans still queued at shutdown may take to reach the collector.
const TRACE_FLUSH: Duration = Duration::from_secs(2);

/// The addresses the listeners actually bound (they may be given as port 0).
/// Written as JSON to `--addr-file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BoundAddrs {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
}

/// `Err` when the local app (`127.0.0.1:app_port`) would be one of the
/// listeners `addrs`: inbound calls would loop.
fn refuse_app_loop(app_port: u16, addrs: &BoundAddrs) -> Result<(), BoxError> {
    let app = SocketAddr::from(([127, 0, 0, 1], app_port));
    let all = OwnListeners::new([addrs.outbound, addrs.inbound, addrs.admin]);
    match all.reached_by(app) {
        None => Ok(()),
        Some(listener) => Err(format!(
            "--app-port {app_port}: the local app at {app} would be this proxy's own listener \
             {listener} (outbound {}, inbound {}, admin {}); inbound calls would loop",
            addrs.outbound, addrs.inbound, addrs.admin
        )
        .into()),
    }
}

/// Runs the proxy until `shutdown` is cancelled and in-flight work has
/// drained (or the grace period ran out). Errors: a listener could not be
/// bound, the app port is one of the listeners (inbound calls would loop),
/// the addr file could not be written, or the policy file is invalid.
pub async fn run(config: ProxyConfig, shutdown: CancellationToken) -> Result<(), BoxError> {
    run_with(config, shutdown, None).await
}

/// [`run`], also sending the bound addresses on `bound` once listening
/// (in-process tests use this with port 0).
pub async fn run_with(
    config: ProxyConfig,
    shutdown: CancellationToken,
    bound: Option<oneshot::Sender<BoundAddrs>>,
) -> Result<(), BoxError> {
    // Checked before binding (a configured port) and after (port 0 bound).
    let configured = BoundAddrs {
        outbound: config.outbound_addr,
        inbound: config.inbound_addr,
        admin: config.admin_addr,
    };
    refuse_app_loop(config.app_port, &configured)?;
    let outbound = bind("outbound", config.outbound_addr).await?;
    let inbound = bind("inbound", config.inbound_addr).await?;
    let admin = bind("admin", config.admin_addr).await?;
    let addrs = BoundAddrs {
        outbound: outbound.local_addr()?,
        inbound: inbound.local_addr()?,
        admin: admin.local_addr()?,
    };
    refuse_app_loop(config.app_port, &addrs)?;
    let app = SocketAddr::from(([127, 0, 0, 1], config.app_port));
    if let Some(path) = &config.addr_file {
        write_addr_file(path, &addrs)
            .map_err(|e| format!("writing --addr-file {}: {e}", path.display()))?;
    }
    tracing::info!(outbound = %addrs.outbound, inbound = %addrs.inbound, admin = %addrs.admin, "listening");

    let mut shared = Shared::new(config.namespace.clone(), Metrics::new());
    shared.rate_limit_clients = config.max_rate_limit_clients;
    let shared = Arc::new(shared);
    let tracing = Tracing::from_config(&config, &shared)?;
    let tasks = TaskTracker::new();
    let hard = CancellationToken::new();
    {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        let limits = crate::admin::AdminLimits {
            max_connections: config.admin_max_connections,
            header_read_timeout: config.header_read_timeout,
            topology: config.admin_topology,
        };
        tasks.spawn(async move {
            if let Err(error) = crate::admin::serve(admin, shared, limits, shutdown).await {
                tracing::error!(%error, "admin server failed");
            }
        });
    }
    if let Some(path) = &config.policy_file {
        let loaded =
            crate::policy_source::load_and_watch(shared.clone(), path.clone(), shutdown.clone())
                .await;
        if let Err(error) = loaded {
            // Let the admin server go before reporting.
            shutdown.cancel();
            tasks.close();
            tasks.wait().await;
            return Err(error);
        }
    }
    // The workload certificate from Certify, if any: also the mesh's mTLS
    // identity unless identity files are given.
    let mut workload: Option<crate::identity::CertifiedWatch> = None;
    if let Some(url) = &config.control_plane {
        let security = match crate::identity::ControlPlaneSecurity::from_config(&config, url) {
            Ok(security) => security,
            Err(error) => {
                shutdown.cancel();
                tasks.close();
                tasks.wait().await;
                return Err(error.into());
            }
        };
        let (tls, certified) = match security {
            crate::identity::ControlPlaneSecurity::Plaintext => (None, None),
            crate::identity::ControlPlaneSecurity::Tls { tls, identity } => {
                let certified = identity.map(|settings| {
                    crate::identity::start(
                        *settings,
                        shared.metrics.identity().clone(),
                        shutdown.clone(),
                        &tasks,
                    )
                });
                (Some(tls), certified)
            }
        };
        if let Some(certified) = &certified {
            let _ = shared.identity.set(certified.clone());
            workload = Some(certified.clone());
        }
        // Ready once the control plane (or the policy cache) gave a config.
        let discovery = crate::discovery::DiscoveryConfig {
            url: url.clone(),
            identity: crate::discovery::Identity::new(
                config.service.as_deref(),
                &config.namespace,
                config.service_port.unwrap_or(config.app_port),
                addrs.inbound,
            ),
            cache: config.policy_cache.clone(),
            backoff: crate::discovery::RECONNECT_BACKOFF,
            checks: crate::discovery::LocalChecks {
                outbound: Some(addrs.outbound),
            },
            resync_hold: crate::discovery::RESYNC_HOLD,
            tls,
            certified,
        };
        if let Err(error) =
            crate::discovery::start(shared.clone(), discovery, shutdown.clone(), &tasks).await
        {
            shutdown.cancel();
            tasks.close();
            tasks.wait().await;
            return Err(error);
        }
    } else {
        shared.set_ready(true);
    }
    let tls_configs = shared.tls.clone();
    if let Some(files) = config.identity_files() {
        let started = match files.load_and_watch(shutdown.clone()).await {
            Ok(credentials) => start_tls(&tls_configs, credentials, &shared, &tasks),
            Err(error) => Err(error),
        };
        if let Err(error) = started {
            shutdown.cancel();
            tasks.close();
            tasks.wait().await;
            return Err(format!("identity files: {error}").into());
        }
    } else if let Some(certified) = workload {
        let credentials = crate::identity::mesh_credentials(certified, shutdown.clone(), &tasks);
        if let Err(error) = start_tls(&tls_configs, credentials, &shared, &tasks) {
            shutdown.cancel();
            tasks.close();
            tasks.wait().await;
            return Err(format!("workload certificate: {error}").into());
        }
    }
    if let Some(tx) = bound {
        let _ = tx.send(addrs);
    }

    let pool = PoolSettings {
        connect_timeout: config.connect_timeout,
        idle_timeout: config.upstream_idle_timeout,
        h2: config.h2_settings(),
        ..PoolSettings::default()
    };
    // The forwarder never connects to the outbound or admin listener. The
    // inbound listener is a fine target (the workload's own endpoint, e.g.
    // when it calls its own service): it forwards only to the app, which
    // is not a listener (checked above), so it cannot close a loop.
    let own = OwnListeners::new([addrs.outbound, addrs.admin]);
    let origination = Arc::new(Origination::new(
        tls_configs.clone(),
        shared.clone(),
        shared.metrics.tls(),
    ));
    let forwarder = Arc::new(
        Forwarder::new(pool, tasks.clone(), hard.clone())
            .with_origination(origination.clone())
            .with_own_listeners(own)
            .with_tunnel_idle_timeout(config.tunnel_idle_timeout)
            .with_allowed_upgrades(AllowedUpgrades::new(&config.allowed_upgrades)),
    );
    let timeout_defaults = TimeoutDefaults::new(
        config.default_request_timeout,
        config.default_stream_idle_timeout,
    );
    let limits = Limits {
        max_header_bytes: config.max_header_bytes,
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
        stall_timeout: timeout_defaults.stream_idle,
        h2: config.h2_settings(),
    };
    let listeners = Shutdown {
        graceful: shutdown.clone(),
        hard: hard.clone(),
        tasks: tasks.clone(),
    };
    let access_log = config
        .access_log
        .map(|AccessLogFormat::Json| AccessLog::stdout());
    // Opaque forwards never reach them either (see `Passthrough`).
    let own_listeners = Arc::new(OwnListeners::new([addrs.outbound, addrs.admin]));
    let transparent = |direction, target| {
        Transparent::new(
            Passthrough::new(
                config.connect_timeout,
                config.idle_timeout,
                shared.metrics.tcp(direction, target),
            )
            .with_own_listeners(own_listeners.clone()),
            config.detect_timeout,
            &config.opaque_ports,
        )
    };
    let out = Arc::new(
        Outbound::new(shared.clone(), forwarder.clone(), access_log.clone())
            .with_max_destinations(config.max_destinations)
            .with_tracing(tracing.clone())
            .with_max_hops(config.max_hops)
            .with_timeout_defaults(timeout_defaults)
            .with_transparent(
                transparent(Direction::Outbound, tcp_target::PASSTHROUGH).with_origination(
                    MeshOrigination::new(
                        origination,
                        tls_configs.clone(),
                        shared.clone(),
                        config.detect_timeout,
                    ),
                ),
            ),
    );
    tasks.spawn(server::serve(
        outbound,
        out,
        limits.clone(),
        listeners.clone(),
    ));
    let service = config
        .service
        .clone()
        .unwrap_or_else(|| "unknown".to_owned());
    let inb = Arc::new(
        Inbound::new(forwarder, app, service, &shared.metrics, access_log)
            .with_policy(
                shared.clone(),
                config.service_port.unwrap_or(config.app_port),
                timeout_defaults,
            )
            .with_tracing(tracing.clone())
            .with_max_hops(config.max_hops)
            .with_transparent(
                transparent(Direction::Inbound, tcp_target::WORKLOAD)
                    .with_termination(Termination::new(tls_configs.clone(), shared.metrics.tls())),
            )
            .with_tls(Termination::new(tls_configs, shared.metrics.tls())),
    );
    tasks.spawn(server::serve(inbound, inb, limits, listeners));

    shutdown.cancelled().await;
    tracing::info!(grace = ?config.shutdown_grace, "shutting down: draining in-flight requests");
    tasks.close();
    if tokio::time::timeout(config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing remaining connections");
        hard.cancel();
        tasks.wait().await;
    }
    if let Some(tracing) = &tracing {
        tracing.shutdown(TRACE_FLUSH).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Puts the first credentials in use (refusing unusable ones) and keeps
/// the TLS configurations in step with later ones.
fn start_tls(
    configs: &Arc<TlsConfigs>,
    credentials: watch::Receiver<Option<Arc<Credentials>>>,
    shared: &Shared,
    tasks: &TaskTracker,
) -> Result<(), BoxError> {
    if let Some(first) = credentials.borrow().clone() {
        configs.install(first)?;
    }
    tasks.spawn(watch_credentials(
        configs.clone(),
        credentials,
        shared.metrics.tls(),
    ));
    Ok(())
}

async fn bind(which: &str, addr: SocketAddr) -> Result<TcpListener, BoxError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("binding the {which} listener to {addr}: {e}").into())
}

/// Writes `addrs` as JSON to `path`; a reader never sees a half-written file.
fn write_addr_file(path: &Path, addrs: &BoundAddrs) -> std::io::Result<()> {
    let json = serde_json::to_vec(addrs).map_err(std::io::Error::other)?;
    levee_proto::fs::write_atomically(path, &json)
}
