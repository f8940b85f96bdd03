//! `levee-control-plane`: stores resilience policies and pushes them to
//! every proxy over `Discovery.Watch`; `leveectl` is its command-line client.
//!
//! Layout:
//! - `config`: command-line flags (clap, `LEVEE_*` env fallbacks).
//! - `store`: the embedded, crash-safe document store (redb) under `--data-dir`.
//! - `admin`: the `PolicyAdmin` gRPC service (Apply, Get, List, Delete, Status).
//! - `auth`: who may call `PolicyAdmin` (bearer token, or loopback only).
//! - `discovery`: the `Discovery.Watch` stream, per-service snapshots, proxy
//!   status, and its limits (streams per peer, subscriptions per stream).
//! - `metrics`, `http`: Prometheus metrics and `/live`, `/ready`, `/metrics` on
//!   `--http-addr` (connection cap, header-read timeout).
//!
//! gRPC message sizes (`--grpc-max-message-size`) are set on both services here.
//! - `crd`: the ResiliencePolicy CustomResourceDefinition (schema from the
//!   policy types, CEL rules, status), printed by `leveectl crd`.
//! - `ctl`: the `leveectl` command's logic (the binary in `src/bin` is thin).
//!
//! [`start`] binds both listeners and returns their addresses (port 0 friendly);
//! [`run`] is `start` and wait, as the binary uses it.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod crd;
pub mod ctl;
pub mod discovery;
pub mod http;
pub mod metrics;
pub mod store;

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use levee_proto::v1::discovery_server::DiscoveryServer;
use levee_proto::v1::policy_admin_server::PolicyAdminServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::admin::AdminService;
use crate::auth::AdminAuth;
use crate::discovery::DiscoveryService;
use crate::discovery::limits::WatchLimits;
use crate::discovery::registry::Registry;
use crate::discovery::session::SessionContext;
use crate::discovery::status::Sessions;
use crate::metrics::Metrics;
use crate::store::PolicyStore;

/// Boxed error used at the binaries' edge.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Where a started control plane listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundAddrs {
    /// gRPC: PolicyAdmin and Discovery.
    pub grpc: SocketAddr,
    /// HTTP: `/live`, `/ready`, `/metrics`.
    pub http: SocketAddr,
}

/// Bind the listeners, report their addresses, and serve until `shutdown` flips to true.
pub async fn run(
    config: config::ControlPlaneConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), BoxError> {
    let (_, serving) = start(config, shutdown).await?;
    serving
        .await
        .map_err(|e| format!("control plane task failed: {e}"))?
}

/// Opens the store, binds both listeners, writes `--addr-file`, and spawns
/// the servers. The handle finishes when both servers have stopped.
pub async fn start(
    config: config::ControlPlaneConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(BoundAddrs, JoinHandle<Result<(), BoxError>>), BoxError> {
    if config.http_header_read_timeout.is_zero() {
        return Err("--http-header-read-timeout must be more than 0s".into());
    }
    let metrics = Metrics::new();
    let token = match &config.admin_token_file {
        Some(path) => Some(AdminAuth::load_token(path)?),
        None => None,
    };
    let auth = AdminAuth::new(token, metrics.clone());
    let store = Arc::new(
        PolicyStore::open(&config.data_dir)
            .map_err(|e| format!("--data-dir {}: {e}", config.data_dir.display()))?,
    );
    let registry = Arc::new(Registry::new());
    let revision = admin::load_registry(&store, &registry)?;
    metrics.set_revision(revision);
    let quarantined = store.quarantined()?.len();
    metrics
        .store_quarantined
        .set(i64::try_from(quarantined).unwrap_or(i64::MAX));
    let sessions = Arc::new(Sessions::default());

    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|e| format!("--grpc-addr {}: {e}", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| format!("--http-addr {}: {e}", config.http_addr))?;
    let addrs = BoundAddrs {
        grpc: grpc.local_addr()?,
        http: http.local_addr()?,
    };
    tracing::info!(
        grpc = %addrs.grpc, http = %addrs.http, revision, data_dir = %config.data_dir.display(),
        admin = if auth.requires_token() { "bearer token" } else { "loopback only" },
        "control plane listening"
    );
    if let Some(path) = &config.addr_file {
        let json =
            serde_json::json!({ "grpc": addrs.grpc.to_string(), "http": addrs.http.to_string() });
        levee_proto::fs::write_atomically(path, json.to_string().as_bytes())?;
    }

    let admin = AdminService::new(
        store.clone(),
        registry.clone(),
        sessions.clone(),
        metrics.clone(),
    );
    let discovery = DiscoveryService::new(SessionContext {
        registry,
        sessions,
        metrics: metrics.clone(),
        grace: config.endpoint_grace.get(),
        shutdown: shutdown.clone(),
        limits: WatchLimits {
            streams_per_peer: config.max_watch_streams_per_peer,
            subscriptions_per_stream: config.max_subscriptions_per_stream,
        },
    });
    let max_message = config.grpc_max_message_size;
    let admin = PolicyAdminServer::new(admin)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let admin =
        tonic::service::interceptor::InterceptedService::new(admin, move |req| auth.check(req));
    let discovery = DiscoveryServer::new(discovery)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let mut grpc_shutdown = shutdown.clone();
    // Keepalives find proxies that vanished without closing their stream
    // (host crash, partition), so their endpoints leave after the grace period.
    let grpc_server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(admin)
        .add_service(discovery)
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), async move {
            let _ = grpc_shutdown.wait_for(|stop| *stop).await;
        });
    let http_limits = http::HttpLimits {
        max_connections: usize::try_from(config.http_max_connections).unwrap_or(usize::MAX),
        header_read_timeout: config.http_header_read_timeout.get(),
    };
    let http_server = http::serve(
        http,
        http::HttpState { store, metrics },
        http_limits,
        shutdown,
    );
    let serving = tokio::spawn(async move {
        let (grpc, http) = tokio::join!(grpc_server, http_server);
        grpc?;
        http?;
        Ok(())
    });
    Ok((addrs, serving))
}
