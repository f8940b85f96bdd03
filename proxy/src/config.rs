//! Command-line flags of `levee-proxy` (DESIGN.md §7). Every flag also reads
//! `LEVEE_<FLAG>` from the environment; `--help` documents each one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::init_iptables::InitIptablesArgs;

/// The command line: the proxy's flags, or a subcommand. Without a
/// subcommand `levee-proxy --flags…` runs the proxy, as it always has.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "levee-proxy",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub proxy: ProxyConfig,
}

/// `levee-proxy <subcommand>`.
#[derive(Subcommand, Clone, Debug)]
pub enum Command {
    /// Install the NAT rules that send this network namespace's TCP through
    /// the sidecar (a pod's init container); see docs/kubernetes.md.
    InitIptables(InitIptablesArgs),
}

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

    /// Admin server: /live, /ready, /metrics, /config.
    #[arg(long, env = "LEVEE_ADMIN_ADDR", default_value = "0.0.0.0:4191")]
    pub admin_addr: SocketAddr,

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
    /// this URL, e.g. http://127.0.0.1:8090 (reconnects with backoff; keeps the
    /// last good config while disconnected). Not combinable with --policy-file.
    #[arg(long, env = "LEVEE_CONTROL_PLANE", conflicts_with = "policy_file")]
    pub control_plane: Option<String>,

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

    /// Connecting to an upstream endpoint fails after this long (502 `upstream-connect`).
    #[arg(long, env = "LEVEE_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

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

/// `--log-format`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--trace-sampler`, named as `OTEL_TRACES_SAMPLER` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceSampler {
    #[value(name = "always_on")]
    AlwaysOn,
    #[value(name = "always_off")]
    AlwaysOff,
    #[value(name = "traceidratio")]
    TraceIdRatio,
    #[value(name = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    #[value(name = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    #[value(name = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

/// `--access-log`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
}

/// Durations as policies write them: `500ms`, `10s`, `5m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<levee_proto::policy::Duration>()
        .map(Duration::from)
        .map_err(|e| e.to_string())
}

impl ProxyConfig {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("levee-proxy").chain(args.iter().copied()))
    }

    #[test]
    fn without_a_subcommand_the_flags_run_the_proxy() {
        let c = cli(&["--app-port", "9090"]).expect("parse");
        assert!(c.command.is_none());
        assert_eq!(c.proxy.app_port, 9090);
    }

    #[test]
    fn init_iptables_is_a_subcommand_with_its_own_flags() {
        let c = cli(&["init-iptables", "--proxy-uid", "7", "--dry-run"]).expect("parse");
        let Some(Command::InitIptables(args)) = c.command else {
            panic!("no subcommand parsed");
        };
        assert_eq!(args.proxy_uid, 7);
        assert!(args.dry_run);
        assert_eq!(args.inbound_port, 4143);
        assert_eq!(args.outbound_port, 4140);
        // Proxy flags do not mix with a subcommand.
        assert!(cli(&["--app-port", "9090", "init-iptables"]).is_err());
    }

    #[test]
    fn defaults_match_design() {
        let c = ProxyConfig::from_args(Vec::<String>::new()).expect("defaults parse");
        assert_eq!(c.outbound_addr, "127.0.0.1:4140".parse().expect("addr"));
        assert_eq!(c.inbound_addr, "0.0.0.0:4143".parse().expect("addr"));
        assert_eq!(c.admin_addr, "0.0.0.0:4191".parse().expect("addr"));
        assert_eq!(c.app_port, 8080);
        assert_eq!(c.namespace, "default");
        assert_eq!(c.max_header_bytes, 65536);
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
    }

    #[test]
    fn durations_and_enums_parse() {
        let c = ProxyConfig::from_args([
            "--header-read-timeout",
            "250ms",
            "--log-format",
            "json",
            "--access-log",
            "json",
        ])
        .expect("parse");
        assert_eq!(c.header_read_timeout, Duration::from_millis(250));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.access_log, Some(AccessLogFormat::Json));
        assert!(ProxyConfig::from_args(["--idle-timeout", "5"]).is_err());
    }
}
