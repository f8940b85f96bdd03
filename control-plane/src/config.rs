//! Flags of `levee-control-plane` (DESIGN.md §7); each also reads `LEVEE_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use levee_proto::policy::Duration;

/// Levee's control plane: stores resilience policies and pushes them to proxies.
#[derive(Debug, Clone, Parser)]
#[command(name = "levee-control-plane", version, about)]
pub struct ControlPlaneConfig {
    /// Address of the gRPC server (PolicyAdmin and Discovery).
    #[arg(long, env = "LEVEE_GRPC_ADDR", default_value = "0.0.0.0:8090")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP server (`/live`, `/ready`, `/metrics`).
    #[arg(long, env = "LEVEE_HTTP_ADDR", default_value = "0.0.0.0:8091")]
    pub http_addr: SocketAddr,

    /// Directory of the embedded policy store.
    #[arg(long, env = "LEVEE_DATA_DIR", default_value = "/var/lib/levee")]
    pub data_dir: PathBuf,

    /// File holding the bearer token the admin API requires. Without it the
    /// admin API listens on loopback only.
    #[arg(long, env = "LEVEE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// How long a disconnected proxy's own endpoint stays registered (lets a
    /// restarting proxy or a flapping stream keep its callers' endpoint sets stable).
    #[arg(long, env = "LEVEE_ENDPOINT_GRACE", default_value = "10s")]
    pub endpoint_grace: Duration,

    /// Open connections the HTTP server (`--http-addr`) serves at once; one
    /// more is closed at once.
    #[arg(long, env = "LEVEE_HTTP_MAX_CONNECTIONS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,

    /// How long an HTTP client has to send a whole request head before its
    /// connection is closed.
    #[arg(long, env = "LEVEE_HTTP_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub http_header_read_timeout: Duration,

    /// Largest gRPC message (bytes) received or sent on PolicyAdmin and
    /// Discovery; a bigger one ends the call with `OUT_OF_RANGE`.
    #[arg(long, env = "LEVEE_GRPC_MAX_MESSAGE_SIZE", default_value_t = 4 * 1024 * 1024)]
    pub grpc_max_message_size: usize,

    /// Open Discovery.Watch streams allowed from one peer IP address (0: no limit).
    #[arg(long, env = "LEVEE_MAX_WATCH_STREAMS_PER_PEER", default_value_t = 256)]
    pub max_watch_streams_per_peer: usize,

    /// Services one Discovery.Watch stream may subscribe to (0: no limit).
    #[arg(
        long,
        env = "LEVEE_MAX_SUBSCRIPTIONS_PER_STREAM",
        default_value_t = 8192
    )]
    pub max_subscriptions_per_stream: usize,

    /// Serve gRPC (PolicyAdmin, Discovery, Identity) without TLS, and let
    /// Discovery streams in without a workload certificate. For local demos
    /// only: nothing is authenticated on the wire.
    #[arg(long, env = "LEVEE_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,

    /// Trust domain of the SPIFFE IDs the CA issues.
    #[arg(long, env = "LEVEE_TRUST_DOMAIN", default_value = levee_proto::identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,

    /// Lifetime of a workload certificate.
    #[arg(long, env = "LEVEE_WORKLOAD_CERT_TTL", default_value = "24h")]
    pub workload_cert_ttl: Duration,

    /// PEM file of the CA's issuing certificate (a root, or an intermediate
    /// followed by its chain). With --ca-key-file; default: a root the
    /// control plane generates at first start and keeps in its store.
    #[arg(long, env = "LEVEE_CA_CERT_FILE", requires = "ca_key_file")]
    pub ca_cert_file: Option<PathBuf>,

    /// PEM file of the issuing certificate's private key (PKCS#8).
    #[arg(long, env = "LEVEE_CA_KEY_FILE", requires = "ca_cert_file")]
    pub ca_key_file: Option<PathBuf>,

    /// PEM file of the trust bundle (every root in use; old and new during a
    /// rotation). Default: the issuing certificate when it is a root.
    #[arg(long, env = "LEVEE_CA_ROOTS_FILE", requires = "ca_cert_file")]
    pub ca_roots_file: Option<PathBuf>,

    /// A step of rotating the generated root, done at this start:
    /// `prepare` (new root in the bundle), `activate` (new root signs),
    /// `retire` (old root leaves the bundle). See docs/identity.md.
    #[arg(
        long,
        env = "LEVEE_CA_ROTATE",
        value_enum,
        conflicts_with = "ca_cert_file"
    )]
    pub ca_rotate: Option<crate::identity::anchor::RotationStage>,

    /// Names (DNS names or IP addresses) in the gRPC serving certificate;
    /// proxies and leveectl must reach the control plane by one of them.
    #[arg(
        long,
        env = "LEVEE_SERVER_NAMES",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1,levee-control-plane,levee-control-plane.levee-system.svc"
    )]
    pub server_names: Vec<String>,

    /// Accept projected service-account tokens as proof, checked with the
    /// Kubernetes TokenReview API, through the same client as --kubernetes'
    /// watches (--kubeconfig, else in-cluster; without --kubernetes:
    /// in-cluster or the default kubeconfig).
    #[arg(long, env = "LEVEE_TOKEN_REVIEW")]
    pub token_review: bool,

    /// The audience projected service-account tokens must carry.
    #[arg(long, env = "LEVEE_TOKEN_REVIEW_AUDIENCE", default_value = crate::identity::tokenreview::DEFAULT_AUDIENCE)]
    pub token_review_audience: String,

    /// After binding, write the bound addresses as JSON to this file (useful with port 0).
    #[arg(long, env = "LEVEE_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,

    /// The admission webhooks (sidecar injector, policy validator).
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookConfig,

    /// Kubernetes mode: policies from ResiliencePolicy custom resources and
    /// endpoints from EndpointSlices, read through the API server (in-cluster
    /// config, or --kubeconfig); --data-dir is not used and PolicyAdmin is not
    /// served (use kubectl). See docs/kubernetes.md.
    #[arg(long, env = "LEVEE_KUBERNETES")]
    pub kubernetes: bool,

    /// With --kubernetes: the kubeconfig file to use instead of the
    /// in-cluster configuration.
    #[arg(long, env = "KUBECONFIG", requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,

    /// With --kubernetes: this replica's name in the leader Lease and in
    /// each policy's `status.replicas` (the pod name, from the downward
    /// API); default `$HOSTNAME`.
    #[arg(long, env = "POD_NAME", requires = "kubernetes")]
    pub pod_name: Option<String>,

    /// With --kubernetes: the leader keeps the ConfigMap
    /// `levee-trust-bundle` (`ca.crt`: this control plane's trust bundle) in
    /// every namespace labelled `levee.dev/inject=enabled`, where injected
    /// pods mount it. `false` leaves the copies to you (or trust-manager).
    #[arg(
        long,
        env = "LEVEE_TRUST_BUNDLE_COPY",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub trust_bundle_copy: bool,

    /// With --kubernetes: how often the whole cached state is translated
    /// again and compared with what proxies are served (watches deliver
    /// changes at once; this repairs anything missed).
    #[arg(long, env = "LEVEE_KUBERNETES_RESYNC", default_value = "5m")]
    pub kubernetes_resync: Duration,

    /// With --kubernetes (and TLS): watch Pods, and tell callers to expect
    /// each meshed pod's service-account identity at its endpoints, so they
    /// speak mTLS to it. Off by default: the callee's sidecar must terminate
    /// mTLS on connections iptables redirected to it (docs/kubernetes.md).
    #[arg(
        long,
        env = "LEVEE_KUBERNETES_POD_IDENTITIES",
        requires = "kubernetes",
        conflicts_with = "insecure_plaintext"
    )]
    pub kubernetes_pod_identities: bool,

    /// Log format: `text` or `json`.
    #[arg(long, env = "LEVEE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}
