//! Reading and printing policy files: multi-document YAML (`---`), each
//! document dispatched on `kind`, deserialised strictly (unknown fields are
//! errors, with their path), then validated. All problems are collected.

use serde::Deserialize;
use serde_norway::Value;

use super::document::{
    API_VERSION, Document, KIND_ENDPOINTS, KIND_POLICY, ResiliencePolicy, ServiceEndpoints,
};
use super::error::{FieldError, PolicyErrors, Problems};
use super::validate;

/// Parses and validates every document of a policy file.
///
/// Empty documents (a lone `---`, comments only) are skipped; document
/// numbers in errors count every document in the file, starting at 1.
pub fn parse_documents(src: &str) -> Result<Vec<Document>, PolicyErrors> {
    let mut errors = Vec::new();
    let mut docs = Vec::new();
    // First pass: untyped values, to read `kind` and `metadata` for messages.
    let mut values = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(src).enumerate() {
        match Value::deserialize(de) {
            Ok(v) => values.push(v),
            Err(e) => {
                // The YAML stream cannot be read past this point; the
                // documents before it are still checked.
                errors.push(FieldError {
                    document: i + 1,
                    path: String::new(),
                    message: format!("not valid YAML: {e}"),
                    object: None,
                });
                break;
            }
        }
    }
    // Second pass: typed, straight from the YAML so errors keep line numbers.
    for (i, de) in serde_norway::Deserializer::from_str(src).enumerate() {
        let Some(value) = values.get(i) else { break };
        if value.is_null() {
            continue;
        }
        let mut problems = Problems::new(i + 1, object_label(value));
        if let Some(doc) = typed(value, de, &mut problems) {
            validate::document(&doc, &mut problems);
            docs.push((i + 1, doc));
        }
        errors.extend(problems.errors);
    }
    errors.extend(validate::across_documents(&docs));
    // Stable: within a document, problems stay in field order.
    errors.sort_by_key(|e| e.document);
    if errors.is_empty() {
        Ok(docs.into_iter().map(|(_, d)| d).collect())
    } else {
        Err(PolicyErrors(errors))
    }
}

/// `Kind namespace/name`, as far as the raw document tells.
fn object_label(value: &Value) -> Option<String> {
    let kind = value.get("kind")?.as_str()?;
    let meta = value.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    Some(match (ns, name) {
        (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
        (None, Some(name)) => format!("{kind} {name}"),
        _ => kind.to_owned(),
    })
}

fn typed(
    value: &Value,
    de: serde_norway::Deserializer<'_>,
    problems: &mut Problems,
) -> Option<Document> {
    if !value.is_mapping() {
        problems.add(
            "",
            "a document must be a mapping with apiVersion, kind, metadata and spec",
        );
        return None;
    }
    match value.get("apiVersion").map(|v| v.as_str()) {
        None => problems.add("apiVersion", format!("missing (use {API_VERSION})")),
        Some(Some(API_VERSION)) => {}
        Some(other) => problems.add(
            "apiVersion",
            format!("{} is not supported (use {API_VERSION})", show(other)),
        ),
    }
    let kind = match value.get("kind").map(|v| v.as_str()) {
        None => {
            problems.add(
                "kind",
                format!("missing ({KIND_POLICY} or {KIND_ENDPOINTS})"),
            );
            None
        }
        Some(Some(k @ (KIND_POLICY | KIND_ENDPOINTS))) => Some(k),
        Some(other) => {
            problems.add(
                "kind",
                format!("{} is not {KIND_POLICY} or {KIND_ENDPOINTS}", show(other)),
            );
            None
        }
    };
    if !problems.errors.is_empty() {
        return None;
    }
    let result = match kind? {
        KIND_POLICY => {
            serde_path_to_error::deserialize::<_, ResiliencePolicy>(de).map(Document::Policy)
        }
        _ => serde_path_to_error::deserialize::<_, ServiceEndpoints>(de).map(Document::Endpoints),
    };
    match result {
        Ok(doc) => Some(doc),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let message = serde_message(e.inner());
            // serde_norway may already prefix its own copy of the path.
            let message = message
                .strip_prefix(&format!("{path}: "))
                .map(str::to_owned)
                .unwrap_or(message);
            problems.add(path, message);
            None
        }
    }
}

fn show(text: Option<&str>) -> String {
    text.map_or_else(|| "a non-string value".to_owned(), |t| format!("{t:?}"))
}

/// serde's message, with the YAML position moved to a readable suffix.
fn serde_message(e: &serde_norway::Error) -> String {
    let text = e.to_string();
    match e.location() {
        Some(loc) => {
            let bare = text
                .split(" at line ")
                .next()
                .unwrap_or(&text)
                .trim_end()
                .to_owned();
            format!("{bare} (line {}, column {})", loc.line(), loc.column())
        }
        None => text,
    }
}

/// Prints documents as one multi-document YAML file that
/// [`parse_documents`] reads back to the same values.
pub fn to_yaml(docs: &[Document]) -> String {
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        match serde_norway::to_string(doc) {
            Ok(text) => out.push_str(&text),
            // Our types only hold strings, numbers, bools, lists and maps.
            Err(e) => out.push_str(&format!("# cannot print document {}: {e}\n", i + 1)),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
