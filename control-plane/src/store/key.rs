//! How stored documents are addressed: `(kind, namespace, name)`.

use std::fmt;

use levee_proto::policy::DEFAULT_NAMESPACE;

/// Address of a stored document. Ordered by kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocKey {
    /// `ResiliencePolicy` or `ServiceEndpoints`.
    pub kind: String,
    /// Namespace (never empty: "default" is filled in).
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl DocKey {
    /// A key; an empty namespace becomes `default`.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        DocKey {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Reads the `kind/namespace/name` form written by `Display`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '/');
        let (kind, namespace, name) = (parts.next()?, parts.next()?, parts.next()?);
        Some(DocKey::new(kind, namespace, name))
    }
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}
