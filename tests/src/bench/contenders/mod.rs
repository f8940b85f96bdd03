//! Starting and stopping what is measured: the upstream process and each
//! contender in front of it (direct, Levee one hop, Levee two hops in
//! plaintext and with mTLS, Levee
//! with the full policy, HAProxy, nginx), every one on loopback, each proxy
//! optionally pinned to its own CPU with `taskset`.
//!
//! Layout: `env.rs` the [`Env`] every start shares (pinning, run
//! directory, spawning); `launch.rs` a process's command line and waiting
//! until it is ready; `contender.rs` a running [`Contender`] and its stop;
//! `upstreams.rs` the upstream processes ([`Upstream`]: the 1 KiB upstream,
//! `levee-flaky`); `levee.rs` the Levee contenders; `baselines.rs` the
//! others (direct, HAProxy, nginx).

mod baselines;
mod contender;
mod env;
mod launch;
mod levee;
mod upstreams;

pub use contender::Contender;
pub use env::{Env, Pinning};
pub use launch::free_port;
pub(in crate::bench) use launch::{answers, quiet_env, read_json, wait_for};
pub use upstreams::Upstream;
