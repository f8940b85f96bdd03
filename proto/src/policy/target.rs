//! Target identity: which service port (or every port of a service) a
//! document is about, with its namespace filled in. The rules that need it
//! live here and nowhere else:
//! - one document of a kind per target, and one object per kind, namespace
//!   and name ([`check_batch`]);
//! - a policy naming a port beats one for every port of the service
//!   ([`PolicyIndex::get`], [`select_policy`]).
//!
//! The proxy (file mode), the control plane (Apply) and leveectl all check a
//! batch with [`check_batch`] and their default namespace, so a document
//! without a namespace and one with `namespace: <default>` are the same target
//! everywhere.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use super::document::{Document, ResiliencePolicy, ServiceEndpoints};
use super::error::{FieldError, PolicyErrors, Problems};
use super::service_key::ServiceKey;

/// What a document is about: a service in a namespace, and one port or every
/// port. Made by [`Document::target`] and friends, which fill in the
/// namespace; compare only keys made with the same default namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    /// Service name.
    pub service: String,
    /// Namespace (the reader's default when the document names none).
    pub namespace: String,
    /// Port; `None` is every port of the service.
    pub port: Option<u16>,
}

impl TargetKey {
    /// The service port, when the target names one.
    pub fn service_key(&self) -> Option<ServiceKey> {
        Some(ServiceKey {
            name: self.service.clone(),
            namespace: self.namespace.clone(),
            port: self.port?,
        })
    }

    /// Whether calls to `key` fall under this target.
    pub fn covers(&self, key: &ServiceKey) -> bool {
        self.service == key.name
            && self.namespace == key.namespace
            && self.port.is_none_or(|p| p == key.port)
    }
}

impl From<ServiceKey> for TargetKey {
    /// The target of exactly one service port.
    fn from(key: ServiceKey) -> Self {
        TargetKey {
            service: key.name,
            namespace: key.namespace,
            port: Some(key.port),
        }
    }
}

impl fmt::Display for TargetKey {
    /// `payments.shop:8080`, or `payments.shop (every port)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.service)?;
        if !self.namespace.is_empty() {
            write!(f, ".{}", self.namespace)?;
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => f.write_str(" (every port)"),
        }
    }
}

impl ResiliencePolicy {
    /// The policy's target; its namespace is the policy's, or `default_ns`.
    pub fn target(&self, default_ns: &str) -> TargetKey {
        TargetKey {
            service: self.spec.target.service.clone(),
            namespace: self.metadata.namespace_or(default_ns).to_owned(),
            port: self.spec.target.port,
        }
    }
}

impl ServiceEndpoints {
    /// The service port these endpoints serve; the namespace is the
    /// document's, or `default_ns`.
    pub fn service_key(&self, default_ns: &str) -> ServiceKey {
        ServiceKey {
            name: self.spec.service.clone(),
            namespace: self.metadata.namespace_or(default_ns).to_owned(),
            port: self.spec.port,
        }
    }

    /// The same service port as a target.
    pub fn target(&self, default_ns: &str) -> TargetKey {
        self.service_key(default_ns).into()
    }
}

impl Document {
    /// What the document is about; see [`TargetKey`].
    pub fn target(&self, default_ns: &str) -> TargetKey {
        match self {
            Document::Policy(p) => p.target(default_ns),
            Document::Endpoints(e) => e.target(default_ns),
        }
    }
}

/// Values (policies, or whatever stands for them) by target, looked up by
/// the service port of a call: the one rule of which policy applies.
#[derive(Clone, Debug)]
pub struct PolicyIndex<T> {
    /// Targets that name a port.
    by_port: HashMap<ServiceKey, T>,
    /// Targets for every port: namespace → service → value (two levels, so a
    /// lookup borrows the key's strings instead of building a tuple).
    every_port: HashMap<String, HashMap<String, T>>,
}

impl<T> Default for PolicyIndex<T> {
    fn default() -> Self {
        PolicyIndex {
            by_port: HashMap::new(),
            every_port: HashMap::new(),
        }
    }
}

impl<T> PolicyIndex<T> {
    /// Files `value` under `target`; returns what was there before.
    pub fn insert(&mut self, target: TargetKey, value: T) -> Option<T> {
        match target.port {
            Some(port) => self.by_port.insert(
                ServiceKey {
                    name: target.service,
                    namespace: target.namespace,
                    port,
                },
                value,
            ),
            None => self
                .every_port
                .entry(target.namespace)
                .or_default()
                .insert(target.service, value),
        }
    }

    /// Files `value` under `target` unless a value is there already.
    fn insert_if_absent(&mut self, target: TargetKey, value: T) {
        match target.port {
            Some(port) => {
                let key = ServiceKey {
                    name: target.service,
                    namespace: target.namespace,
                    port,
                };
                self.by_port.entry(key).or_insert(value);
            }
            None => {
                self.every_port
                    .entry(target.namespace)
                    .or_default()
                    .entry(target.service)
                    .or_insert(value);
            }
        }
    }

    /// The value for calls to `key`: the one whose target names `key`'s port,
    /// else the one for every port of the service, else none.
    pub fn get(&self, key: &ServiceKey) -> Option<&T> {
        self.by_port.get(key).or_else(|| {
            self.every_port
                .get(&key.namespace)
                .and_then(|services| services.get(&key.name))
        })
    }

    /// How many targets have a value.
    pub fn len(&self) -> usize {
        self.by_port.len() + self.every_port.values().map(HashMap::len).sum::<usize>()
    }

    /// Whether no target has a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The policy for `key` among `policies` (namespaces defaulting to
/// `default_ns`), by the rule of [`PolicyIndex::get`]; among policies of one
/// target the first wins.
pub fn select_policy<'a>(
    policies: impl IntoIterator<Item = &'a ResiliencePolicy>,
    key: &ServiceKey,
    default_ns: &str,
) -> Option<&'a ResiliencePolicy> {
    let mut index = PolicyIndex::default();
    for policy in policies {
        let target = policy.target(default_ns);
        if target.covers(key) {
            index.insert_if_absent(target, policy);
        }
    }
    index.get(key).copied()
}

/// Checks that a batch of documents (namespaces defaulting to `default_ns`)
/// holds at most one object per kind, namespace and name, and at most one
/// document of a kind per target. Problems name the later document; document
/// numbers count the batch from 1.
pub fn check_batch<'a>(
    documents: impl IntoIterator<Item = &'a Document>,
    default_ns: &str,
) -> Result<(), PolicyErrors> {
    let numbered = documents.into_iter().enumerate().map(|(i, d)| (i + 1, d));
    let errors = batch_problems(numbered, default_ns);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PolicyErrors(errors))
    }
}

/// [`check_batch`] with the caller's document numbers.
pub(crate) fn batch_problems<'a>(
    documents: impl IntoIterator<Item = (usize, &'a Document)>,
    default_ns: &str,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    // The first document of each name and target: its number and object.
    let mut names: HashMap<(&str, String, String), (usize, String)> = HashMap::new();
    let mut targets: HashMap<(&str, TargetKey), (usize, String)> = HashMap::new();
    for (number, doc) in documents {
        let meta = doc.metadata();
        let namespace = meta.namespace_or(default_ns).to_owned();
        let object = format!("{} {}", doc.kind(), meta.qualified_name());
        let mut p = Problems::new(number, Some(object.clone()));
        match names.entry((doc.kind(), namespace, meta.name.clone())) {
            Entry::Vacant(v) => {
                v.insert((number, object.clone()));
            }
            Entry::Occupied(o) => {
                let (first, _) = o.get();
                p.add(
                    "metadata.name",
                    format!("document {first} has the same kind, namespace and name"),
                );
            }
        }
        let target = doc.target(default_ns);
        let label = target.to_string();
        match targets.entry((doc.kind(), target)) {
            Entry::Vacant(v) => {
                v.insert((number, object));
            }
            Entry::Occupied(o) => {
                let (first, first_object) = o.get();
                let path = match doc {
                    Document::Policy(_) => "spec.target",
                    Document::Endpoints(_) => "spec",
                };
                p.add(
                    path,
                    format!(
                        "document {first} ({first_object}) already is the {} of {label}",
                        doc.kind()
                    ),
                );
            }
        }
        errors.extend(p.errors);
    }
    errors
}

#[cfg(test)]
mod tests;
