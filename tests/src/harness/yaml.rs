//! Policy files for tests, built from levee-proto's typed documents
//! (`ServiceEndpoints`, `ResiliencePolicy`) and printed with its YAML
//! printer, so a test file is always one the proxy and `leveectl` read.
//! A test that needs an invalid file writes its text by hand.

use std::net::SocketAddr;

use levee_proto::policy::{
    Document, EndpointsSpec, InboundPolicy, ObjectMeta, OutboundPolicy, PolicySpec,
    ResiliencePolicy, ServiceEndpoints, Target, to_yaml,
};
use serde::Deserialize;

/// The namespace of every document built here.
pub const NAMESPACE: &str = "default";

/// A `ServiceEndpoints` document for `service:port` (namespace `default`).
pub fn endpoints(service: &str, port: u16, addresses: &[SocketAddr]) -> Document {
    Document::Endpoints(ServiceEndpoints {
        metadata: meta(service),
        spec: EndpointsSpec {
            service: service.to_owned(),
            port,
            addresses: addresses.to_vec(),
        },
    })
}

/// A `ResiliencePolicy` for `service:port` (namespace `default`) whose
/// `spec` besides `target` is `spec_body`: `outbound:` and/or `inbound:` as
/// a user writes them, e.g. `"  outbound:\n    timeouts: {request: 2s}\n"`.
/// Panics with serde's reason when `spec_body` is not a valid section.
pub fn policy(service: &str, port: u16, spec_body: &str) -> Document {
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
        metadata: meta(service),
        spec: PolicySpec {
            target: Target {
                service: service.to_owned(),
                port: Some(port),
            },
            outbound: sections.outbound,
            inbound: sections.inbound,
        },
    })
}

/// Documents as one multi-document file.
pub fn documents(docs: &[Document]) -> String {
    to_yaml(docs)
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.to_owned(),
        namespace: Some(NAMESPACE.to_owned()),
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
