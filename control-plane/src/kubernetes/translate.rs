//! Kubernetes objects → Levee's documents: pure functions, no I/O.
//!
//! - A `ResiliencePolicy` custom resource (read as a `DynamicObject`) becomes
//!   the same [`ResiliencePolicy`] `leveectl apply` stores, parsed and
//!   validated by `levee-proto`'s parser (so the status message is the one
//!   `leveectl validate` prints), or a validation outcome saying why not.
//! - A Service and its EndpointSlices become one [`ServiceEndpoints`] per
//!   TCP service port (the registry's static endpoints), carrying the
//!   Service's cluster IPs as its `virtualIPs` (discovery by address) and the
//!   port's `appProtocol` when Levee knows the spelling.
//! - With pods watched, the identity expected at each endpoint backed by a
//!   meshed pod (which pods, and the join: [`super::pods`]).
//!
//! Which endpoints are used, per service port (what kube-proxy does for
//! traffic): every endpoint whose `ready` condition is true (absent counts as
//! true, as the API says); if there is none, the endpoints that are
//! `serving` and `terminating` (a rollout's last pods still draining), so a
//! service whose pods all terminate keeps serving until they are gone.
//! Not-ready, not-serving endpoints are never used.
//!
//! Ports: a Service port is matched to each slice's port of the same name
//! (the EndpointSlice controller names slice ports after the Service's ports;
//! an unnamed single port is `""` on both), and that slice's number is used
//! for that slice's addresses. A named `targetPort` (`http-web`) can
//! therefore resolve to different numbers in different slices.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use levee_proto::policy::{
    API_VERSION, AppProtocol, Document, EndpointsSpec, FieldError, KIND_ENDPOINTS, KIND_POLICY,
    ObjectMeta, ResiliencePolicy, ServiceEndpoints, SpiffeId, parse_documents,
};
use serde_json::{Value, json};

use super::pods::{PodIdentities, endpoint_identities};
use crate::store::DocKey;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `(namespace, name)` of a Kubernetes object.
pub type ObjectName = (String, String);

/// What one policy object's validation gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `metadata.generation` the verdict is about.
    pub generation: i64,
    /// `Ok(())`: accepted; `Err(message)`: the field-path messages, `; `-joined.
    pub outcome: Result<(), String>,
}

/// Everything the cluster says, in Levee's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translated {
    /// Accepted policies and per-port endpoints, with the revision the
    /// registry reports (`metadata.generation` for policies: it does not move
    /// on status writes, and every replica sees the same number).
    pub docs: BTreeMap<DocKey, (u64, Document)>,
    /// Every policy object's verdict (accepted or not).
    pub verdicts: BTreeMap<ObjectName, Verdict>,
    /// Each Service's cluster IPs (both families on a dual-stack Service).
    pub virtual_ips: BTreeMap<ObjectName, Vec<IpAddr>>,
    /// The identity expected at each endpoint IP backed by a meshed pod
    /// (`None`: pods are not watched, identities are off).
    pub identities: Option<BTreeMap<IpAddr, SpiffeId>>,
}

/// Translates the whole cluster state; with `pods`, the identities
/// expected at meshed pods' endpoints too.
pub fn translate<'a>(
    policies: impl IntoIterator<Item = &'a DynamicObject>,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    pods: Option<&PodIdentities>,
) -> Translated {
    let mut out = Translated::default();
    add_policies(&mut out, policies);
    let slices: Vec<&EndpointSlice> = slices.into_iter().collect();
    out.identities = pods.map(|pods| endpoint_identities(slices.iter().copied(), pods));
    let mut by_service: BTreeMap<ObjectName, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        let (Some(ns), Some(service)) = (
            slice.metadata.namespace.as_ref(),
            labels.and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) else {
            continue;
        };
        by_service
            .entry((ns.clone(), service.clone()))
            .or_default()
            .push(slice);
    }
    for service in services {
        let (Some(ns), Some(name)) = (&service.metadata.namespace, &service.metadata.name) else {
            continue;
        };
        let key = (ns.clone(), name.clone());
        let ips = cluster_ips(service);
        if !ips.is_empty() {
            out.virtual_ips.insert(key.clone(), ips.clone());
        }
        let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
        let protocols = app_protocols(service);
        for (port, addresses) in service_endpoints(service, slices) {
            let doc = ServiceEndpoints {
                metadata: ObjectMeta {
                    name: format!("{name}-{port}"),
                    namespace: Some(ns.clone()),
                },
                spec: EndpointsSpec {
                    service: name.clone(),
                    port,
                    addresses,
                    // Discovery by address: the cluster IPs are the
                    // service's virtual IPs on every one of its ports.
                    virtual_ips: ips.clone(),
                    app_protocol: protocols.get(&port).copied(),
                    // Per pod, not per port: `Translated::identities`.
                    identity: None,
                },
            };
            let key = DocKey::new(KIND_ENDPOINTS, ns, &doc.metadata.name);
            out.docs.insert(key, (0, Document::Endpoints(doc)));
        }
    }
    out
}

/// Each TCP port's `appProtocol` that Levee knows (`http`,
/// `kubernetes.io/h2c`, ...); an unknown spelling is left out, so the proxy
/// learns the protocol instead.
fn app_protocols(service: &Service) -> BTreeMap<u16, AppProtocol> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let number = u16::try_from(p.port).ok()?;
            let protocol = p.app_protocol.as_deref()?.parse().ok()?;
            Some((number, protocol))
        })
        .collect()
}

/// Parses every policy; among valid ones with the same target the oldest
/// (creation time, then name) wins and the others are refused.
fn add_policies<'a>(out: &mut Translated, policies: impl IntoIterator<Item = &'a DynamicObject>) {
    let mut valid: Vec<(String, ObjectName, i64, ResiliencePolicy)> = Vec::new();
    for object in policies {
        let (Some(ns), Some(name)) = (&object.metadata.namespace, &object.metadata.name) else {
            continue;
        };
        let generation = object.metadata.generation.unwrap_or(0);
        let key = (ns.clone(), name.clone());
        match policy(object) {
            Ok(p) => {
                let created = object
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default();
                valid.push((created, key, generation, p));
            }
            Err(message) => {
                out.verdicts.insert(
                    key,
                    Verdict {
                        generation,
                        outcome: Err(message),
                    },
                );
            }
        }
    }
    valid.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut owners: BTreeMap<String, ObjectName> = BTreeMap::new();
    for (_, key, generation, p) in valid {
        let target = p.target(&key.0).to_string();
        let outcome = match owners.get(&target) {
            Some(owner) => Err(format!(
                "spec.target: {target} is already the target of {KIND_POLICY} {}/{}",
                owner.0, owner.1
            )),
            None => {
                owners.insert(target, key.clone());
                let revision = u64::try_from(generation).unwrap_or(0);
                let doc_key = DocKey::new(KIND_POLICY, &key.0, &key.1);
                out.docs.insert(doc_key, (revision, Document::Policy(p)));
                Ok(())
            }
        };
        out.verdicts.insert(
            key,
            Verdict {
                generation,
                outcome,
            },
        );
    }
}

/// One custom resource as a validated policy, or the validator's messages
/// (`path: message`, `; `-joined).
pub fn policy(object: &DynamicObject) -> Result<ResiliencePolicy, String> {
    let mut spec = object.data.get("spec").cloned().unwrap_or(Value::Null);
    yaml11_on_key(&mut spec);
    let document = json!({
        "apiVersion": API_VERSION,
        "kind": KIND_POLICY,
        "metadata": {
            "name": object.metadata.name.clone().unwrap_or_default(),
            "namespace": object.metadata.namespace.clone().unwrap_or_default(),
        },
        "spec": spec,
    });
    // JSON is YAML: the same parser (and messages) as `leveectl validate`.
    match parse_documents(&document.to_string()) {
        Ok(mut docs) => match docs.pop() {
            Some(Document::Policy(p)) if docs.is_empty() => Ok(p),
            _ => Err("not one ResiliencePolicy".to_owned()),
        },
        Err(errors) => Err(errors
            .iter()
            .map(field_message)
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

fn field_message(e: &FieldError) -> String {
    if e.path.is_empty() {
        e.message.clone()
    } else {
        format!("{}: {}", e.path, e.message)
    }
}

/// `kubectl` reads manifests as YAML 1.1, where the key `on` is the boolean
/// `true`: `retry: {on: [...]}` reaches the API server as `retry: {"true":
/// [...]}` (every recorded policy shows it). A `"true"` key of a `retry`
/// object (service level and per route) is read as `on` when `on` is absent.
fn yaml11_on_key(spec: &mut Value) {
    let Some(outbound) = spec.get_mut("outbound") else {
        return;
    };
    let mut retries: Vec<&mut Value> = Vec::new();
    if let Some(Value::Array(routes)) = outbound.get_mut("routes") {
        retries.extend(routes.iter_mut().filter_map(|r| r.get_mut("retry")));
    }
    for retry in retries {
        rename_true(retry);
    }
    if let Some(retry) = outbound.get_mut("retry") {
        rename_true(retry);
    }
}

fn rename_true(retry: &mut Value) {
    if let Value::Object(map) = retry
        && !map.contains_key("on")
        && let Some(on) = map.remove("true")
    {
        map.insert("on".to_owned(), on);
    }
}

/// A Service's cluster IPs (`spec.clusterIPs`, else `spec.clusterIP`);
/// none for a headless (`None`) or ExternalName Service.
pub fn cluster_ips(service: &Service) -> Vec<IpAddr> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let listed = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.clone(),
        _ => spec.cluster_ip.iter().cloned().collect(),
    };
    listed.iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// The endpoints of each TCP port of `service`, from its slices (see the
/// module docs for which endpoints and which port numbers).
pub fn service_endpoints(
    service: &Service,
    slices: &[&EndpointSlice],
) -> BTreeMap<u16, Vec<SocketAddr>> {
    let mut out = BTreeMap::new();
    let Some(ports) = service.spec.as_ref().and_then(|s| s.ports.as_ref()) else {
        return out;
    };
    for port in ports {
        if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
            continue;
        }
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        let name = port.name.as_deref().unwrap_or("");
        let mut ready = BTreeSet::new();
        let mut draining = BTreeSet::new();
        for slice in slices {
            let Some(target) = slice_port(slice, name) else {
                continue;
            };
            for endpoint in slice.endpoints.iter().flatten() {
                let conditions = endpoint.conditions.as_ref();
                let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
                let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
                let set = if is_ready {
                    &mut ready
                } else if serving && terminating {
                    &mut draining
                } else {
                    continue;
                };
                set.extend(
                    endpoint
                        .addresses
                        .iter()
                        .filter_map(|a| a.parse::<IpAddr>().ok())
                        .map(|ip| SocketAddr::new(ip, target)),
                );
            }
        }
        let chosen = if ready.is_empty() { draining } else { ready };
        out.insert(number, chosen.into_iter().collect());
    }
    out
}

/// The number of the slice's port named `name` (TCP only).
fn slice_port(slice: &EndpointSlice, name: &str) -> Option<u16> {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return None;
    }
    slice
        .ports
        .as_ref()?
        .iter()
        .find(|p| {
            p.name.as_deref().unwrap_or("") == name
                && p.protocol.as_deref().is_none_or(|p| p == "TCP")
        })
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
}
