//! Reading `-f FILE|DIR|-` arguments and validating them locally, so that
//! errors name the file, the document and the field before anything is sent.

use std::io::Read;
use std::path::{Path, PathBuf};

use levee_proto::policy::{DEFAULT_NAMESPACE, Document, check_batch, parse_documents};

use crate::admin::prepare::{Prepared, canonical};
use crate::error::BoxError;

/// One input file's name and text.
#[derive(Clone, Debug)]
pub struct Input {
    /// Path as given, or `<stdin>`.
    pub name: String,
    /// Contents.
    pub text: String,
}

/// A locally validated document and where it came from.
#[derive(Clone, Debug)]
pub struct LocalDocument {
    /// `FILE document N` (N counts the file's non-empty documents from 1).
    pub source: String,
    /// Canonical form, as the server will store it.
    pub prepared: Prepared,
}

/// Expands `-f` arguments into their contents; directories give their
/// `.yaml`/`.yml` files sorted by name.
pub fn read_inputs(inputs: &[PathBuf]) -> Result<Vec<Input>, BoxError> {
    let mut read = Vec::new();
    for input in inputs {
        if input.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("<stdin>: {e}"))?;
            read.push(Input {
                name: "<stdin>".into(),
                text,
            });
        } else if input.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| format!("{}: {e}", input.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| is_yaml(p))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(format!("{}: no .yaml or .yml files", input.display()).into());
            }
            for file in files {
                read.push(read_file(&file)?);
            }
        } else {
            read.push(read_file(input)?);
        }
    }
    Ok(read)
}

fn read_file(path: &Path) -> Result<Input, BoxError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Input {
        name: path.display().to_string(),
        text,
    })
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "yaml" || x == "yml")
}

/// Validates every input. On success, every document in order; on failure,
/// one line per problem (`FILE: document N (Kind ns/name): path: message`).
pub fn validate_inputs(inputs: &[Input]) -> Result<Vec<LocalDocument>, Vec<String>> {
    let mut documents = Vec::new();
    let mut problems = Vec::new();
    for input in inputs {
        match parse_documents(&input.text) {
            Ok(docs) => {
                for (i, doc) in docs.into_iter().enumerate() {
                    documents.push(LocalDocument {
                        source: format!("{} document {}", input.name, i + 1),
                        prepared: canonical(doc),
                    });
                }
            }
            Err(errors) => problems.extend(errors.iter().map(|e| format!("{}: {e}", input.name))),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // The whole batch, as the server will check it: files together, the
    // default namespace filled in.
    let batch: Vec<&Document> = documents.iter().map(|d| &d.prepared.document).collect();
    if let Err(errors) = check_batch(batch, DEFAULT_NAMESPACE) {
        return Err(errors
            .iter()
            .map(|e| {
                let source = documents
                    .get(e.document.saturating_sub(1))
                    .map_or("", |d| d.source.as_str());
                let object = e.object.as_deref().unwrap_or_default();
                format!("{source} ({object}): {}: {}", e.path, e.message)
            })
            .collect());
    }
    Ok(documents)
}

/// Reads and validates `-f` arguments; any problem is an error listing them all.
pub fn load(inputs: &[PathBuf]) -> Result<Vec<LocalDocument>, BoxError> {
    let read = read_inputs(inputs)?;
    match validate_inputs(&read) {
        Ok(docs) if docs.is_empty() => Err("no documents in the given files".into()),
        Ok(docs) => Ok(docs),
        Err(problems) => Err(format!(
            "{} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, metadata: &str) -> Input {
        Input {
            name: name.into(),
            text: format!(
                "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {metadata}\n\
                 spec: {{target: {{service: payments, port: 8080}}}}\n"
            ),
        }
    }

    #[test]
    fn files_are_checked_together_with_the_default_namespace() {
        // Each file is valid alone; together they hold one target twice.
        let inputs = [
            input("a.yaml", "{name: a}"),
            input("b.yaml", "{name: b, namespace: default}"),
        ];
        let problems = validate_inputs(&inputs).expect_err("one target twice");
        assert_eq!(
            problems,
            [
                "b.yaml document 1 (ResiliencePolicy default/b): spec.target: document 1 \
                 (ResiliencePolicy default/a) already is the ResiliencePolicy of payments.default:8080"
            ]
        );
        let other_namespace = [
            input("a.yaml", "{name: a}"),
            input("b.yaml", "{name: b, namespace: shop}"),
        ];
        assert_eq!(validate_inputs(&other_namespace).map(|d| d.len()), Ok(2));
    }
}
