//! `POST /validate-resiliencepolicy`: the validating webhook of the
//! `ResiliencePolicy` custom resource. The object is checked by the same
//! parser and validator as `leveectl validate` (`levee_proto::policy::
//! parse_documents`), so `kubectl apply` of a bad policy fails with the
//! field-path message `leveectl validate` prints, e.g.
//! `spec.outbound.retry.maxRetries: 11 is greater than the maximum of 10`.
//!
//! What it cannot check: conflicts with *other* policies (two policies on one
//! target); those need the cluster's state, and the control plane reports
//! them in the policy's status instead.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use levee_proto::policy::{KIND_POLICY, parse_documents};
use serde_json::{Map, Value};

/// HTTP status and reason of a denial: the client sees `422 Invalid`, as for
/// a schema violation.
const DENY_CODE: u16 = 422;
const DENY_REASON: &str = "Invalid";

/// Answers one review: allowed, or denied with every problem, one per line.
pub fn review(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    // The configuration asks for CREATE and UPDATE (a PATCH arrives as
    // UPDATE); anything else has nothing to validate.
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return response;
    }
    let Some(object) = &request.object else {
        return deny(response, "the review carries no object".to_owned());
    };
    match problems(object, &request.name) {
        None => response,
        Some(message) => deny(response, message),
    }
}

fn deny(mut response: AdmissionResponse, message: String) -> AdmissionResponse {
    response = response.deny(message);
    response.result.code = DENY_CODE;
    response.result.reason = DENY_REASON.to_owned();
    response
}

/// The validator's problems, `path: message` per line, or `None` when valid.
fn problems(object: &DynamicObject, request_name: &str) -> Option<String> {
    let document = as_document(object, request_name);
    // JSON is YAML: the parser reads it as it reads a policy file. (Written
    // as YAML instead, a key such as `on` would come back as the boolean
    // `true` under YAML 1.1; JSON quotes every key.)
    let text = match serde_json::to_string_pretty(&document) {
        Ok(text) => text,
        Err(e) => return Some(format!("the object cannot be read: {e}")),
    };
    let errors = parse_documents(&text).err()?;
    let mut lines: Vec<String> = errors
        .iter()
        .map(|e| {
            // A position would point into the JSON written above, which
            // the client never saw.
            let message = match e.message.rfind(" (line ") {
                Some(at) if e.message.ends_with(')') => &e.message[..at],
                _ => e.message.as_str(),
            };
            if e.path.is_empty() {
                message.to_owned()
            } else {
                format!("{}: {message}", e.path)
            }
        })
        .collect();
    if lines.iter().any(|l| l.contains("unknown field `true`")) {
        lines.push(YAML_ON_HINT.to_owned());
    }
    Some(lines.join("\n"))
}

/// kubectl reads YAML 1.1, where an unquoted `on:` key is the boolean
/// `true`: `retry: {on: [...]}` reaches the API server as `"true": [...]`
/// (tests/fixtures/kubernetes: every recorded policy has it). Said once,
/// after the validator's own line.
pub const YAML_ON_HINT: &str = "hint: kubectl reads an unquoted `on:` key as `true` (YAML 1.1); write it as \"on\": in the file you apply";

/// The custom resource as the policy document `leveectl` reads: its
/// apiVersion and kind, `metadata` reduced to name and namespace (the API
/// server's own fields — uid, generation, managedFields — are not the
/// policy's), and every other top-level field but `status`, so an unknown
/// one is reported as in a file.
fn as_document(object: &DynamicObject, request_name: &str) -> Value {
    let mut document = Map::new();
    let types = object.types.as_ref();
    document.insert(
        "apiVersion".into(),
        types.map_or(Value::Null, |t| Value::String(t.api_version.clone())),
    );
    document.insert(
        "kind".into(),
        Value::String(types.map_or(KIND_POLICY.to_owned(), |t| t.kind.clone())),
    );
    let meta = &object.metadata;
    // A generateName object has no name yet at admission; its prefix plus
    // the generated suffix is what will be checked later, so check a stand-in.
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| Some(request_name.to_owned()).filter(|n| !n.is_empty()))
        .or_else(|| meta.generate_name.as_ref().map(|g| format!("{g}x")))
        .unwrap_or_default();
    let mut metadata = Map::new();
    metadata.insert("name".into(), Value::String(name));
    if let Some(namespace) = &meta.namespace {
        metadata.insert("namespace".into(), Value::String(namespace.clone()));
    }
    document.insert("metadata".into(), Value::Object(metadata));
    if let Value::Object(rest) = &object.data {
        for (key, value) in rest {
            if key != "status" {
                document.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(document)
}
