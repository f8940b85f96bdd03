//! `get` (one document or a list, as a table, YAML or JSON) and `delete`.

use std::io::Write;

use levee_proto::policy::{Document, parse_documents};
use levee_proto::v1;
use serde_json::json;

use super::client::{connect, describe};
use super::table::{or_dash, write_table};
use super::{Format, Resource};
use crate::admin::prepare::doc_ref;
use crate::error::BoxError;
use crate::store::DocKey;

/// `get RESOURCE [NAME] [-n NS] [-o FORMAT]`.
pub async fn get(
    server: &str,
    token: Option<&str>,
    resource: Resource,
    name: Option<&str>,
    namespace: Option<&str>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), BoxError> {
    let mut client = connect(server, token).await?;
    let no_docs = |_: u32| String::new();
    let (revision, documents) = match name {
        Some(name) => {
            let key = DocKey::new(resource.kind(), namespace.unwrap_or_default(), name);
            let response = client
                .get(v1::GetRequest {
                    r#ref: Some(doc_ref(&key)),
                })
                .await
                .map_err(|s| describe(&s, server, &no_docs))?
                .into_inner();
            (
                response.revision,
                response.document.into_iter().collect::<Vec<_>>(),
            )
        }
        None => {
            let request = v1::ListRequest {
                kind: resource.kind().to_owned(),
                namespace: namespace.unwrap_or_default().to_owned(),
            };
            let response = client
                .list(request)
                .await
                .map_err(|s| describe(&s, server, &no_docs))?
                .into_inner();
            (response.revision, response.documents)
        }
    };
    match format {
        Format::Yaml => {
            let texts: Vec<&str> = documents.iter().map(|d| d.yaml.as_str()).collect();
            write!(out, "{}", texts.join("---\n"))?;
        }
        Format::Json => {
            let items: Vec<serde_json::Value> = documents
                .iter()
                .map(|d| json!({ "revision": d.revision, "document": yaml_to_json(&d.yaml) }))
                .collect();
            let value = match name {
                Some(_) => items.into_iter().next().unwrap_or(serde_json::Value::Null),
                None => json!({ "revision": revision, "items": items }),
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        }
        Format::Table => {
            if documents.is_empty() {
                writeln!(
                    out,
                    "No {} found (store revision {revision}).",
                    resource.kind()
                )?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = documents.iter().map(row).collect();
            let header = match resource {
                Resource::Policy => ["NAMESPACE", "NAME", "SERVICE", "PORT", "ROUTES", "REVISION"],
                Resource::Endpoints => [
                    "NAMESPACE",
                    "NAME",
                    "SERVICE",
                    "PORT",
                    "ADDRESSES",
                    "REVISION",
                ],
            };
            write_table(out, &header, &rows)?;
        }
    }
    Ok(())
}

fn row(stored: &v1::StoredDocument) -> Vec<String> {
    let reference = stored.r#ref.clone().unwrap_or_default();
    let (service, port, extra) = match parse_documents(&stored.yaml).ok().and_then(|mut d| d.pop())
    {
        Some(Document::Policy(p)) => (
            p.spec.target.service.clone(),
            p.spec
                .target
                .port
                .map_or_else(|| "*".to_owned(), |p| p.to_string()),
            p.spec.outbound.routes.len().to_string(),
        ),
        Some(Document::Endpoints(e)) => (
            e.spec.service.clone(),
            e.spec.port.to_string(),
            e.spec
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        None => ("?".into(), "?".into(), "?".into()),
    };
    vec![
        reference.namespace,
        reference.name,
        service,
        port,
        or_dash(&extra),
        stored.revision.to_string(),
    ]
}

/// A stored YAML document as JSON (null if it does not parse).
pub fn yaml_to_json(yaml: &str) -> serde_json::Value {
    serde_norway::from_str(yaml).unwrap_or(serde_json::Value::Null)
}

/// `delete RESOURCE NAME [-n NS]`.
pub async fn delete(
    server: &str,
    token: Option<&str>,
    resource: Resource,
    name: &str,
    namespace: &str,
    expected_revision: Option<u64>,
    out: &mut dyn Write,
) -> Result<(), BoxError> {
    let mut client = connect(server, token).await?;
    let key = DocKey::new(resource.kind(), namespace, name);
    let request = v1::DeleteRequest {
        r#ref: Some(doc_ref(&key)),
        expected_revision,
    };
    let response = client
        .delete(request)
        .await
        .map_err(|s| describe(&s, server, &|_| String::new()))?
        .into_inner();
    writeln!(out, "{} {}/{} deleted", key.kind, key.namespace, key.name)?;
    writeln!(out, "revision {}", response.revision)?;
    Ok(())
}
