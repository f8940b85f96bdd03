//! Turning an Apply request's YAML into what the store keeps: validated
//! documents with their namespace filled in, their key, and canonical YAML.

use levee_proto::policy::{
    DEFAULT_NAMESPACE, Document, FieldError, KIND_ENDPOINTS, KIND_POLICY, PolicyErrors,
    check_batch, check_document_ref, parse_documents, to_yaml,
};
use levee_proto::v1;
use tonic::Status;

use super::errors::invalid_policy;
use crate::discovery::registry::Registry;
use crate::store::DocKey;

/// One validated document, ready to store.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Where it is stored.
    pub key: DocKey,
    /// Canonical YAML (what is stored and returned by Get).
    pub yaml: String,
    /// The document (namespace filled in).
    pub document: Document,
}

/// The batch of an Apply request as YAML: its `yaml`, or its typed
/// `documents` printed as YAML (so both forms get the same validation).
pub fn request_yaml(request: &v1::ApplyRequest) -> Result<String, Status> {
    if request.documents.is_empty() {
        return Ok(request.yaml.clone());
    }
    if !request.yaml.is_empty() {
        return Err(Status::invalid_argument(
            "set either yaml or documents, not both",
        ));
    }
    let mut documents = Vec::with_capacity(request.documents.len());
    let mut problems = Vec::new();
    for (index, typed) in request.documents.iter().enumerate() {
        match Document::try_from(typed.clone()) {
            Ok(doc) => documents.push(doc),
            Err(errors) => problems.extend(errors.0.into_iter().map(|e| FieldError {
                document: index + 1,
                ..e
            })),
        }
    }
    if !problems.is_empty() {
        return Err(invalid_policy(&PolicyErrors(problems)));
    }
    Ok(to_yaml(&documents))
}

/// Parses, validates and canonicalises a batch; any problem rejects the whole batch.
pub fn prepare(yaml: &str) -> Result<Vec<Prepared>, Status> {
    let documents = parse_documents(yaml).map_err(|e| invalid_policy(&e))?;
    if documents.is_empty() {
        return Err(invalid_policy(&PolicyErrors(vec![FieldError {
            document: 0,
            path: String::new(),
            message: "no documents to apply".into(),
            object: None,
        }])));
    }
    // The file's own check cannot know that an unset namespace is ours.
    check_batch(&documents, DEFAULT_NAMESPACE).map_err(|e| invalid_policy(&e))?;
    Ok(documents.into_iter().map(canonical).collect())
}

/// Rejects documents whose target a *stored* document (of another name)
/// already claims. Clashes inside the batch are found by [`prepare`].
pub fn check_targets(prepared: &[Prepared], registry: &Registry) -> Result<(), Status> {
    let mut problems = Vec::new();
    for (index, doc) in prepared.iter().enumerate() {
        let target = doc.document.target(DEFAULT_NAMESPACE);
        if let Some(owner) = registry.target_owner(doc.document.kind(), &target, &doc.key) {
            problems.push(FieldError {
                document: index + 1,
                path: if doc.key.kind == KIND_POLICY {
                    "spec.target"
                } else {
                    "spec"
                }
                .into(),
                message: format!(
                    "{} {}/{} already targets {target}; change or delete it first",
                    owner.kind, owner.namespace, owner.name
                ),
                object: Some(format!(
                    "{} {}/{}",
                    doc.key.kind, doc.key.namespace, doc.key.name
                )),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(invalid_policy(&PolicyErrors(problems)))
    }
}

/// A validated document with its namespace filled in, its key and canonical
/// YAML: the same text whether it is computed here or by leveectl.
pub fn canonical(mut document: Document) -> Prepared {
    fill_namespace(&mut document);
    let meta = document.metadata();
    let key = DocKey::new(
        document.kind(),
        meta.namespace_or(DEFAULT_NAMESPACE),
        &meta.name,
    );
    let yaml = to_yaml(std::slice::from_ref(&document));
    Prepared {
        key,
        yaml,
        document,
    }
}

fn fill_namespace(document: &mut Document) {
    let meta = match document {
        Document::Policy(p) => &mut p.metadata,
        Document::Endpoints(e) => &mut e.metadata,
    };
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
}

/// A wire document reference as a store key.
pub fn doc_key(reference: Option<&v1::DocumentRef>) -> Result<DocKey, Status> {
    let reference = reference.ok_or_else(|| Status::invalid_argument("ref is required"))?;
    if reference.kind != KIND_POLICY && reference.kind != KIND_ENDPOINTS {
        return Err(Status::invalid_argument(format!(
            "kind {:?} is not {KIND_POLICY} or {KIND_ENDPOINTS}",
            reference.kind
        )));
    }
    check_document_ref(reference).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(DocKey::new(
        &reference.kind,
        &reference.namespace,
        &reference.name,
    ))
}

/// A store key as its wire reference.
pub fn doc_ref(key: &DocKey) -> v1::DocumentRef {
    v1::DocumentRef {
        kind: key.kind.clone(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}
