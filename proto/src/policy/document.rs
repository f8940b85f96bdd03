//! The two document kinds (`ResiliencePolicy`, `ServiceEndpoints`) with their
//! `apiVersion`/`kind`/`metadata` envelope, and which service each applies to.

use std::net::{IpAddr, SocketAddr};

use schemars::JsonSchema;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::app_protocol::AppProtocol;
use super::outbound::{InboundPolicy, OutboundPolicy};

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
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
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
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// Service name (a DNS label, no namespace).
    pub service: String,
    /// Port; `None` applies the policy to every port of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
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
    /// The service's virtual IPs (v4 or v6, no port; e.g. a Kubernetes
    /// ClusterIP): a transparent call to `virtualIP:port` is a call to
    /// this service port. At most [`MAX_VIRTUAL_IPS`].
    #[serde(default, rename = "virtualIPs", skip_serializing_if = "Vec::is_empty")]
    pub virtual_ips: Vec<IpAddr>,
    /// What the app speaks on the port; `None`: the proxy learns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<AppProtocol>,

    /// The SPIFFE ID expected at every address (`None`: plaintext). One per
    /// document: the replicas of a service share its identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<super::spiffe::SpiffeId>,
}

/// `spec.virtualIPs` holds at most this many addresses (a Kubernetes
/// Service has one per IP family).
pub const MAX_VIRTUAL_IPS: usize = 16;
