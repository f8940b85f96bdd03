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
//! - `webhook`: the admission webhooks on `--webhook-addr` (HTTPS): sidecar
//!   injector and `ResiliencePolicy` validator, and their certificate.
//! - `kubernetes`: `--kubernetes` mode: policies and endpoints from the API
//!   server's watches into the same registry, Lease election, policy status.

//! - `crd`: the ResiliencePolicy CustomResourceDefinition (schema from the
//!   policy types, CEL rules, status), printed by `leveectl crd`.
//! - `ctl`: the `leveectl` command's logic (the binary in `src/bin` is thin).
//!
//! [`start`] binds the listeners (and the webhooks' with `--webhook-addr`)
//! and returns their addresses (port 0 friendly);
//! [`run`] is `start` and wait, as the binary uses it.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod crd;
pub mod ctl;
pub mod discovery;
pub mod http;
pub mod identity;
pub mod kubernetes;
pub mod metrics;
pub mod store;
pub mod webhook;

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

/// Where policies and endpoints come from.
enum Mode {
    /// The redb store under `--data-dir` (and PolicyAdmin writes it).
    Store(Arc<PolicyStore>),
    /// The Kubernetes API; ready once every watch has listed.
    Kubernetes(watch::Receiver<bool>),
}

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
    /// HTTPS admission webhooks, when `--webhook-addr` is given.
    pub webhook: Option<SocketAddr>,
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

/// Opens the store (or, with `--kubernetes`, starts the watches, the
/// election and the status writer), binds both listeners, writes
/// `--addr-file`, and spawns the servers. The handle finishes when both
/// servers have stopped.
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
    let registry = Arc::new(Registry::new());
    let sessions = Arc::new(Sessions::default());
    // With --kubernetes, one API client (--kubeconfig or in-cluster) serves
    // the watches, the election and --token-review alike.
    let mut kube_client = None;
    // This replica's name (the Lease holder identity), for `leveectl status`.
    let mut replica_name = String::new();
    // With --kubernetes: the client and whether this replica leads, for the
    // trust bundle copies (started once the CA is loaded).
    let mut kube_leader = None;
    // With --kubernetes: the status writer, awaited after the servers stop
    // (it removes this replica's status entries first).
    let mut status_writer = None;
    let mode = if config.kubernetes {
        let client = kubernetes::client(config.kubeconfig.as_deref()).await?;
        kube_client = Some(client.clone());
        let identity = config
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("levee-control-plane-{}", std::process::id()));
        replica_name.clone_from(&identity);
        let running = kubernetes::start(
            client.clone(),
            identity,
            registry.clone(),
            sessions.clone(),
            config.kubernetes_resync.get(),
            // Meshed pods' endpoints expect their SPIFFE ID (never over
            // plaintext: no proxy has a certificate then).
            (config.kubernetes_pod_identities && !config.insecure_plaintext)
                .then(|| config.trust_domain.clone()),
            shutdown.clone(),
        );
        kube_leader = Some((client.clone(), running.leader.clone()));
        status_writer = Some(running.status);
        let mut synced = running.reflectors.synced.clone();
        let (ready_tx, ready_rx) = watch::channel(false);
        tokio::spawn(async move {
            if synced.wait_for(|(n, _)| *n > 0).await.is_ok() {
                let _ = ready_tx.send(true);
            }
        });
        Mode::Kubernetes(ready_rx)
    } else {
        let store = Arc::new(
            PolicyStore::open(&config.data_dir)
                .map_err(|e| format!("--data-dir {}: {e}", config.data_dir.display()))?,
        );
        let revision = admin::load_registry(&store, &registry)?;
        metrics.set_revision(revision);
        let quarantined = store.quarantined()?.len();
        metrics
            .store_quarantined
            .set(i64::try_from(quarantined).unwrap_or(i64::MAX));
        Mode::Store(store)
    };
    let identity = identity_services(
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

/// The identity side of a started control plane.
struct IdentityParts {
    certify: identity::service::IdentityService,
    /// `None` in Kubernetes mode (no store: service-account tokens prove
    /// identities there).
    join_tokens: Option<identity::service::JoinTokensService>,
    /// `None` with `--insecure-plaintext`.
    tls: Option<tonic::transport::ServerTlsConfig>,
    /// The trust bundle (PEM): every root the CA trusts.
    roots_pem: String,
}

/// Loads (or creates) the trust anchor, writes the trust bundle to
/// `--data-dir`, connects TokenReview if asked, and makes the gRPC serving
/// certificate (server-auth for everyone; client certificates optional at
/// the handshake, required by Discovery).
async fn identity_services(
    config: &config::ControlPlaneConfig,
    store: Option<&Arc<PolicyStore>>,
    kube_client: Option<kube::Client>,
    metrics: &Metrics,
) -> Result<IdentityParts, BoxError> {
    use identity::anchor;
    levee_proto::policy::check_trust_domain(&config.trust_domain)
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
        _ => match store {
            Some(store) => anchor::generated(store, &config.trust_domain, config.ca_rotate)?,
            // Kubernetes mode: several stateless replicas must sign with
            // one root, which only the operator can hand to all of them.
            None if config.insecure_plaintext => {
                tracing::warn!(
                    "--kubernetes without --ca-cert-file: this replica's CA lives in memory only"
                );
                anchor::ephemeral(&config.trust_domain)?
            }
            None => {
                return Err(
                    "--kubernetes: every replica must sign with the same CA: give \
                    --ca-cert-file and --ca-key-file (a Secret), or --insecure-plaintext"
                        .into(),
                );
            }
        },
    };
    let ca = Arc::new(identity::ca::Ca::new(
        anchor,
        &config.trust_domain,
        lifetime,
    ));
    // Kubernetes mode has no --data-dir: the bundle is a ConfigMap there.
    if store.is_some() {
        let bundle = config.data_dir.join(TRUST_BUNDLE_FILE);
        levee_proto::fs::write_atomically(&bundle, ca.roots_pem().as_bytes())
            .map_err(|e| format!("writing the trust bundle {}: {e}", bundle.display()))?;
        tracing::info!(path = %bundle.display(), roots = ca.roots().len(), trust_domain = %config.trust_domain, "trust bundle written");
    }
    let tokens =
        store.map(|store| identity::tokens::JoinTokens::new(store.clone(), &config.trust_domain));
    let reviewer: Option<Arc<dyn identity::tokenreview::ServiceAccountReviewer>> =
        if config.token_review {
            // Kubernetes mode's client (--kubeconfig or in-cluster);
            // otherwise the in-cluster config or the default kubeconfig.
            let client = match kube_client {
                Some(client) => client,
                None => kubernetes::client(None)
                    .await
                    .map_err(|e| format!("--token-review: no Kubernetes API client: {e}"))?,
            };
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
        roots_pem: ca.roots_pem(),
        certify: identity::service::IdentityService::new(
            ca,
            tokens.clone(),
            reviewer,
            metrics.clone(),
        ),
        join_tokens: tokens.map(identity::service::JoinTokensService::new),
        tls,
    })
}
