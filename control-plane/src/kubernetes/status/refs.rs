//! The `ResolvedRefs` condition: does the policy's target exist?
//!
//! `True`/`ResolvedRefs` when the target Service exists in the policy's
//! namespace and, if the policy names a port, that port is one of the
//! Service's TCP `port`s: the number callers dial, and the one discovery
//! keys services by (`translate` makes one service key per Service port), so
//! a policy on any other number is served to no caller. A `targetPort`
//! number does not count. `False`/`BackendNotFound` when there is no such
//! Service; `False`/`PortNotFound` when it has no such port, the message
//! saying when the number is a `targetPort` and which Service port to
//! write instead. Either way the policy stays applied, as in the Gateway
//! API: it takes effect when the Service (port) appears.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;

/// What `ResolvedRefs` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The condition's status: the target resolved.
    pub resolved: bool,
    /// `ResolvedRefs`, `BackendNotFound` or `PortNotFound`.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

/// The policy's target (raw `spec.target`, so a refused policy gets it
/// too) looked up in the Services cache; `None` without a readable target.
pub fn resolve(object: &DynamicObject, services: &Store<Service>) -> Option<Resolution> {
    let ns = object.metadata.namespace.as_deref()?;
    let target = object.data.pointer("/spec/target")?;
    let name = target.get("service")?.as_str()?;
    let port = target.get("port").and_then(Value::as_u64);
    let service = services.get(&ObjectRef::new(name).within(ns));
    Some(resolution(ns, name, port, service.as_deref()))
}

/// `ResolvedRefs` for target `ns/name` (`port`) given the Service, if any.
pub fn resolution(
    ns: &str,
    name: &str,
    port: Option<u64>,
    service: Option<&Service>,
) -> Resolution {
    let Some(service) = service else {
        return Resolution {
            resolved: false,
            reason: "BackendNotFound",
            message: format!("Service {ns}/{name} does not exist; the policy applies once it does"),
        };
    };
    let ports: Vec<_> = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .collect();
    let Some(port) = port else {
        return Resolution {
            resolved: true,
            reason: "ResolvedRefs",
            message: format!("Service {ns}/{name} exists; the policy applies to all its ports"),
        };
    };
    if ports
        .iter()
        .any(|p| u64::try_from(p.port).ok() == Some(port))
    {
        return Resolution {
            resolved: true,
            reason: "ResolvedRefs",
            message: format!("Service {ns}/{name} has port {port}"),
        };
    }
    let listed: Vec<String> = ports.iter().map(|p| p.port.to_string()).collect();
    let listed = if listed.is_empty() {
        "none".to_owned()
    } else {
        listed.join(", ")
    };
    let mut message = format!("Service {ns}/{name} has no TCP port {port} (its ports: {listed})");
    let as_target = ports.iter().find(|p| match &p.target_port {
        Some(IntOrString::Int(n)) => u64::try_from(*n).ok() == Some(port),
        _ => false,
    });
    if let Some(p) = as_target {
        message.push_str(&format!(
            "; {port} is the targetPort of Service port {}: a policy targets the port \
             callers use, write port {}",
            p.port, p.port
        ));
    }
    Resolution {
        resolved: false,
        reason: "PortNotFound",
        message,
    }
}
