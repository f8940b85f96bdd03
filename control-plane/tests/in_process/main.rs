//! The control plane's integration tests: `levee_control_plane::start` in
//! this process on loopback port 0 (and the real `leveectl` against it).
//! One test binary with a module per feature (one link instead of one per
//! file).

mod common;

mod admin;
mod cancellation;
mod discovery;
mod http_limits;
mod leveectl;
mod limits;
mod names;
mod quarantine;
mod registered_identity;
mod server;
mod webhook_ca_bundle;
mod webhook_files;
mod webhook_golden;
