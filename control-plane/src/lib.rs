//! `levee-control-plane`: stores resilience policies and pushes them to
//! every proxy over `Discovery.Watch`; `leveectl` is its command-line client.
//!
//! Layout:
//! - `config`: command-line flags (clap, `LEVEE_*` env fallbacks).
//! - `store`: the embedded, crash-safe document store (redb) under `--data-dir`.
//! - `admin`: the `PolicyAdmin` gRPC service (Apply, Get, List, Delete, Status).
//! - `auth`: who may call `PolicyAdmin` and `JoinTokens` (bearer token, or loopback only).
//! - `identity`: the CA (`Identity.Certify`), join tokens, TokenReview, and
//!   who a Discovery stream is (its workload certificate).
//! - `discovery`: the `Discovery.Watch` stream, per-service snapshots, proxy
//!   status, and its limits (streams per peer, subscriptions per stream).
//! - `metrics`, `http`: Prometheus metrics and `/live`, `/ready`, `/metrics` on
//!   `--http-addr` (connection cap, header-read timeout).
//!
//! gRPC message sizes (`--grpc-max-message-size`) are set on both services here.
//! - `ctl`: the `leveectl` command's logic (the binary in `src/bin` is thin).
//!
//! [`start`] binds both listeners and returns their addresses (port 0 friendly);
//! [`run`] is `start` and wait, as the binary uses it.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod ctl;
pub mod discovery;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod store;

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use levee_proto::v1::discovery_server::DiscoveryServer;
use levee_proto::v1::identity_server::IdentityServer;
use levee_proto::v1::join_tokens_server::JoinTokensServer;
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

/// File name of the trust bundle (PEM) the control plane writes in `--data-dir`.
pub const TRUST_BUNDLE_FILE: &str = "trust-bundle.pem";

/// Lifetime of the gRPC serving certificate, issued anew at every start.
const SERVING_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

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
    let identity = identity_services(&config, &store, &metrics).await?;

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
        require_identity: !config.insecure_plaintext,
    });
    let max_message = config.grpc_max_message_size;
    let admin = PolicyAdminServer::new(admin)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let tokens_auth = auth.clone();
    let admin =
        tonic::service::interceptor::InterceptedService::new(admin, move |req| auth.check(req));
    let join_tokens = tonic::service::interceptor::InterceptedService::new(
        JoinTokensServer::new(identity.join_tokens),
        move |req| tokens_auth.check(req),
    );
    let certify = IdentityServer::new(identity.certify)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let discovery = DiscoveryServer::new(discovery)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let mut grpc_shutdown = shutdown.clone();
    // Keepalives find proxies that vanished without closing their stream
    // (host crash, partition), so their endpoints leave after the grace period.
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = identity.tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| format!("gRPC TLS settings: {e}"))?;
    }
    let grpc_server = builder
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(admin)
        .add_service(discovery)
        .add_service(certify)
        .add_service(join_tokens)
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

/// The identity side of a started control plane.
struct IdentityParts {
    certify: identity::service::IdentityService,
    join_tokens: identity::service::JoinTokensService,
    /// `None` with `--insecure-plaintext`.
    tls: Option<tonic::transport::ServerTlsConfig>,
}

/// Loads (or creates) the trust anchor, writes the trust bundle to
/// `--data-dir`, connects TokenReview if asked, and makes the gRPC serving
/// certificate (server-auth for everyone; client certificates optional at
/// the handshake, required by Discovery).
async fn identity_services(
    config: &config::ControlPlaneConfig,
    store: &Arc<PolicyStore>,
    metrics: &Metrics,
) -> Result<IdentityParts, BoxError> {
    use identity::anchor;
    levee_proto::identity::check_trust_domain(&config.trust_domain)
        .map_err(|e| format!("--trust-domain: {e}"))?;
    let lifetime = config.workload_cert_ttl.get();
    if lifetime < Duration::from_secs(1) {
        return Err("--workload-cert-ttl must be at least 1s".into());
    }
    let anchor = match (&config.ca_cert_file, &config.ca_key_file) {
        (Some(cert), Some(key)) => anchor::from_files(&anchor::CaFiles {
            cert: cert.clone(),
            key: key.clone(),
            roots: config.ca_roots_file.clone(),
        })?,
        _ => anchor::generated(store, &config.trust_domain, config.ca_rotate)?,
    };
    let ca = Arc::new(identity::ca::Ca::new(
        anchor,
        &config.trust_domain,
        lifetime,
    ));
    let bundle = config.data_dir.join(TRUST_BUNDLE_FILE);
    levee_proto::fs::write_atomically(&bundle, ca.roots_pem().as_bytes())
        .map_err(|e| format!("writing the trust bundle {}: {e}", bundle.display()))?;
    tracing::info!(path = %bundle.display(), roots = ca.roots().len(), trust_domain = %config.trust_domain, "trust bundle written");
    let tokens = identity::tokens::JoinTokens::new(store.clone(), &config.trust_domain);
    let reviewer: Option<Arc<dyn identity::tokenreview::ServiceAccountReviewer>> =
        if config.token_review {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("--token-review: no Kubernetes API client: {e}"))?;
            Some(Arc::new(identity::tokenreview::TokenReviewer::new(
                client,
                &config.token_review_audience,
                &config.trust_domain,
            )))
        } else {
            None
        };
    let tls = if config.insecure_plaintext {
        tracing::warn!(
            "--insecure-plaintext: gRPC is served without TLS and Discovery requires no workload certificate"
        );
        None
    } else {
        let (chain, key) = ca.serving_identity(&config.server_names, SERVING_CERT_LIFETIME)?;
        let chain_pem: String = chain
            .iter()
            .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
            .collect();
        let key_pem = pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            key.secret_pkcs8_der().to_vec(),
        ));
        Some(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(chain_pem, key_pem))
                .client_ca_root(tonic::transport::Certificate::from_pem(ca.roots_pem()))
                .client_auth_optional(true),
        )
    };
    Ok(IdentityParts {
        certify: identity::service::IdentityService::new(
            ca,
            tokens.clone(),
            reviewer,
            metrics.clone(),
        ),
        join_tokens: identity::service::JoinTokensService::new(tokens),
        tls,
    })
}
