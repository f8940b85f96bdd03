//! The per-service state the control plane sent, and its conversion: a
//! `ServiceUpdate` is checked ([`Services::apply`]) and either refused with
//! a reason (the NACK) or stored; the whole set then becomes one
//! [`Snapshot`] ([`Services::snapshot`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use levee_proto::policy::{AppProtocol, ResiliencePolicy, ServiceKey, SpiffeId, TargetKey};
use levee_proto::v1 as pb;

use crate::snapshot::Snapshot;

/// What the proxy runs for one service port: the content of the last
/// `ServiceUpdate` it accepted (not to be confused with the resilience
/// layers' per-service runtime state).
#[derive(Clone, Debug, PartialEq)]
pub struct AcceptedUpdate {
    /// The control plane's version of this content (echoed in ACKs).
    pub version: String,
    /// Store revision of the policy (0: none).
    pub policy_revision: u64,
    /// The policy selected for this service port, if any.
    pub policy: Option<Arc<ResiliencePolicy>>,
    /// Endpoints; empty means "fall back to DNS".
    pub endpoints: Arc<[SocketAddr]>,
    /// The port's declared protocol (`None`: learned per endpoint).
    pub app_protocol: Option<AppProtocol>,

    /// The SPIFFE ID expected at each endpoint that has one (mTLS to it).
    pub identities: BTreeMap<SocketAddr, SpiffeId>,
}

/// What [`Services::apply`] did with an acceptable update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The proxy already runs this version.
    Unchanged,
    /// The service's state changed: build and install a new snapshot.
    Changed,
}

/// Why an update was refused: the NACK's reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// The service, when the update named a readable one.
    pub service: Option<ServiceKey>,
    pub reason: String,
}

/// Checks this proxy makes beyond the policy model's validation.
#[derive(Clone, Copy, Debug)]
pub struct LocalChecks {
    /// The proxy's own outbound listener: an endpoint there would loop.
    pub outbound: Option<SocketAddr>,
}

/// Every service the proxy has state for, by key.
#[derive(Clone, Debug, Default)]
pub struct Services {
    states: BTreeMap<ServiceKey, AcceptedUpdate>,
}

impl Services {
    pub fn get(&self, key: &ServiceKey) -> Option<&AcceptedUpdate> {
        self.states.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ServiceKey, &AcceptedUpdate)> {
        self.states.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    pub fn insert(&mut self, key: ServiceKey, state: AcceptedUpdate) {
        self.states.insert(key, state);
    }

    /// Forgets `key` (unsubscribed); returns whether it had state.
    pub fn remove(&mut self, key: &ServiceKey) -> bool {
        self.states.remove(key).is_some()
    }

    /// Checks `update` and, if acceptable, stores it. A refused update
    /// changes nothing (the last good state stays).
    pub fn apply(
        &mut self,
        update: &pb::ServiceUpdate,
        checks: LocalChecks,
    ) -> Result<(ServiceKey, Applied), Refusal> {
        let key = match update.service.as_ref().map(ServiceKey::try_from) {
            Some(Ok(key)) => key,
            Some(Err(reason)) => {
                return Err(Refusal {
                    service: None,
                    reason,
                });
            }
            None => {
                return Err(Refusal {
                    service: None,
                    reason: "the update names no service".into(),
                });
            }
        };
        if self
            .states
            .get(&key)
            .is_some_and(|s| !update.version.is_empty() && s.version == update.version)
        {
            return Ok((key, Applied::Unchanged));
        }
        match convert(update, &key, checks) {
            Ok(state) => {
                self.states.insert(key.clone(), state);
                Ok((key, Applied::Changed))
            }
            Err(reason) => Err(Refusal {
                service: Some(key),
                reason,
            }),
        }
    }

    /// The snapshot these states make: each service's policy under its
    /// exact key, its endpoints when it has any (else DNS applies).
    pub fn snapshot(&self, source: String) -> Snapshot {
        let mut snapshot = Snapshot {
            source,
            ..Snapshot::default()
        };
        // One entry per policy document in `/config`, even if it serves several ports.
        let mut documents = BTreeMap::new();
        let mut revision = 0;
        for (key, state) in &self.states {
            revision = revision.max(state.policy_revision);
            if let Some(policy) = &state.policy {
                snapshot
                    .policies
                    .insert(TargetKey::from(key.clone()), policy.clone());
                let name = (
                    policy.metadata.namespace_or(&key.namespace).to_owned(),
                    policy.metadata.name.clone(),
                    policy.spec.target.port,
                );
                documents.entry(name).or_insert_with(|| policy.clone());
            }
            if !state.endpoints.is_empty() {
                snapshot
                    .endpoints
                    .insert(key.clone(), state.endpoints.clone());
            }
            if let Some(app_protocol) = state.app_protocol {
                snapshot.app_protocols.insert(key.clone(), app_protocol);
            }
            for (addr, id) in &state.identities {
                snapshot.identities.insert(*addr, id.clone());
            }
        }
        snapshot.documents = documents.into_values().collect();
        snapshot.policy_revision = Some(revision);
        snapshot
    }
}

fn convert(
    update: &pb::ServiceUpdate,
    key: &ServiceKey,
    checks: LocalChecks,
) -> Result<AcceptedUpdate, String> {
    let policy = match &update.policy {
        Some(policy) => {
            let policy = ResiliencePolicy::try_from(policy.clone())
                .map_err(|errors| format!("policy for {key} is invalid: {errors}"))?;
            if !policy.target(&key.namespace).covers(key) {
                return Err(format!(
                    "policy {} targets {}, not {key}",
                    policy.metadata.qualified_name(),
                    policy.spec.target.service
                ));
            }
            Some(Arc::new(policy))
        }
        None => None,
    };
    let mut endpoints = Vec::with_capacity(update.endpoints.len());
    for text in &update.endpoints {
        let addr: SocketAddr = text
            .parse()
            .map_err(|_| format!("endpoint {text:?} of {key} is not an ip:port"))?;
        if checks
            .outbound
            .is_some_and(|own| crate::loops::own::reaches(addr, own))
        {
            return Err(format!(
                "endpoint {addr} of {key} is this proxy's own outbound listener (calls would loop)"
            ));
        }
        endpoints.push(addr);
    }
    // A spelling this proxy does not know (a newer control plane) is not
    // worth refusing the update for: the protocol is then learned.
    let app_protocol = match update.app_protocol.as_str() {
        "" => None,
        text => text
            .parse::<AppProtocol>()
            .inspect_err(|reason| tracing::warn!(service = %key, %reason, "ignoring appProtocol"))
            .ok(),
    };

    let mut identities = BTreeMap::new();
    for (text, id) in &update.identities {
        let addr: SocketAddr = text
            .parse()
            .map_err(|_| format!("identity key {text:?} of {key} is not an ip:port"))?;
        if !endpoints.contains(&addr) {
            return Err(format!(
                "identity for {addr}, which is not an endpoint of {key}"
            ));
        }
        let id = SpiffeId::parse(id).map_err(|why| format!("identity of {addr}: {why}"))?;
        identities.insert(addr, id);
    }
    Ok(AcceptedUpdate {
        version: update.version.clone(),
        policy_revision: update.policy_revision,
        policy,
        endpoints: endpoints.into(),
        app_protocol,
        identities,
    })
}

#[cfg(test)]
mod tests;
