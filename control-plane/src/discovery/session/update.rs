//! A registry snapshot on the wire: the `ServiceUpdate` a proxy is sent.

use std::net::SocketAddr;

use levee_proto::v1;

use super::super::registry::ServiceSnapshot;

/// The `ServiceUpdate` a proxy is sent for `snapshot`.
pub fn to_update(snapshot: &ServiceSnapshot, nonce: u64) -> v1::ServiceUpdate {
    v1::ServiceUpdate {
        service: Some(v1::ServiceRef::from(&snapshot.key)),
        version: snapshot.version.clone(),
        nonce: nonce.to_string(),
        policy_revision: snapshot.policy_revision,
        policy: snapshot.policy.as_deref().map(v1::ResiliencePolicy::from),
        endpoints: snapshot
            .endpoints
            .iter()
            .map(SocketAddr::to_string)
            .collect(),
        app_protocol: snapshot
            .app_protocol
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default(),
        virtual_ips: snapshot
            .virtual_ips
            .iter()
            .map(ToString::to_string)
            .collect(),
        // Expected endpoint identities: static documents' `spec.identity`,
        // registered proxies' certificates, Kubernetes pods' service accounts.
        identities: snapshot
            .identities
            .iter()
            .map(|(addr, id)| (addr.to_string(), id.as_str().to_owned()))
            .collect(),
    }
}
