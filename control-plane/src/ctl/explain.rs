//! `explain SERVICE [--path P --method M]`: the effective policy a caller's
//! proxy enforces on that route, every value labelled with where it comes
//! from: `default`, `service` (the policy's service level) or `route NAME`.
//!
//! The policy model resolves values without recording their origin, so the
//! origin is found by comparison: a value that differs from the service-level
//! result came from the route; one that differs from the no-policy result
//! came from the service level; the rest are defaults. (A route override
//! equal to the service value is therefore shown as `service`.)

use std::collections::BTreeMap;
use std::io::Write;

use levee_proto::policy::{
    DEFAULT_NAMESPACE, Document, InboundPolicy, OutboundPolicy, ResiliencePolicy, RouteRequest,
    ServiceKey, parse_documents, select_policy,
};
use levee_proto::v1;
use serde_json::{Value, json};

use super::Format;
use super::client::{connect, describe};
use super::table::write_table;
use crate::error::BoxError;

/// What to explain.
#[derive(Clone, Debug)]
pub struct Query {
    /// Service name.
    pub service: String,
    /// Its namespace.
    pub namespace: String,
    /// Service port, if the caller cares.
    pub port: Option<u16>,
    /// Request path.
    pub path: String,
    /// Request method.
    pub method: String,
}

/// One resolved value and its origin.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// e.g. `outbound.retry.maxRetries`.
    pub path: String,
    /// The value (JSON).
    pub value: Value,
    /// `default`, `service` or `route NAME`.
    pub source: String,
}

/// The effective policy of one route.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// `namespace/name` of the selected policy, if any.
    pub policy: Option<String>,
    /// The matching route (`default` when none matched).
    pub route: String,
    /// Every value, outbound first.
    pub fields: Vec<Field>,
}

/// Fetches the service's policies and prints the explanation.
pub async fn explain(
    server: &str,
    token: Option<&str>,
    query: &Query,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), BoxError> {
    let mut client = connect(server, token).await?;
    let request = v1::ListRequest {
        kind: levee_proto::policy::KIND_POLICY.to_owned(),
        namespace: query.namespace.clone(),
    };
    let listed = client
        .list(request)
        .await
        .map_err(|s| describe(&s, server, &|_| String::new()))?
        .into_inner();
    let policies: Vec<ResiliencePolicy> = listed
        .documents
        .iter()
        .filter_map(|d| parse_documents(&d.yaml).ok())
        .flatten()
        .filter_map(|d| match d {
            Document::Policy(p) => Some(p),
            Document::Endpoints(_) => None,
        })
        .collect();
    let policy = choose(&policies, query);
    let explanation = explain_policy(policy, &RouteRequest::new(&query.method, &query.path));
    let service = match query.port {
        Some(port) => format!("{}.{}:{port}", query.service, query.namespace),
        None => format!("{}.{}", query.service, query.namespace),
    };
    match format {
        Format::Json => {
            let fields: Vec<Value> = explanation
                .fields
                .iter()
                .map(|f| json!({ "field": f.path, "value": f.value, "source": f.source }))
                .collect();
            let value = json!({
                "service": service, "method": query.method, "path": query.path,
                "policy": explanation.policy, "route": explanation.route, "fields": fields,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        }
        Format::Table | Format::Yaml => {
            writeln!(out, "service: {service}")?;
            writeln!(out, "request: {} {}", query.method, query.path)?;
            writeln!(
                out,
                "policy:  {}",
                explanation
                    .policy
                    .as_deref()
                    .unwrap_or("none (defaults apply)")
            )?;
            writeln!(out, "route:   {}", explanation.route)?;
            writeln!(out)?;
            let rows: Vec<Vec<String>> = explanation
                .fields
                .iter()
                .map(|f| vec![f.path.clone(), show(&f.value), f.source.clone()])
                .collect();
            write_table(out, &["FIELD", "VALUE", "SOURCE"], &rows)?;
        }
    }
    Ok(())
}

/// The policy callers' proxies would select: the exact port's if `--port`
/// is given, else a port-less one, else the first by name.
fn choose<'a>(policies: &'a [ResiliencePolicy], query: &Query) -> Option<&'a ResiliencePolicy> {
    let ns = query.namespace.as_str();
    if let Some(port) = query.port {
        let key = ServiceKey {
            name: query.service.clone(),
            namespace: ns.to_owned(),
            port,
        };
        return select_policy(policies, &key, DEFAULT_NAMESPACE);
    }
    let all: Vec<&ResiliencePolicy> = policies
        .iter()
        .filter(|p| {
            let target = p.target(DEFAULT_NAMESPACE);
            target.service == query.service && target.namespace == ns
        })
        .collect();
    all.iter()
        .find(|p| p.spec.target.port.is_none())
        .or(all.first())
        .copied()
}

/// The effective values of `policy` for `request`, with their origins.
pub fn explain_policy(
    policy: Option<&ResiliencePolicy>,
    request: &RouteRequest<'_>,
) -> Explanation {
    let none_out = OutboundPolicy::default();
    let none_in = InboundPolicy::default();
    let outbound = policy.map_or(&none_out, |p| &p.spec.outbound);
    let inbound = policy.map_or(&none_in, |p| &p.spec.inbound);
    let route = outbound.find_route(request).map(|(_, r)| r);
    let full = flatten("outbound", &to_value(&outbound.effective_for(route)));
    let service = flatten("outbound", &to_value(&outbound.effective_for(None)));
    let defaults = flatten("outbound", &to_value(&none_out.effective_for(None)));
    let route_name = route.map_or_else(
        || levee_proto::policy::DEFAULT_ROUTE.to_owned(),
        |r| r.name.clone(),
    );
    let mut fields = Vec::new();
    for (path, value) in full {
        if path == "outbound.route" {
            continue;
        }
        let source = if service.get(&path) != Some(&value) {
            format!("route {route_name}")
        } else if defaults.get(&path) != Some(&value) {
            "service".to_owned()
        } else {
            "default".to_owned()
        };
        fields.push(Field {
            path,
            value,
            source,
        });
    }
    let inbound_defaults = flatten("inbound", &to_value(&none_in.effective()));
    for (path, value) in flatten("inbound", &to_value(&inbound.effective())) {
        let source = if inbound_defaults.get(&path) != Some(&value) {
            "service"
        } else {
            "default"
        };
        fields.push(Field {
            path,
            value,
            source: source.to_owned(),
        });
    }
    Explanation {
        policy: policy.map(|p| p.metadata.qualified_name()),
        route: route_name,
        fields,
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Objects become dotted paths; arrays and scalars are leaves. Order is by path.
fn flatten(prefix: &str, value: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                out.extend(flatten(&format!("{prefix}.{k}"), v));
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
    out
}

/// A value for a table cell: strings bare, `null` as `off`.
fn show(value: &Value) -> String {
    match value {
        Value::Null => "off".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
