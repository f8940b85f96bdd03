//! Command-line flags of `levee-proxy` (DESIGN.md §7). Every flag also reads
//! `LEVEE_<FLAG>` from the environment; `--help` documents each one.
//!
//! Layout: this file holds the command line itself ([`Cli`]: the proxy's
//! flags or a subcommand); `flags.rs` every flag of running the proxy
//! ([`ProxyConfig`]) and the settings derived from them; `values.rs` the
//! values flags parse into (formats, samplers, durations).

mod flags;
mod values;

use clap::{Parser, Subcommand};

use crate::init_iptables::InitIptablesArgs;

pub use flags::ProxyConfig;
pub use values::{AccessLogFormat, AdminTopology, LogFormat, TraceSampler};

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

#[cfg(test)]
mod tests;
