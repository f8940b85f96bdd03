//! Levee's end-to-end tests: the real binaries (`levee-proxy`,
//! `levee-control-plane`, `leveectl`, `levee-flaky`) on loopback, driven
//! through the harness in `levee_tests::harness`. One test binary with a
//! module per feature: linking is the slowest step of a test build, so
//! every feature shares one link. Build the binaries first:
//! `cargo build --workspace --bins && cargo test -p levee-tests --test e2e`
//! (add a module path, e.g. `resilience_retries::`, to run one feature).

// Data path: protocols, headers, proxy modes, proxy-made errors.
mod ambiguous_authority;
mod app_protocol;
mod errors;
mod grpc;
mod grpc_python;
mod h2_abuse;
mod h2_limits;
mod headers;
mod http1;
mod http2;
mod loops_hops;
mod loops_self;
mod mtls;
mod mtls_certified;
mod mtls_expiry;
mod proxy_mode;
mod smuggling;
mod upgrade;

// The proxy process: flags, policy file, admin, limits, shutdown.
mod abuse_clients;
mod abuse_hosts;
mod admin;
mod cli;
mod default_timeouts;
mod limits;
mod policy_file;
mod shutdown;

// Resilience policies (issue 3's scenarios).
mod resilience_breaker_logical;
mod resilience_breakers;
mod resilience_limits;
mod resilience_policy_change;
mod resilience_retries;

// Observability: metrics, access log, traces, the dashboard.
mod access_log;
mod dashboard;
mod metrics_scenario;
mod tracing_collector;
mod tracing_events;
mod tracing_sampling;
mod tracing_spans;

// Kubernetes: the manifests and the ResiliencePolicy CRD, offline.
mod kubernetes_manifests;

// Control plane and control-plane mode.
mod control_plane;
mod control_plane_auth;
mod control_plane_durability;
mod discovery_cache;
mod discovery_converge;
mod discovery_nack;
mod discovery_restart;
mod discovery_sighup;
mod discovery_unsubscribe;
mod kubernetes_ha;
mod kubernetes_leveectl;

mod identity;
mod identity_registered;

// Abuse: floods and slow clients against the bounds.
mod abuse_slow_clients;
mod abuse_upgrades;

// Chaos: processes killed under load and mid-response.
mod chaos_control_plane;
mod chaos_sigterm;
mod chaos_upstream_kill;

// Kubernetes data path: interception rules in network namespaces (root).
mod init_iptables;
mod transparent_detect;
mod transparent_http_mtls;
mod transparent_inbound_ports;
mod transparent_no_loops;
mod transparent_opaque_expiry;
mod transparent_opaque_mtls;

mod transparent_discovery;
mod transparent_passthrough;
mod transparent_protocols;
mod transparent_two_pods;
// Kubernetes API side: the admission webhooks over HTTPS.
mod webhooks;

// levee-bench's transparent-vs-explicit pods (root).
mod bench_transparent;
// The container image (the Dockerfile read, no engine needed).
mod docker_image;

// The test upstream itself.
mod flaky_binary;
