//! [`ProxyConfig`]: every flag of running the proxy, with its environment
//! variable and default, and the settings derived from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::values::{AccessLogFormat, AdminTopology, LogFormat, TraceSampler, parse_duration};
use crate::h2_settings::{self, H2Settings};

/// Levee's sidecar proxy: carries a workload's outbound calls and guards its inbound side.
#[derive(Parser, Clone, Debug)]
#[command(name = "levee-proxy", version, about)]
pub struct ProxyConfig {
    /// Where the local app sends its outbound calls (explicit mode or HTTP_PROXY).
    #[arg(long, env = "LEVEE_OUTBOUND_ADDR", default_value = "127.0.0.1:4140")]
    pub outbound_addr: SocketAddr,

    /// Where peers' calls to this workload arrive.
    #[arg(long, env = "LEVEE_INBOUND_ADDR", default_value = "0.0.0.0:4143")]
    pub inbound_addr: SocketAddr,

    /// Admin server: /live, /ready, /metrics to anyone; /config and
    /// /endpoints per --admin-topology.
    #[arg(long, env = "LEVEE_ADMIN_ADDR", default_value = "0.0.0.0:4191")]
    pub admin_addr: SocketAddr,

    /// Who may read the admin topology views (/config, /endpoints): only
    /// callers on loopback (kubectl port-forward, kubectl exec), or anyone.
    #[arg(long, env = "LEVEE_ADMIN_TOPOLOGY", value_enum, default_value_t = AdminTopology::Loopback)]
    pub admin_topology: AdminTopology,

    /// Open admin connections; beyond it a connection gets 503 and is closed.
    #[arg(long, env = "LEVEE_ADMIN_MAX_CONNECTIONS", default_value_t = 64)]
    pub admin_max_connections: usize,

    /// Outbound destinations (distinct services called) whose state and
    /// metric series are kept; beyond it the least recently used are evicted.
    #[arg(long, env = "LEVEE_MAX_DESTINATIONS", default_value_t = 4096)]
    pub max_destinations: usize,

    /// Clients an inbound `perClient` rate limit keeps a bucket for; beyond
    /// it idle clients are dropped and newcomers share one overflow bucket.
    #[arg(long, env = "LEVEE_MAX_RATE_LIMIT_CLIENTS", default_value_t = 65_536)]
    pub max_rate_limit_clients: usize,

    /// Port of the local app on 127.0.0.1; inbound calls are forwarded there.
    #[arg(long, env = "LEVEE_APP_PORT", default_value_t = 8080)]
    pub app_port: u16,

    /// Name of the service this proxy fronts (inbound metrics label).
    #[arg(long, env = "LEVEE_SERVICE")]
    pub service: Option<String>,

    /// With --control-plane: the port callers use for --service (this proxy
    /// registers its inbound address as an endpoint of `service:port`).
    /// Default: --app-port.
    #[arg(long, env = "LEVEE_SERVICE_PORT")]
    pub service_port: Option<u16>,

    /// Namespace of this workload; the default for authorities without one.
    #[arg(long, env = "LEVEE_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Static mode: a YAML file of ResiliencePolicy and ServiceEndpoints
    /// documents, re-read on change and on SIGHUP.
    #[arg(long, env = "LEVEE_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,

    /// With --control-plane: keep the last good config from the control plane
    /// in this file (rewritten after each accepted update); a proxy that starts
    /// while the control plane is unreachable serves it (/config source
    /// `policy-cache:…`).
    #[arg(long, env = "LEVEE_POLICY_CACHE", requires = "control_plane")]
    pub policy_cache: Option<PathBuf>,

    /// Control-plane mode: watch policy and endpoints of every destination at
    /// this URL, e.g. https://levee-control-plane.levee-system.svc:8090
    /// (reconnects with backoff; keeps the last good config while
    /// disconnected). Several replicas: a comma-separated list; a failed
    /// stream moves to the next one. `https://` needs --trust-bundle-file;
    /// `http://` needs --insecure-plaintext. Not combinable with --policy-file.
    #[arg(long, env = "LEVEE_CONTROL_PLANE", conflicts_with = "policy_file")]
    pub control_plane: Option<String>,

    /// Talk to the control plane without TLS (an `http://` --control-plane).
    /// For local demos only: nothing is authenticated on the wire.
    #[arg(long, env = "LEVEE_INSECURE_PLAINTEXT", requires = "control_plane")]
    pub insecure_plaintext: bool,

    /// PEM file of the mesh's trust anchors (the control plane's
    /// `<data-dir>/trust-bundle.pem`): the control plane's certificate
    /// (`https://` --control-plane) and peers' workload certificates
    /// (mTLS between sidecars) must chain to them.
    #[arg(long, env = "LEVEE_TRUST_BUNDLE_FILE")]
    pub trust_bundle_file: Option<PathBuf>,

    /// File holding a join token (`leveectl token create`): the proof for a
    /// workload certificate, which Discovery requires. Re-read at each renewal.
    #[arg(
        long,
        env = "LEVEE_IDENTITY_TOKEN_FILE",
        requires = "trust_bundle_file"
    )]
    pub identity_token_file: Option<PathBuf>,

    /// File holding a projected Kubernetes service-account token (audience
    /// `levee.dev`): the proof inside Kubernetes. Re-read at each renewal.
    #[arg(
        long,
        env = "LEVEE_IDENTITY_SA_TOKEN_FILE",
        requires = "trust_bundle_file",
        conflicts_with = "identity_token_file"
    )]
    pub identity_sa_token_file: Option<PathBuf>,

    /// Trust domain of the SPIFFE ID the proxy asks for and accepts.
    #[arg(long, env = "LEVEE_IDENTITY_TRUST_DOMAIN", default_value = levee_proto::identity::DEFAULT_TRUST_DOMAIN)]
    pub identity_trust_domain: String,

    /// The service account of the SPIFFE ID the proxy asks for (default:
    /// --service). Without either the proxy takes what its proof grants.
    #[arg(long, env = "LEVEE_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,

    /// This workload's certificate (PEM, leaf first, with one spiffe:// URI
    /// SAN), e.g. written by SPIRE or cert-manager; enables mTLS between
    /// sidecars. Re-read on change and on SIGHUP (docs/identity.md).
    #[arg(
        long,
        env = "LEVEE_IDENTITY_CERT_FILE",
        requires_all = ["identity_key_file", "trust_bundle_file"]
    )]
    pub identity_cert_file: Option<PathBuf>,

    /// The private key of --identity-cert-file (PEM PKCS#8 "PRIVATE KEY").
    #[arg(long, env = "LEVEE_IDENTITY_KEY_FILE", requires = "identity_cert_file")]
    pub identity_key_file: Option<PathBuf>,

    /// Write one access-log line per request to stdout in this format.
    #[arg(long, env = "LEVEE_ACCESS_LOG", value_enum)]
    pub access_log: Option<AccessLogFormat>,

    /// Log format on stderr. Levels come from LEVEE_LOG or RUST_LOG (default info).
    #[arg(long, env = "LEVEE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// After binding, write the bound addresses as JSON
    /// (`{"outbound":…,"inbound":…,"admin":…}`) to this file; useful with port 0.
    #[arg(long, env = "LEVEE_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,

    /// Largest request head (HTTP/1 buffer, HTTP/2 header list) accepted; larger gets 431.
    #[arg(long, env = "LEVEE_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,

    /// A client must send a complete request head within this time (slowloris guard).
    #[arg(long, env = "LEVEE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// A downstream connection with no request in flight for this long is closed.
    #[arg(long, env = "LEVEE_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Open connections per listener; beyond it a connection gets 503 `overloaded` and is closed.
    #[arg(long, env = "LEVEE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// A tunnel (WebSocket upgrade, CONNECT) with no byte either way for this
    /// long is closed, both sides. It counts against --max-connections while open.
    #[arg(long, env = "LEVEE_TUNNEL_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub tunnel_idle_timeout: Duration,

    /// The protocols an HTTP/1.1 `Upgrade` may switch to (comma-separated).
    /// Others get 400 `bad-request`; `h2c` is never tunnelled (the offer is
    /// ignored and the request served as HTTP/1.1).
    #[arg(
        long,
        env = "LEVEE_ALLOWED_UPGRADES",
        value_delimiter = ',',
        default_value = "websocket"
    )]
    pub allowed_upgrades: Vec<String>,

    /// Calls whose policy sets no `timeouts.request` (or that have no policy)
    /// get 504 `timeout` when no response head arrives within this; `0s`: off.
    #[arg(long, env = "LEVEE_DEFAULT_REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub default_request_timeout: Duration,

    /// Response bodies of services without a policy, and of the local app
    /// inbound, end with an error after this long without data; `0s`: off.
    #[arg(long, env = "LEVEE_DEFAULT_STREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub default_stream_idle_timeout: Duration,
    /// HTTP/2: streams one downstream connection may have open at once
    /// (SETTINGS_MAX_CONCURRENT_STREAMS); a client opening more gets its extra
    /// streams refused (REFUSED_STREAM).
    #[arg(long, env = "LEVEE_H2_MAX_CONCURRENT_STREAMS", default_value_t = h2_settings::DEFAULT_MAX_CONCURRENT_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub h2_max_concurrent_streams: u32,

    /// HTTP/2 flow-control window per stream, in bytes (fixed, both to
    /// clients and to upstreams): body bytes a peer may send on one stream
    /// before the proxy has passed them on. 65535 to 2147483647.
    #[arg(long, env = "LEVEE_H2_STREAM_WINDOW", default_value_t = h2_settings::DEFAULT_STREAM_WINDOW,
          value_parser = clap::value_parser!(u32).range(i64::from(h2_settings::MIN_WINDOW)..=i64::from(h2_settings::MAX_WINDOW)))]
    pub h2_stream_window: u32,

    /// HTTP/2 flow-control window per connection, in bytes (fixed): body bytes
    /// all streams of one connection may have in flight. 65535 to 2147483647.
    #[arg(long, env = "LEVEE_H2_CONNECTION_WINDOW", default_value_t = h2_settings::DEFAULT_CONNECTION_WINDOW,
          value_parser = clap::value_parser!(u32).range(i64::from(h2_settings::MIN_WINDOW)..=i64::from(h2_settings::MAX_WINDOW)))]
    pub h2_connection_window: u32,

    /// Transparent mode: a connection iptables redirected to a listener is
    /// served as HTTP when its first bytes are an HTTP/1.x request line or the
    /// HTTP/2 preface; a client silent for this long is taken for a
    /// server-speaks-first protocol and forwarded as opaque TCP.
    #[arg(long, env = "LEVEE_DETECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub detect_timeout: Duration,

    /// Transparent mode: redirected connections to these original ports
    /// (comma-separated) are forwarded as opaque TCP without detection
    /// (server-speaks-first protocols); `0` alone: detect on every port.
    #[arg(
        long,
        env = "LEVEE_OPAQUE_PORTS",
        value_delimiter = ',',
        default_value = "25,587,3306,4444,5432,6379,9300,11211"
    )]
    pub opaque_ports: Vec<u16>,

    /// Connecting to an upstream endpoint fails after this long (502 `upstream-connect`).
    #[arg(long, env = "LEVEE_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// A request that arrives having passed more Levee proxies than this
    /// (its `x-levee-hops` header) gets 508 `loop-detected`; a header that is
    /// not a plain count counts as over it. Each listener adds one hop.
    #[arg(long, env = "LEVEE_MAX_HOPS", default_value_t = crate::loops::DEFAULT_MAX_HOPS,
          value_parser = clap::value_parser!(u32).range(1..=255))]
    pub max_hops: u32,

    /// Idle pooled upstream connections are closed after this long.
    #[arg(long, env = "LEVEE_UPSTREAM_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,

    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    #[arg(long, env = "LEVEE_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// OTLP gRPC collector for traces, e.g. http://127.0.0.1:4317. Tracing is
    /// off without it (the standard OpenTelemetry variable).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// `service.name` of the exported spans (default `levee-proxy`, unless
    /// OTEL_RESOURCE_ATTRIBUTES names one; other resource attributes come from there).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub trace_service_name: Option<String>,

    /// Which calls are traced; the parent-based samplers follow the caller's decision.
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_enum, default_value_t = TraceSampler::ParentBasedTraceIdRatio)]
    pub trace_sampler: TraceSampler,

    /// The sampling ratio (0..=1) of the `*traceidratio` samplers (default 1).
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG")]
    pub trace_sampler_arg: Option<f64>,

    /// Finished spans waiting for export; beyond this they are dropped and
    /// counted (`levee_trace_spans_dropped_total`), never waited for.
    #[arg(long, env = "LEVEE_TRACE_QUEUE_SIZE", default_value_t = 2048)]
    pub trace_queue_size: usize,

    /// One export call to the collector gives up after this long (its spans are dropped).
    #[arg(long, env = "LEVEE_TRACE_EXPORT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub trace_export_timeout: Duration,
}

impl ProxyConfig {
    /// The identity files, when all three are given.
    pub fn identity_files(&self) -> Option<crate::tls::files::CredentialFiles> {
        Some(crate::tls::files::CredentialFiles {
            cert: self.identity_cert_file.clone()?,
            key: self.identity_key_file.clone()?,
            bundle: self.trust_bundle_file.clone()?,
        })
    }

    /// The HTTP/2 limits of the listeners and of upstream connections.
    pub fn h2_settings(&self) -> H2Settings {
        H2Settings {
            max_concurrent_streams: self.h2_max_concurrent_streams,
            stream_window: self.h2_stream_window,
            connection_window: self.h2_connection_window,
            max_header_list_size: u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX),
        }
    }

    /// Parses `args` (without the program name) as the binary would.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        ProxyConfig::try_parse_from(
            std::iter::once("levee-proxy".into()).chain(args.into_iter().map(Into::into)),
        )
    }
}
