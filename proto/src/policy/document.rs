//! The two document kinds (`ResiliencePolicy`, `ServiceEndpoints`) with their
//! `apiVersion`/`kind`/`metadata` envelope, and which service each applies to.

use std::net::SocketAddr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::outbound::{InboundPolicy, OutboundPolicy};
use super::service_key::ServiceKey;

/// The only `apiVersion` this crate reads and writes.
pub const API_VERSION: &str = "levee.dev/v1alpha1";
/// `kind` of a [`ResiliencePolicy`].
pub const KIND_POLICY: &str = "ResiliencePolicy";
/// `kind` of a [`ServiceEndpoints`].
pub const KIND_ENDPOINTS: &str = "ServiceEndpoints";

/// One document of a policy file.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
// A handful of documents per file, never on the request path: boxing would
// only make matching on them clumsier.
#[allow(clippy::large_enum_variant)]
pub enum Document {
    /// `kind: ResiliencePolicy`
    Policy(ResiliencePolicy),
    /// `kind: ServiceEndpoints`
    Endpoints(ServiceEndpoints),
}

impl Document {
    /// `kind` of the document.
    pub fn kind(&self) -> &'static str {
        match self {
            Document::Policy(_) => KIND_POLICY,
            Document::Endpoints(_) => KIND_ENDPOINTS,
        }
    }

    /// The document's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Document::Policy(p) => &p.metadata,
            Document::Endpoints(e) => &e.metadata,
        }
    }
}

impl<'de> Deserialize<'de> for Document {
    /// Dispatches on `kind`. Prefer [`super::parse_documents`], which also
    /// validates and reports field paths.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_norway::Value::deserialize(deserializer)?;
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        match kind {
            KIND_POLICY => ResiliencePolicy::deserialize(value)
                .map(Document::Policy)
                .map_err(de::Error::custom),
            KIND_ENDPOINTS => ServiceEndpoints::deserialize(value)
                .map(Document::Endpoints)
                .map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "kind {other:?} is not {KIND_POLICY} or {KIND_ENDPOINTS}"
            ))),
        }
    }
}

/// `metadata`: the object's name and namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Object name (DNS subdomain).
    pub name: String,
    /// Namespace; `None` means the reader's default namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ObjectMeta {
    /// `namespace/name`, or `name` without a namespace.
    pub fn qualified_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The namespace, or `default_ns` when none was written.
    pub fn namespace_or<'a>(&'a self, default_ns: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(default_ns)
    }
}

/// The wire envelope shared by both kinds.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope<S> {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: S,
}

fn check_envelope<S>(env: Envelope<S>, kind: &str) -> Result<(ObjectMeta, S), String> {
    if env.api_version != API_VERSION {
        return Err(format!(
            "apiVersion: {:?} is not supported (use {API_VERSION})",
            env.api_version
        ));
    }
    if env.kind != kind {
        return Err(format!("kind: {:?} is not {kind}", env.kind));
    }
    Ok((env.metadata, env.spec))
}

/// A resilience policy attached to a service (`kind: ResiliencePolicy`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(try_from = "Envelope<PolicySpec>", into = "Envelope<PolicySpec>")]
pub struct ResiliencePolicy {
    /// Name and namespace; the namespace is also the target service's namespace.
    pub metadata: ObjectMeta,
    /// What the policy says.
    pub spec: PolicySpec,
}

impl TryFrom<Envelope<PolicySpec>> for ResiliencePolicy {
    type Error = String;
    fn try_from(env: Envelope<PolicySpec>) -> Result<Self, String> {
        let (metadata, spec) = check_envelope(env, KIND_POLICY)?;
        Ok(ResiliencePolicy { metadata, spec })
    }
}

impl From<ResiliencePolicy> for Envelope<PolicySpec> {
    fn from(p: ResiliencePolicy) -> Self {
        Envelope {
            api_version: API_VERSION.to_owned(),
            kind: KIND_POLICY.to_owned(),
            metadata: p.metadata,
            spec: p.spec,
        }
    }
}

/// `spec` of a [`ResiliencePolicy`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// The service the policy is about.
    pub target: Target,
    /// What callers' proxies do when calling the target.
    #[serde(default, skip_serializing_if = "OutboundPolicy::is_empty")]
    pub outbound: OutboundPolicy,
    /// What the target's own proxies do with arriving calls.
    #[serde(default, skip_serializing_if = "InboundPolicy::is_empty")]
    pub inbound: InboundPolicy,
}

/// `spec.target`: a service in the policy's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// Service name (a DNS label, no namespace).
    pub service: String,
    /// Port; `None` applies the policy to every port of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl ResiliencePolicy {
    /// The exact service key, when the policy names a port (`None` = every port).
    pub fn service_key(&self, default_ns: &str) -> Option<ServiceKey> {
        Some(ServiceKey {
            name: self.spec.target.service.clone(),
            namespace: self.metadata.namespace_or(default_ns).to_owned(),
            port: self.spec.target.port?,
        })
    }

    /// Whether the policy applies to calls to `key`. A policy with a port
    /// beats one without for the same service (see [`super::select_policy`]).
    pub fn applies_to(&self, key: &ServiceKey, default_ns: &str) -> bool {
        self.spec.target.service == key.name
            && self.metadata.namespace_or(default_ns) == key.namespace
            && self.spec.target.port.is_none_or(|p| p == key.port)
    }
}

/// Static endpoints of a service (`kind: ServiceEndpoints`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(try_from = "Envelope<EndpointsSpec>", into = "Envelope<EndpointsSpec>")]
pub struct ServiceEndpoints {
    /// Name and namespace; the namespace is also the service's namespace.
    pub metadata: ObjectMeta,
    /// Service, port and addresses.
    pub spec: EndpointsSpec,
}

impl TryFrom<Envelope<EndpointsSpec>> for ServiceEndpoints {
    type Error = String;
    fn try_from(env: Envelope<EndpointsSpec>) -> Result<Self, String> {
        let (metadata, spec) = check_envelope(env, KIND_ENDPOINTS)?;
        Ok(ServiceEndpoints { metadata, spec })
    }
}

impl From<ServiceEndpoints> for Envelope<EndpointsSpec> {
    fn from(e: ServiceEndpoints) -> Self {
        Envelope {
            api_version: API_VERSION.to_owned(),
            kind: KIND_ENDPOINTS.to_owned(),
            metadata: e.metadata,
            spec: e.spec,
        }
    }
}

impl ServiceEndpoints {
    /// The service these endpoints serve.
    pub fn service_key(&self, default_ns: &str) -> ServiceKey {
        ServiceKey {
            name: self.spec.service.clone(),
            namespace: self.metadata.namespace_or(default_ns).to_owned(),
            port: self.spec.port,
        }
    }
}

/// `spec` of [`ServiceEndpoints`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointsSpec {
    /// Service name (a DNS label).
    pub service: String,
    /// Service port the callers use.
    pub port: u16,
    /// Where the service really listens (`ip:port`; IPv6 as `[::1]:9001`).
    #[serde(default)]
    pub addresses: Vec<SocketAddr>,
}

/// The policy for `key` among `policies`: one naming the key's port beats one
/// without a port; among equals the first wins.
pub fn select_policy<'a>(
    policies: impl IntoIterator<Item = &'a ResiliencePolicy>,
    key: &ServiceKey,
    default_ns: &str,
) -> Option<&'a ResiliencePolicy> {
    let mut any_port = None;
    for p in policies {
        if p.applies_to(key, default_ns) {
            if p.spec.target.port.is_some() {
                return Some(p);
            }
            any_port = any_port.or(Some(p));
        }
    }
    any_port
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ns: Option<&str>, service: &str, port: Option<u16>) -> ResiliencePolicy {
        ResiliencePolicy {
            metadata: ObjectMeta {
                name: format!("{service}-{port:?}"),
                namespace: ns.map(str::to_owned),
            },
            spec: PolicySpec {
                target: Target {
                    service: service.to_owned(),
                    port,
                },
                outbound: OutboundPolicy::default(),
                inbound: InboundPolicy::default(),
            },
        }
    }

    fn key(name: &str, ns: &str, port: u16) -> ServiceKey {
        ServiceKey {
            name: name.into(),
            namespace: ns.into(),
            port,
        }
    }

    #[test]
    fn service_key_and_applies_to() {
        let any_port = policy(None, "payments", None);
        assert_eq!(any_port.service_key("shop"), None);
        assert!(any_port.applies_to(&key("payments", "shop", 1), "shop"));
        assert!(!any_port.applies_to(&key("payments", "other", 1), "shop"));
        assert!(!any_port.applies_to(&key("orders", "shop", 1), "shop"));
        let p8080 = policy(Some("shop"), "payments", Some(8080));
        assert_eq!(
            p8080.service_key("default"),
            Some(key("payments", "shop", 8080))
        );
        assert!(p8080.applies_to(&key("payments", "shop", 8080), "default"));
        assert!(!p8080.applies_to(&key("payments", "shop", 8081), "default"));
    }

    #[test]
    fn a_policy_naming_the_port_beats_one_without() {
        let all = [
            policy(Some("shop"), "payments", None),
            policy(Some("shop"), "payments", Some(8080)),
        ];
        let k = key("payments", "shop", 8080);
        assert_eq!(select_policy(&all, &k, "default"), Some(&all[1]));
        let other_port = key("payments", "shop", 9090);
        assert_eq!(select_policy(&all, &other_port, "default"), Some(&all[0]));
        assert_eq!(select_policy(&all, &key("x", "shop", 1), "default"), None);
    }
}
