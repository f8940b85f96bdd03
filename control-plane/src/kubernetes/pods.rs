//! Pods, as far as expected identities need them: which pods are meshed,
//! the SPIFFE ID their sidecar holds, and so the identity a caller must
//! expect at each EndpointSlice endpoint.
//!
//! A pod is **meshed** when the injector patched it: the annotation
//! `levee.dev/injected: "true"` (the injector's own marker, set in the same
//! patch as the containers) *and* a `levee-proxy` container (a native
//! sidecar in `initContainers`, or in `containers`). A hand-set annotation
//! without the sidecar is not meshed: nothing there could answer mTLS. Its
//! sidecar proves, by TokenReview, the pod's service account, so it holds
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccountName>`.
//!
//! An endpoint is joined to its pod through `targetRef` (kind `Pod`; the
//! uid must match when both are known, so a recreated pod's stale endpoint
//! is not taken for the new one), else by address (a pod's `status.podIPs`,
//! host-network pods excepted: their IP is the node's). An endpoint whose
//! pod is unknown, unmeshed, or not a pod gets no identity, and callers
//! speak plaintext to it. Two pods claiming one IP: no identity either.
//!
//! The reflector keeps each pod stripped ([`strip`]) to what this needs, so
//! a big cluster's pods cost a few hundred bytes each.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::api::ObjectMeta;
use levee_proto::policy::SpiffeId;

use super::translate::ObjectName;
use crate::webhook::inject::annotations::INJECTED;
use crate::webhook::inject::sidecar::PROXY_NAME;

/// Keeps only name, namespace, uid, resourceVersion, the injector's
/// annotation, `serviceAccountName`, `hostNetwork`, the sidecar's name and
/// the pod IPs (the watcher's modify hook, before the object is stored).
pub fn strip(pod: &mut Pod) {
    let meta = std::mem::take(&mut pod.metadata);
    let marker = meta
        .annotations
        .and_then(|mut a| a.remove(INJECTED))
        .map(|v| BTreeMap::from([(INJECTED.to_owned(), v)]));
    pod.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        annotations: marker,
        ..ObjectMeta::default()
    };
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        service_account_name: spec.service_account_name,
        host_network: spec.host_network,
        init_containers: spec.init_containers.map(sidecar_only),
        containers: sidecar_only(spec.containers),
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        ..PodStatus::default()
    });
}

/// The `levee-proxy` container of `containers`, by name only.
fn sidecar_only(containers: Vec<Container>) -> Vec<Container> {
    containers
        .into_iter()
        .filter(|c| c.name == PROXY_NAME)
        .map(|c| Container {
            name: c.name,
            ..Container::default()
        })
        .collect()
}

/// Whether the injector patched `pod` (see the module docs).
pub fn meshed(pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECTED))
        .is_some_and(|v| v == "true");
    let sidecar = pod.spec.as_ref().is_some_and(|spec| {
        let init = spec.init_containers.iter().flatten();
        init.chain(&spec.containers).any(|c| c.name == PROXY_NAME)
    });
    annotated && sidecar
}

/// A digest of what the translation reads from `pod`: a pod event that
/// leaves it unchanged (status churn: conditions, container states) does
/// not wake the sync loop.
pub fn digest(pod: &Pod) -> u64 {
    let mut hasher = DefaultHasher::new();
    pod.metadata.uid.hash(&mut hasher);
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.service_account_name.as_ref())
        .hash(&mut hasher);
    spec.and_then(|s| s.host_network).hash(&mut hasher);
    meshed(pod).hash(&mut hasher);
    for ip in pod_ips(pod) {
        ip.hash(&mut hasher);
    }
    hasher.finish()
}

/// `status.podIPs`, else `status.podIP`.
fn pod_ips(pod: &Pod) -> BTreeSet<IpAddr> {
    let Some(status) = &pod.status else {
        return BTreeSet::new();
    };
    let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    listed
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// What one pod means for identities.
struct Known {
    uid: Option<String>,
    /// `None`: not meshed.
    identity: Option<SpiffeId>,
}

/// Every pod's expected identity (`None`: not meshed), by name and by IP,
/// for joining endpoints to pods.
#[derive(Default)]
pub struct PodIdentities {
    by_name: HashMap<ObjectName, Known>,
    /// `None`: not meshed, or several pods claim the IP.
    by_ip: HashMap<IpAddr, Option<SpiffeId>>,
}

impl PodIdentities {
    /// Indexes `pods`; meshed ones expect `spiffe://<trust_domain>/ns/<ns>/sa/<sa>`.
    pub fn new<'a>(trust_domain: &str, pods: impl IntoIterator<Item = &'a Pod>) -> Self {
        let mut out = PodIdentities::default();
        for pod in pods {
            let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
                continue;
            };
            let identity = meshed(pod)
                .then(|| spiffe_id(trust_domain, ns, pod))
                .flatten();
            let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
            if !host_network {
                for ip in pod_ips(pod) {
                    out.by_ip
                        .entry(ip)
                        .and_modify(|seen| *seen = None)
                        .or_insert_with(|| identity.clone());
                }
            }
            let known = Known {
                uid: pod.metadata.uid.clone(),
                identity,
            };
            out.by_name.insert((ns.clone(), name.clone()), known);
        }
        out
    }

    /// The identity expected at `ip`, an address of `endpoint` in a slice
    /// of `namespace`.
    fn identity_of(&self, namespace: &str, endpoint: &Endpoint, ip: IpAddr) -> Option<&SpiffeId> {
        let Some(target) = &endpoint.target_ref else {
            return self.by_ip.get(&ip)?.as_ref();
        };
        if target.kind.as_deref() != Some("Pod") {
            return None;
        }
        let ns = target.namespace.as_deref().unwrap_or(namespace);
        let known = self.by_name.get(&(ns.to_owned(), target.name.clone()?))?;
        if let (Some(want), Some(have)) = (&target.uid, &known.uid)
            && want != have
        {
            return None;
        }
        known.identity.as_ref()
    }
}

/// The pod's SPIFFE ID (`None` if its names do not make one).
fn spiffe_id(trust_domain: &str, namespace: &str, pod: &Pod) -> Option<SpiffeId> {
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|sa| !sa.is_empty())
        .unwrap_or("default");
    SpiffeId::workload(trust_domain, namespace, account).ok()
}

/// The identity expected at each IP of the slices' endpoints (every
/// condition: an identity is about who answers, not whether it is used).
pub fn endpoint_identities<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    pods: &PodIdentities,
) -> BTreeMap<IpAddr, SpiffeId> {
    let mut out: BTreeMap<IpAddr, SpiffeId> = BTreeMap::new();
    let mut conflicts = BTreeSet::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
        for endpoint in slice.endpoints.iter().flatten() {
            for ip in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                let Some(id) = pods.identity_of(namespace, endpoint, ip) else {
                    continue;
                };
                match out.get(&ip) {
                    Some(seen) if seen != id => {
                        conflicts.insert(ip);
                    }
                    Some(_) => {}
                    None => {
                        out.insert(ip, id.clone());
                    }
                }
            }
        }
    }
    out.retain(|ip, _| !conflicts.contains(ip));
    out
}
