//! `levee-proxy`: Levee's data plane, the sidecar that carries a workload's
//! outbound calls and guards its inbound side.
//!
//! Layout (one owner per module; see each module's docs):
//! - `backoff`: the exponential, jittered backoff of retries and reconnects.
//! - `config`: command-line flags (clap, `LEVEE_*` env fallbacks) → [`config::ProxyConfig`],
//!   and the subcommands ([`config::Cli`]).
//! - `init_iptables`: `levee-proxy init-iptables`, the NAT rules of transparent
//!   interception in a pod (the init container's job; runs no proxy).
//! - `state`: [`state::Shared`], what every listener reads: the current policy
//!   snapshot (swapped atomically), endpoints, subscriptions, metrics, readiness.
//! - `snapshot`: [`snapshot::Snapshot`], one immutable view of the policies,
//!   static endpoints, protocols and identities.
//! - `subscriptions`: the destinations (and, transparently, addresses) met on
//!   the outbound path, which the discovery watch subscribes.
//! - `policy_source`: loads `--policy-file`, re-reads it on change or SIGHUP,
//!   refuses invalid files and keeps the last good snapshot.
//! - `identity`: the workload certificate from the control plane's CA
//!   (key made here, CSR, renewal) and TLS to the control plane.
//! - `discovery`: `--control-plane` mode: the Discovery.Watch client and
//!   `--policy-cache`.
//! - `endpoints`: where a service's endpoints come from (static documents, then DNS).
//! - `metrics`: the Prometheus registry and the metric families of DESIGN.md §5.
//! - `observe`: per-request metrics observation and the JSON access log.
//! - `admin`: the admin HTTP server (`/live`, `/ready`, `/metrics`, `/config`, `/endpoints`).
//! - `errors`: [`errors::ProxyError`] and the one function that turns it into
//!   the HTTP/gRPC response of DESIGN.md §2.
//! - `deadline`: `now + d` that saturates instead of panicking on huge durations.
//! - `h2_settings`: the HTTP/2 limits of listeners and upstream connections
//!   (streams, fixed windows, reset-flood guards).
//! - `server`: accept loops, connection limits, protocol detection, graceful shutdown.
//! - `splice`: two byte streams copied both ways with half-close, an idle
//!   timeout and byte counts (tunnels and opaque TCP).
//! - `outbound` / `inbound`: the two data paths.
//! - `resilience`: the outbound policy stack (rate limit → request timeout →
//!   retry → service breaker → concurrency → balancer) and inbound limits, with
//!   per-service state that survives policy updates.
//! - `recency`: least-recently-used stamps and eviction for the tables keyed
//!   by what callers send.
//! - `run`: [`run`] binds the listeners, loads policy, serves, and shuts down.
//! - `forward`: upstream connection pools, hop-by-hop header handling, upgrades.
//! - `loops`: loop prevention: the `x-levee-hops` count and the proxy's own
//!   listener addresses, which the forwarder never connects to.
//! - `transparent`: connections `init-iptables` redirected to a listener:
//!   their original destination, detection settings (the detection itself
//!   is the listener's, `server`), and the opaque passthrough.
//! - `tls`: workload mTLS between sidecars: credentials (files), rustls
//!   configs swapped on rotation, outbound origination with the SPIFFE ID
//!   check, inbound termination and the verified client identity.
//! - `trace`: OpenTelemetry spans (logical call, attempts, inbound SERVER),
//!   W3C/B3 propagation and the OTLP export that never blocks traffic.

#![forbid(unsafe_code)]

pub mod admin;
pub mod backoff;
pub mod body;
pub mod config;
pub mod deadline;
pub mod discovery;
pub mod endpoints;
pub mod errors;
pub mod forward;
pub mod h2_settings;
pub mod identity;
pub mod inbound;
pub mod init_iptables;
pub mod loops;
pub mod metrics;
pub mod observe;
pub mod outbound;
pub mod policy_source;
pub mod recency;
pub mod resilience;
mod run;
pub mod server;
pub mod snapshot;
pub mod splice;
pub mod state;
pub mod subscriptions;
pub mod tls;
pub mod trace;
pub mod transparent;

pub use config::ProxyConfig;
pub use run::{BoundAddrs, run, run_with};
