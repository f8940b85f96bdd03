//! `leveectl`'s commands: `validate` (offline), `apply`, `get`, `delete`,
//! `diff`, `explain` and `status` (against `PolicyAdmin`). Reference:
//! docs/leveectl.md.
//!
//! Layout:
//! - `client`: connection, token, timeouts, gRPC errors as sentences.
//! - `files`: `-f FILE|DIR|-` reading and local validation.
//! - `apply`: `validate`, `apply`, `diff`.
//! - `get`: `get`, `delete`.
//! - `explain`: the effective policy of a route and where each value comes from.
//! - `status`: connected proxies, what they ACKed, their identities.
//! - `token`: join tokens (create, list, revoke).
//! - `table`: aligned text tables.

pub mod apply;
pub mod client;
pub mod explain;
pub mod files;
pub mod get;
pub mod status;
pub mod table;
pub mod token;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::BoxError;

/// leveectl: apply, inspect and explain Levee resilience policy.
#[derive(Debug, Parser)]
#[command(name = "leveectl", version, about)]
pub struct Cli {
    /// Control plane gRPC address.
    #[arg(
        long,
        global = true,
        env = "LEVEE_SERVER",
        default_value = "http://127.0.0.1:8090"
    )]
    pub server: String,

    /// Bearer token for the admin API (when the control plane has --admin-token-file).
    #[arg(long, global = true, env = "LEVEE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// PEM trust bundle an `https://` --server is verified against (the
    /// control plane's `<data-dir>/trust-bundle.pem`).
    #[arg(long, global = true, env = "LEVEE_TRUST_BUNDLE_FILE")]
    pub trust_bundle_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// YAML documents (re-appliable).
    Yaml,
    /// JSON for programs.
    Json,
}

/// Document kinds as `get`/`delete` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    /// ResiliencePolicy documents.
    #[value(
        alias = "policies",
        alias = "resiliencepolicy",
        alias = "resiliencepolicies",
        alias = "rp"
    )]
    Policy,
    /// ServiceEndpoints documents.
    #[value(alias = "endpoint", alias = "serviceendpoints", alias = "ep")]
    Endpoints,
}

impl Resource {
    /// The document `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Policy => levee_proto::policy::KIND_POLICY,
            Resource::Endpoints => levee_proto::policy::KIND_ENDPOINTS,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the ResiliencePolicy CustomResourceDefinition (YAML) for `kubectl apply -f -`.
    Crd,
    /// Check policy documents offline (every problem, with file, document and field path).
    Validate {
        /// A YAML file, a directory of `.yaml`/`.yml` files, or `-` for standard input.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate and store documents, all or nothing.
    Apply {
        /// A YAML file, a directory of `.yaml`/`.yml` files, or `-` for standard input.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Apply only if the store is still at this revision (compare-and-set).
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Show what would change without storing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// List documents (`get policies`) or show one (`get policy NAME`).
    Get {
        /// `policies`/`policy` or `endpoints`.
        resource: Resource,
        /// Show this document only.
        name: Option<String>,
        /// Namespace (a single document defaults to `default`; a list shows every namespace).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Delete one document.
    Delete {
        /// `policy` or `endpoints`.
        resource: Resource,
        /// Document name.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Delete only if the store is still at this revision.
        #[arg(long)]
        expected_revision: Option<u64>,
    },
    /// Show how the given files differ from what the control plane stores
    /// (exit 0: no differences, 1: differences, 2: error).
    Diff {
        /// A YAML file, a directory of `.yaml`/`.yml` files, or `-` for standard input.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// The effective outbound policy for a call to SERVICE, and where each value comes from.
    Explain {
        /// Service name.
        service: String,
        /// Namespace of the service.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Service port (chooses between port-specific policies).
        #[arg(long)]
        port: Option<u16>,
        /// Request path the route lookup uses.
        #[arg(long, default_value = "/")]
        path: String,
        /// Request method the route lookup uses.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Output format (`table` or `json`).
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Connected proxies, the version each ACKed, and the last NACK reason.
    Status {
        /// Output format (`table` or `json`).
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Join tokens: the proof a proxy outside Kubernetes gets its certificate with.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for one workload; prints the secret once.
    Create {
        /// The service the proxy may register endpoints for.
        #[arg(long)]
        service: String,
        /// Namespace of the identity.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Service account of the SPIFFE ID (default: the service's name).
        #[arg(long)]
        service_account: Option<String>,
        /// Lifetime (e.g. 24h, 720h); default 720h (30 days).
        #[arg(long)]
        ttl: Option<levee_proto::policy::Duration>,
        /// Output: `table` prints the secret alone; `json` prints everything.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// List tokens (never their secrets).
    List {
        /// Output format (`table` or `json`).
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Revoke a token by id: renewals with it are refused from now on.
    Revoke {
        /// The token's id (the part before the `.`).
        id: String,
    },
}

/// How a successful command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (exit 0).
    Done,
    /// `diff` found differences (exit 1).
    Differences,
}

impl Command {
    /// Exit code for a failure of this command (`diff` keeps 1 for "differences").
    pub fn failure_code(&self) -> u8 {
        match self {
            Command::Diff { .. } => 2,
            _ => 1,
        }
    }
}

/// Runs one command, writing its output to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<Outcome, BoxError> {
    let server = cli.server.as_str();
    let token = cli.token.as_deref();
    if let Some(path) = cli.trust_bundle_file {
        client::use_trust_bundle(path);
    }
    match cli.command {
        Command::Crd => {
            out.write_all(crate::crd::crd_yaml()?.as_bytes())?;
            Ok(Outcome::Done)
        }
        Command::Validate { files } => apply::validate(&files, out).map(|()| Outcome::Done),
        Command::Apply {
            files,
            expected_revision,
            dry_run,
        } => {
            apply::apply(server, token, &files, expected_revision, dry_run, out).await?;
            Ok(Outcome::Done)
        }
        Command::Get {
            resource,
            name,
            namespace,
            output,
        } => {
            get::get(
                server,
                token,
                resource,
                name.as_deref(),
                namespace.as_deref(),
                output,
                out,
            )
            .await?;
            Ok(Outcome::Done)
        }
        Command::Delete {
            resource,
            name,
            namespace,
            expected_revision,
        } => {
            get::delete(
                server,
                token,
                resource,
                &name,
                &namespace,
                expected_revision,
                out,
            )
            .await?;
            Ok(Outcome::Done)
        }
        Command::Diff { files } => apply::diff(server, token, &files, out).await,
        Command::Explain {
            service,
            namespace,
            port,
            path,
            method,
            output,
        } => {
            let query = explain::Query {
                service,
                namespace,
                port,
                path,
                method,
            };
            explain::explain(server, token, &query, output, out).await?;
            Ok(Outcome::Done)
        }
        Command::Status { output } => {
            status::status(server, token, output, out).await?;
            Ok(Outcome::Done)
        }
        Command::Token(TokenCommand::Create {
            service,
            namespace,
            service_account,
            ttl,
            output,
        }) => {
            let new = token::NewToken {
                service,
                namespace,
                service_account,
                ttl_seconds: ttl.map(|d| d.get().as_secs().max(1)),
            };
            token::create(server, token, &new, output, out).await?;
            Ok(Outcome::Done)
        }
        Command::Token(TokenCommand::List { output }) => {
            token::list(server, token, output, out).await?;
            Ok(Outcome::Done)
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            token::revoke(server, token, &id, out).await?;
            Ok(Outcome::Done)
        }
    }
}
