//! Starting the control plane: checks the flags that need it, opens the
//! policy source ([`crate::source`]) and the trust side ([`crate::trust`]),
//! binds the gRPC, HTTP and webhook listeners, writes `--addr-file`, and
//! spawns the servers: gRPC serves PolicyAdmin, Discovery, Identity and
//! (with a store) JoinTokens, with gRPC message sizes
//! (`--grpc-max-message-size`) set on every service here.

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
use crate::config::ControlPlaneConfig;
use crate::discovery::DiscoveryService;
use crate::discovery::limits::WatchLimits;
use crate::discovery::registry::Registry;
use crate::discovery::session::SessionContext;
use crate::discovery::status::Sessions;
use crate::error::BoxError;
use crate::metrics::Metrics;
use crate::source::{Mode, Source};
use crate::{admin, http, kubernetes, source, trust, webhook};

/// Where a started control plane listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundAddrs {
    /// gRPC: PolicyAdmin and Discovery.
    pub grpc: SocketAddr,
    /// HTTP: `/live`, `/ready`, `/metrics`.
    pub http: SocketAddr,
    /// HTTPS admission webhooks, when `--webhook-addr` is given.
    pub webhook: Option<SocketAddr>,
}

/// Opens the store (or, with `--kubernetes`, starts the watches, the
/// election and the status writer), binds both listeners, writes
/// `--addr-file`, and spawns the servers. The handle finishes when both
/// servers have stopped.
pub async fn start(
    config: ControlPlaneConfig,
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
    let registry = Arc::new(Registry::new());
    let sessions = Arc::new(Sessions::default());
    let Source {
        mode,
        kube_client,
        replica_name,
        kube_leader,
        status_writer,
    } = source::open(&config, &registry, &sessions, &metrics, &shutdown).await?;
    let identity = trust::identity_services(
        &config,
        match &mode {
            Mode::Store(store) => Some(store),
            Mode::Kubernetes(_) => None,
        },
        kube_client,
        &metrics,
    )
    .await?;
    // Injected pods mount the trust bundle from their own namespace only
    // when they dial the control plane over https.
    if let Some((client, leader)) = kube_leader
        && config.trust_bundle_copy
        && identity.tls.is_some()
        && config.webhook.proxy_control_plane.starts_with("https://")
    {
        tokio::spawn(kubernetes::trust_bundle::run(
            client,
            identity.roots_pem.clone(),
            leader,
            shutdown.clone(),
        ));
    }

    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|e| format!("--grpc-addr {}: {e}", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| format!("--http-addr {}: {e}", config.http_addr))?;
    let webhook = webhook::start(
        &config.webhook,
        &config.token_review_audience,
        shutdown.clone(),
    )
    .await?;
    let addrs = BoundAddrs {
        grpc: grpc.local_addr()?,
        http: http.local_addr()?,
        webhook: webhook.as_ref().map(|(addr, _)| *addr),
    };
    tracing::info!(
        grpc = %addrs.grpc, http = %addrs.http,
        mode = if config.kubernetes { "kubernetes".to_owned() } else { format!("store {}", config.data_dir.display()) },
        admin = if auth.requires_token() { "bearer token" } else { "loopback only" },
        "control plane listening"
    );
    if let Some(path) = &config.addr_file {
        let mut json =
            serde_json::json!({ "grpc": addrs.grpc.to_string(), "http": addrs.http.to_string() });
        if let Some(webhook) = addrs.webhook {
            json["webhook"] = webhook.to_string().into();
        }
        levee_proto::fs::write_atomically(path, json.to_string().as_bytes())?;
    }

    let discovery = DiscoveryService::new(SessionContext {
        registry: registry.clone(),
        sessions: sessions.clone(),
        metrics: metrics.clone(),
        grace: config.endpoint_grace.get(),
        shutdown: shutdown.clone(),
        limits: WatchLimits {
            streams_per_peer: config.max_watch_streams_per_peer,
            subscriptions_per_stream: config.max_subscriptions_per_stream,
        },
        register_endpoints: !config.kubernetes,
        require_identity: !config.insecure_plaintext,
    });
    let max_message = config.grpc_max_message_size;
    let certify = IdentityServer::new(identity.certify)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let discovery = DiscoveryServer::new(discovery)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    // Keepalives find proxies that vanished without closing their stream
    // (host crash, partition), so their endpoints leave after the grace period.
    let mut grpc_builder = tonic::transport::Server::builder();
    if let Some(tls) = identity.tls {
        grpc_builder = grpc_builder
            .tls_config(tls)
            .map_err(|e| format!("gRPC TLS settings: {e}"))?;
    }
    let mut grpc_builder = grpc_builder
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    let (readiness, router) = match mode {
        Mode::Store(store) => {
            let admin = AdminService::new(
                store.clone(),
                registry.clone(),
                sessions.clone(),
                metrics.clone(),
            );
            let admin = PolicyAdminServer::new(admin)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message);
            let tokens_auth = auth.clone();
            let admin = tonic::service::interceptor::InterceptedService::new(admin, move |req| {
                auth.check(req)
            });
            let router = grpc_builder
                .add_service(admin)
                .add_service(discovery)
                .add_service(certify);
            // Join tokens live in the store (Kubernetes mode proves
            // identities with service-account tokens instead).
            let router = match identity.join_tokens {
                Some(join_tokens) => {
                    let tokens_auth = tokens_auth.clone();
                    router.add_service(tonic::service::interceptor::InterceptedService::new(
                        JoinTokensServer::new(join_tokens),
                        move |req| tokens_auth.check(req),
                    ))
                }
                None => router,
            };
            (http::Readiness::Store(store), router)
        }
        // Policies are Kubernetes objects (kubectl writes them): PolicyAdmin
        // only reports this replica's proxies.
        Mode::Kubernetes(synced) => {
            let admin = PolicyAdminServer::new(admin::kubernetes::KubernetesAdmin::new(
                sessions.clone(),
                replica_name,
            ));
            let admin = tonic::service::interceptor::InterceptedService::new(admin, move |req| {
                auth.check(req)
            });
            (
                http::Readiness::Synced(synced),
                grpc_builder
                    .add_service(admin)
                    .add_service(discovery)
                    .add_service(certify),
            )
        }
    };
    let mut grpc_shutdown = shutdown.clone();
    let mut startup_shutdown = shutdown.clone();
    let mut wait_synced = match &readiness {
        http::Readiness::Synced(synced) => Some(synced.clone()),
        http::Readiness::Store(_) => None,
    };
    let grpc_server = async move {
        // Kubernetes mode: Discovery is served once the watches have listed,
        // so no proxy is ever sent an empty, half-read state.
        if let Some(synced) = &mut wait_synced {
            tokio::select! {
                _ = synced.wait_for(|ready| *ready) => {}
                _ = startup_shutdown.wait_for(|stop| *stop) => return Ok(()),
            }
        }
        router
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), async move {
                let _ = grpc_shutdown.wait_for(|stop| *stop).await;
            })
            .await
    };
    let http_limits = http::HttpLimits {
        max_connections: usize::try_from(config.http_max_connections).unwrap_or(usize::MAX),
        header_read_timeout: config.http_header_read_timeout.get(),
    };
    let http_server = http::serve(
        http,
        http::HttpState { readiness, metrics },
        http_limits,
        shutdown,
    );
    let serving = tokio::spawn(async move {
        let webhook_server = async move {
            match webhook {
                Some((_, serving)) => serving
                    .await
                    .map_err(|e| format!("webhook server task failed: {e}"))?
                    .map_err(BoxError::from),
                None => Ok(()),
            }
        };
        let (grpc, http, webhook) = tokio::join!(grpc_server, http_server, webhook_server);
        if let Some(writer) = status_writer {
            let _ = writer.await;
        }
        grpc?;
        http?;
        webhook?;
        Ok(())
    });
    Ok((addrs, serving))
}
