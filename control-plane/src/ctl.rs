//! `leveectl`'s commands. Today: `validate`, which checks policy files
//! offline with the same strict validation the proxy and the control plane
//! apply. `apply`, `get`, `delete`, `diff`, `explain` and `status` arrive with
//! the control plane's policy API.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use levee_proto::policy::{Document, parse_documents};

use crate::BoxError;

/// leveectl: apply, inspect and explain Levee resilience policy.
#[derive(Debug, Parser)]
#[command(name = "leveectl", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check policy documents offline (every problem, with file, document and field path).
    Validate {
        /// A YAML file, a directory of `.yaml`/`.yml` files, or `-` for standard input.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
}

/// Run one command, writing its human-readable output to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<(), BoxError> {
    match cli.command {
        Command::Validate { files } => validate(&files, out),
    }
}

fn validate(inputs: &[PathBuf], out: &mut dyn Write) -> Result<(), BoxError> {
    let mut failures = 0usize;
    for (name, text) in read_inputs(inputs)? {
        match parse_documents(&text) {
            Ok(docs) => {
                for doc in &docs {
                    writeln!(out, "{name}: {} ok", describe(doc))?;
                }
            }
            Err(errors) => {
                failures += errors.0.len();
                for line in errors.to_string().lines() {
                    writeln!(out, "{name}: {line}")?;
                }
            }
        }
    }
    if failures > 0 {
        return Err(format!("{failures} problem(s) found").into());
    }
    Ok(())
}

fn describe(doc: &Document) -> String {
    match doc {
        Document::Policy(p) => format!(
            "ResiliencePolicy {}/{}",
            p.metadata.namespace.as_deref().unwrap_or("default"),
            p.metadata.name
        ),
        Document::Endpoints(e) => format!(
            "ServiceEndpoints {}/{}",
            e.metadata.namespace.as_deref().unwrap_or("default"),
            e.metadata.name
        ),
    }
}

/// Expand `-f` arguments into (display name, contents), directories sorted by name.
fn read_inputs(inputs: &[PathBuf]) -> Result<Vec<(String, String)>, BoxError> {
    let mut read = Vec::new();
    for input in inputs {
        if input.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            read.push(("<stdin>".to_string(), text));
        } else if input.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| format!("{}: {e}", input.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| is_yaml(p))
                .collect();
            files.sort();
            for file in files {
                read.push(read_file(&file)?);
            }
        } else {
            read.push(read_file(input)?);
        }
    }
    Ok(read)
}

fn read_file(path: &Path) -> Result<(String, String), BoxError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path.display().to_string(), text))
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "yaml" || x == "yml")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_validate(text: &str) -> (Result<(), BoxError>, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, text).expect("write");
        let mut out = Vec::new();
        let result = validate(&[file], &mut out);
        (result, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn valid_file_lists_documents() {
        let (result, out) = run_validate(
            "apiVersion: levee.dev/v1alpha1\nkind: ServiceEndpoints\nmetadata: {name: payments, namespace: shop}\nspec: {service: payments, port: 8080, addresses: [\"127.0.0.1:9001\"]}\n",
        );
        assert!(result.is_ok(), "{out}");
        assert!(out.contains("ServiceEndpoints shop/payments ok"), "{out}");
    }

    #[test]
    fn invalid_file_names_file_and_field_and_fails() {
        let (result, out) = run_validate(
            "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: payments}\nspec:\n  target: {service: payments}\n  outbound:\n    retry: {backoff: {base: \"25\"}}\n",
        );
        assert!(result.is_err());
        assert!(out.contains("p.yaml"), "{out}");
        assert!(out.contains("spec.outbound.retry.backoff.base"), "{out}");
    }
}
