//! One service port's snapshot computed from the registry's state: the
//! selected policy, the endpoints (static and registered), the declared
//! protocol and virtual IPs, and the identity expected at each endpoint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use levee_proto::policy::{DEFAULT_NAMESPACE, ServiceKey, SpiffeId, select_policy};

use super::version::version;
use super::{Registration, ServiceSnapshot, State};

impl State {
    /// The snapshot of `key` now.
    pub(super) fn snapshot(&self, key: &ServiceKey) -> ServiceSnapshot {
        let selected = select_policy(
            self.policies.values().map(|(_, p)| p.as_ref()),
            key,
            DEFAULT_NAMESPACE,
        );
        let (policy_revision, policy) = selected
            .and_then(|chosen| {
                self.policies
                    .values()
                    .find(|(_, p)| std::ptr::eq(p.as_ref(), chosen))
                    .map(|(rev, p)| (*rev, Some(p.clone())))
            })
            .unwrap_or((0, None));
        let registered: Vec<&Registration> = self
            .registrations
            .get(&(key.namespace.clone(), key.name.clone()))
            .into_iter()
            .flat_map(BTreeMap::values)
            .filter(|r| r.port.is_none_or(|p| p == key.port))
            .collect();
        let mut endpoints: Vec<SocketAddr> = self
            .static_endpoints
            .values()
            .filter(|e| e.service_key(DEFAULT_NAMESPACE) == *key)
            .flat_map(|e| e.spec.addresses.iter().copied())
            .chain(registered.iter().map(|r| r.addr))
            .collect();
        endpoints.sort();
        endpoints.dedup();
        // One ServiceEndpoints document per service port (check_batch).
        let declared = self
            .static_endpoints
            .values()
            .find(|e| e.service_key(DEFAULT_NAMESPACE) == *key);
        let app_protocol = declared.and_then(|e| e.spec.app_protocol);
        let mut virtual_ips = declared
            .map(|e| e.spec.virtual_ips.clone())
            .unwrap_or_default();
        virtual_ips.sort();
        virtual_ips.dedup();
        let mut identities: BTreeMap<SocketAddr, SpiffeId> = declared
            .and_then(|e| {
                let id = e.spec.identity.as_ref()?;
                Some(e.spec.addresses.iter().map(|a| (*a, id.clone())).collect())
            })
            .unwrap_or_default();
        // The workload at an endpoint's IP (Kubernetes: a meshed pod).
        for addr in &endpoints {
            if let Some(id) = self.workload_identities.get(&addr.ip()) {
                identities.insert(*addr, id.clone());
            }
        }
        // A registered proxy proved its identity (the certificate TLS
        // verified): it wins over a static declaration of the same address.
        // Registrations are in stream order, so a later stream at the same
        // address wins over an earlier one still in its grace period.
        for r in &registered {
            if let Some(id) = &r.identity {
                identities.insert(r.addr, id.clone());
            }
        }
        let version = version(
            policy_revision,
            policy.as_deref(),
            &endpoints,
            (app_protocol, &virtual_ips, &identities),
        );
        ServiceSnapshot {
            key: key.clone(),
            version,
            policy_revision,
            policy,
            endpoints,
            app_protocol,
            virtual_ips,
            identities,
            changed_at: Instant::now(),
        }
    }
}
