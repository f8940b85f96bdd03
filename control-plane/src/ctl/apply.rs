//! `validate`, `apply` and `diff`: documents from files against the store.

use std::io::Write;
use std::path::PathBuf;

use levee_proto::v1;
use tonic::Code;

use super::Outcome;
use super::client::{connect, describe};
use super::files::{LocalDocument, load, read_inputs, validate_inputs};
use crate::admin::prepare::doc_ref;
use crate::error::BoxError;

/// Checks files offline; prints one line per document or per problem.
pub fn validate(inputs: &[PathBuf], out: &mut dyn Write) -> Result<(), BoxError> {
    let read = read_inputs(inputs)?;
    match validate_inputs(&read) {
        Ok(docs) => {
            for doc in &docs {
                let key = &doc.prepared.key;
                writeln!(
                    out,
                    "{}: {} {}/{} ok",
                    doc.source, key.kind, key.namespace, key.name
                )?;
            }
            Ok(())
        }
        Err(problems) => {
            for line in &problems {
                writeln!(out, "{line}")?;
            }
            Err(format!("{} problem(s) found", problems.len()).into())
        }
    }
}

/// Validates locally, then applies every document of every file as one batch.
pub async fn apply(
    server: &str,
    token: Option<&str>,
    inputs: &[PathBuf],
    expected_revision: Option<u64>,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), BoxError> {
    let docs = load(inputs)?;
    let yaml = docs
        .iter()
        .map(|d| d.prepared.yaml.as_str())
        .collect::<Vec<_>>()
        .join("---\n");
    let mut client = connect(server, token).await?;
    let request = v1::ApplyRequest {
        yaml,
        expected_revision,
        dry_run,
        documents: Vec::new(),
    };
    let response = client
        .apply(request)
        .await
        .map_err(|status| describe(&status, server, &|i| source_of(&docs, i)))?
        .into_inner();
    for (doc, applied) in docs.iter().zip(&response.documents) {
        let key = &doc.prepared.key;
        let action = match applied.action() {
            v1::ApplyAction::Created => "created",
            v1::ApplyAction::Configured => "configured",
            v1::ApplyAction::Unchanged => "unchanged",
            v1::ApplyAction::Unspecified => "applied",
        };
        let suffix = if dry_run { " (dry run)" } else { "" };
        writeln!(
            out,
            "{} {}/{} {action}{suffix}",
            key.kind, key.namespace, key.name
        )?;
    }
    writeln!(out, "revision {}", response.revision)?;
    Ok(())
}

/// Where document `index` (1-based, of the batch) came from.
fn source_of(docs: &[LocalDocument], index: u32) -> String {
    usize::try_from(index)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| docs.get(i))
        .map_or_else(|| "request".to_owned(), |d| d.source.clone())
}

/// Prints a line diff between the stored and the local canonical YAML of
/// every document.
pub async fn diff(
    server: &str,
    token: Option<&str>,
    inputs: &[PathBuf],
    out: &mut dyn Write,
) -> Result<Outcome, BoxError> {
    let docs = load(inputs)?;
    let mut client = connect(server, token).await?;
    let mut differences = false;
    for doc in &docs {
        let key = &doc.prepared.key;
        let request = v1::GetRequest {
            r#ref: Some(doc_ref(key)),
        };
        let (live, label) = match client.get(request).await {
            Ok(response) => {
                let stored = response.into_inner().document.unwrap_or_default();
                (stored.yaml, format!("live (revision {})", stored.revision))
            }
            Err(status) if status.code() == Code::NotFound => {
                (String::new(), "live (absent)".to_owned())
            }
            Err(status) => return Err(describe(&status, server, &|_| doc.source.clone()).into()),
        };
        if live == doc.prepared.yaml {
            continue;
        }
        differences = true;
        writeln!(
            out,
            "--- {} {}/{} {label}",
            key.kind, key.namespace, key.name
        )?;
        writeln!(
            out,
            "+++ {} {}/{} {}",
            key.kind, key.namespace, key.name, doc.source
        )?;
        for line in line_diff(&live, &doc.prepared.yaml) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(if differences {
        Outcome::Differences
    } else {
        Outcome::Done
    })
}

/// Lines of `old` and `new` prefixed with `-`, `+` or ` ` (longest common subsequence).
pub fn line_diff(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut lines = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push(format!(" {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            lines.push(format!("-{}", a[i]));
            i += 1;
        } else {
            lines.push(format!("+{}", b[j]));
            j += 1;
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_marks_changes() {
        let got = line_diff("a\nb\nc\n", "a\nx\nc\nd\n");
        assert_eq!(got, [" a", "-b", "+x", " c", "+d"]);
        assert_eq!(line_diff("", "a"), ["+a"]);
        assert_eq!(line_diff("a", ""), ["-a"]);
    }
}
