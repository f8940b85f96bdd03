//! `levee-control-plane`: stores resilience policies and pushes them to
//! every proxy over `Discovery.Watch`; `leveectl` is its command-line client.
//!
//! Layout:
//! - `config`: command-line flags (clap, `LEVEE_*` env fallbacks).
//! - `start`: [`start`] checks the flags, opens the policy source, binds the
//!   listeners (and the webhooks' with `--webhook-addr`), returns their
//!   addresses (port 0 friendly) and spawns the servers; gRPC message sizes
//!   (`--grpc-max-message-size`) are set on every service there.
//! - `source`: where policies and endpoints come from (the store, or the
//!   Kubernetes watches, election and status writer).
//! - `trust`: the CA, the trust bundle file, TokenReview and the gRPC
//!   serving certificate, as start-up sets them up.
//! - `store`: the embedded, crash-safe document store (redb) under `--data-dir`.
//! - `admin`: the `PolicyAdmin` gRPC service (Apply, Get, List, Delete, Status).
//! - `auth`: who may call `PolicyAdmin` and `JoinTokens` (bearer token, or loopback only).
//! - `identity`: the CA (`Identity.Certify`), join tokens, TokenReview, and
//!   who a Discovery stream is (its workload certificate).
//! - `discovery`: the `Discovery.Watch` stream, per-service snapshots, proxy
//!   status, and its limits (streams per peer, subscriptions per stream).
//! - `metrics`, `http`: Prometheus metrics and `/live`, `/ready`, `/metrics` on
//!   `--http-addr` (connection cap, header-read timeout).
//! - `listener`: the connection-capped accept loop and plain responses that
//!   `http` and `webhook` share.
//! - `webhook`: the admission webhooks on `--webhook-addr` (HTTPS): sidecar
//!   injector and `ResiliencePolicy` validator, and their certificate.
//! - `kubernetes`: `--kubernetes` mode: policies and endpoints from the API
//!   server's watches into the same registry, Lease election, policy status.
//! - `crd`: the ResiliencePolicy CustomResourceDefinition (schema from the
//!   policy types, CEL rules, status), printed by `leveectl crd`.
//! - `ctl`: the `leveectl` command's logic (the binary in `src/bin` is thin).
//! - `error`: [`BoxError`], the error returned at the binaries' edge.
//!
//! [`run`] is [`start`] and wait, as the binary uses it.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod crd;
pub mod ctl;
pub mod discovery;
mod error;
pub mod http;
pub mod identity;
pub mod kubernetes;
pub mod listener;
pub mod metrics;
mod source;
mod start;
pub mod store;
mod trust;
pub mod webhook;

use tokio::sync::watch;

pub use error::BoxError;
pub use start::{BoundAddrs, start};
pub use trust::TRUST_BUNDLE_FILE;

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
