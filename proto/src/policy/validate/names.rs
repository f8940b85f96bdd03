//! Name rules, the same for every way a name arrives: documents (file,
//! Apply), wire references (`levee.v1.ServiceRef`, `DocumentRef`) and
//! Discovery hellos. Like Kubernetes:
//!
//! - service names, namespaces and route names are DNS labels (RFC 1123):
//!   lower-case `a-z`, `0-9` and `-`, starting and ending with a letter or
//!   digit, at most 63 characters;
//! - object names (`metadata.name`) are DNS subdomains: DNS labels joined
//!   by `.`, at most 253 characters.
//!
//! Every problem names its field path (`hello.subscriptions[2].name`).

use super::super::document::ObjectMeta;
use super::super::error::{PolicyErrors, Problems};
use super::super::service_key::{DEFAULT_NAMESPACE, ServiceKey, is_dns_label};
use crate::v1;

/// What a DNS label may be, for messages.
pub(crate) const LABEL_RULE: &str = "a DNS label: lower-case a-z, 0-9 and '-', starting and \
     ending with a letter or digit, at most 63 characters";

const SUBDOMAIN_RULE: &str = "a DNS subdomain: DNS labels (lower-case a-z, 0-9 and '-') \
     joined by '.', at most 253 characters";

pub(super) fn metadata(m: &ObjectMeta, p: &mut Problems) {
    object_name("metadata.name", &m.name, p);
    if let Some(ns) = &m.namespace {
        namespace("metadata.namespace", ns, p);
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

fn object_name(path: &str, name: &str, p: &mut Problems) {
    if name.is_empty() {
        p.add(path, "missing");
    } else if !is_dns_subdomain(name) {
        p.add(
            path,
            format!("{name:?} is not a valid name ({SUBDOMAIN_RULE})"),
        );
    }
}

/// A namespace as written (`""` is not one; callers skip an unset one).
fn namespace(path: &str, ns: &str, p: &mut Problems) {
    if !is_dns_label(ns) {
        p.add(
            path,
            format!("{ns:?} is not a valid namespace ({LABEL_RULE})"),
        );
    }
}

/// A service name (required).
pub(crate) fn service_name(path: &str, name: &str, p: &mut Problems) {
    if name.is_empty() {
        p.add(path, "missing");
    } else if !is_dns_label(name) {
        p.add(
            path,
            format!(
                "{name:?} is not a service name ({LABEL_RULE}; the namespace is a field of \
                 its own)"
            ),
        );
    }
}

fn wire_service_ref(path: &str, service: &v1::ServiceRef, p: &mut Problems) {
    service_name(&format!("{path}.name"), &service.name, p);
    if !service.namespace.is_empty() {
        namespace(&format!("{path}.namespace"), &service.namespace, p);
    }
    if service.port == 0 || service.port > u32::from(u16::MAX) {
        p.add(
            format!("{path}.port"),
            format!("{} is outside 1-65535", service.port),
        );
    }
}

fn done(p: Problems) -> Result<(), PolicyErrors> {
    if p.errors.is_empty() {
        Ok(())
    } else {
        Err(PolicyErrors(p.errors))
    }
}

/// Checks a wire service reference found at `path` and reads it (an empty
/// namespace is [`DEFAULT_NAMESPACE`]).
pub fn check_service_ref(path: &str, service: &v1::ServiceRef) -> Result<ServiceKey, PolicyErrors> {
    let mut p = Problems::default();
    wire_service_ref(path, service, &mut p);
    done(p)?;
    let namespace = if service.namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        &service.namespace
    };
    Ok(ServiceKey {
        name: service.name.clone(),
        namespace: namespace.to_owned(),
        port: u16::try_from(service.port).unwrap_or_default(),
    })
}

/// Checks the names in a Discovery hello: its own service and namespace
/// (both optional) and every subscription.
pub fn check_hello(hello: &v1::Hello) -> Result<(), PolicyErrors> {
    let mut p = Problems::default();
    if !hello.service.is_empty() {
        service_name("hello.service", &hello.service, &mut p);
    }
    if !hello.namespace.is_empty() {
        namespace("hello.namespace", &hello.namespace, &mut p);
    }
    for (i, service) in hello.subscriptions.iter().enumerate() {
        wire_service_ref(&format!("hello.subscriptions[{i}]"), service, &mut p);
    }
    done(p)
}

/// Checks the names of a wire document reference (`Get`, `Delete`): the
/// name is required, an empty namespace means [`DEFAULT_NAMESPACE`].
pub fn check_document_ref(reference: &v1::DocumentRef) -> Result<(), PolicyErrors> {
    let mut p = Problems::default();
    object_name("ref.name", &reference.name, &mut p);
    if !reference.namespace.is_empty() {
        namespace("ref.namespace", &reference.namespace, &mut p);
    }
    done(p)
}

#[cfg(test)]
mod tests;
