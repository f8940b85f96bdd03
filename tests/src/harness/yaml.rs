//! Policy files for tests, built from levee-proto's typed documents
//! (`ServiceEndpoints`, `ResiliencePolicy`) and printed with its YAML
//! printer, so a test file is always one the proxy and `leveectl` read.
//! A test that needs an invalid file writes its text by hand.

use std::net::SocketAddr;

use levee_proto::policy::{
    Document, EndpointsSpec, InboundPolicy, ObjectMeta, OutboundPolicy, PolicySpec,
    ResiliencePolicy, ServiceEndpoints, SpiffeId, Target, to_yaml,
};
use serde::Deserialize;

/// The namespace of the documents [`endpoints`] and [`policy`] build.
pub const NAMESPACE: &str = "default";

/// A `ServiceEndpoints` document for `service:port` (namespace `default`).
pub fn endpoints(service: &str, port: u16, addresses: &[SocketAddr]) -> Document {
    endpoints_in(NAMESPACE, service, port, addresses)
}

/// A `ServiceEndpoints` document named `service` for `service:port` in
/// `namespace` (the proxy's `--namespace` or the document's own).
pub fn endpoints_in(
    namespace: &str,
    service: &str,
    port: u16,
    addresses: &[SocketAddr],
) -> Document {
    Document::Endpoints(ServiceEndpoints {
        metadata: meta(namespace, service),
        spec: EndpointsSpec {
            service: service.to_owned(),
            port,
            addresses: addresses.to_vec(),
            virtual_ips: Vec::new(),
            app_protocol: None,
            identity: None,
        },
    })
}

/// [`endpoints`] whose addresses are expected to present `identity` (a
/// SPIFFE ID): the caller's proxy speaks mTLS to them.
pub fn endpoints_with_identity(
    service: &str,
    port: u16,
    addresses: &[SocketAddr],
    identity: &str,
) -> Document {
    let mut doc = endpoints(service, port, addresses);
    if let Document::Endpoints(e) = &mut doc {
        e.spec.identity = Some(SpiffeId::parse(identity).expect("a SPIFFE ID"));
    }
    doc
}

/// A `ResiliencePolicy` for `service:port` (namespace `default`) whose
/// `spec` besides `target` is `spec_body`: `outbound:` and/or `inbound:` as
/// a user writes them, e.g. `"  outbound:\n    timeouts: {request: 2s}\n"`.
/// Panics with serde's reason when `spec_body` is not a valid section.
pub fn policy(service: &str, port: u16, spec_body: &str) -> Document {
    policy_in(NAMESPACE, service, port, spec_body)
}

/// [`policy`] in `namespace`, named `service`; `port` `None` targets every
/// port of the service.
pub fn policy_in(
    namespace: &str,
    service: &str,
    port: impl Into<Option<u16>>,
    spec_body: &str,
) -> Document {
    /// The sections of `spec` a test writes.
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Sections {
        #[serde(default)]
        outbound: OutboundPolicy,
        #[serde(default)]
        inbound: InboundPolicy,
    }
    let sections: Sections = if spec_body.trim().is_empty() {
        Sections::default()
    } else {
        serde_norway::from_str(spec_body)
            .unwrap_or_else(|e| panic!("test policy for {service} is invalid: {e}\n{spec_body}"))
    };
    Document::Policy(ResiliencePolicy {
        metadata: meta(namespace, service),
        spec: PolicySpec {
            target: Target {
                service: service.to_owned(),
                port: port.into(),
            },
            outbound: sections.outbound,
            inbound: sections.inbound,
        },
    })
}

/// `doc` with `metadata.name` set to `name` (several policies for one
/// service, or a name that differs from the service's).
pub fn named(mut doc: Document, name: &str) -> Document {
    match &mut doc {
        Document::Policy(p) => p.metadata.name = name.to_owned(),
        Document::Endpoints(e) => e.metadata.name = name.to_owned(),
    }
    doc
}

/// One service's policy file: the endpoints of `service:port` in
/// `namespace` and, unless `outbound` is `None`, a policy whose outbound
/// section is `outbound` (YAML indented by four spaces).
pub fn service_in(
    namespace: &str,
    service: &str,
    port: u16,
    outbound: Option<&str>,
    addresses: &[SocketAddr],
) -> String {
    let mut docs = vec![endpoints_in(namespace, service, port, addresses)];
    if let Some(outbound) = outbound {
        let body = format!("  outbound:\n{outbound}");
        docs.push(policy_in(namespace, service, port, &body));
    }
    documents(&docs)
}

/// Documents as one multi-document file.
pub fn documents(docs: &[Document]) -> String {
    to_yaml(docs)
}

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.to_owned(),
        namespace: Some(namespace.to_owned()),
    }
}

/// What a test may hand over as a policy file: YAML text, or documents.
pub trait PolicyFile {
    /// The file's text.
    fn into_yaml(self) -> String;
}

impl PolicyFile for String {
    fn into_yaml(self) -> String {
        self
    }
}

impl PolicyFile for &String {
    fn into_yaml(self) -> String {
        self.clone()
    }
}

impl PolicyFile for &str {
    fn into_yaml(self) -> String {
        self.to_owned()
    }
}

impl PolicyFile for Document {
    fn into_yaml(self) -> String {
        to_yaml(&[self])
    }
}

impl PolicyFile for &Document {
    fn into_yaml(self) -> String {
        to_yaml(std::slice::from_ref(self))
    }
}
