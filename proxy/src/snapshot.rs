//! [`Snapshot`]: one immutable view of everything policy-related (policies,
//! static endpoints, declared protocols, expected identities), built from
//! documents or by the watch task, and swapped as a whole by
//! `state::Shared::install`. A leaf: it depends on levee-proto only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use levee_proto::policy::{
    AppProtocol, Document, PolicyErrors, PolicyIndex, ResiliencePolicy, ServiceKey, SpiffeId,
    check_batch,
};

/// One immutable view of everything policy-related, swapped as a whole.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Local version, bumped on every accepted update (0 = nothing loaded yet).
    pub version: u64,
    /// Policies by target; [`Snapshot::policy_for`] picks the one for a call.
    pub policies: PolicyIndex<Arc<ResiliencePolicy>>,
    /// Static endpoints by service (from `ServiceEndpoints` documents).
    pub endpoints: HashMap<ServiceKey, Arc<[SocketAddr]>>,
    /// Declared protocols by service port (`appProtocol`); a port without
    /// one has its upstream protocol learned.
    pub app_protocols: HashMap<ServiceKey, AppProtocol>,
    /// The SPIFFE ID expected at an endpoint address (`ServiceEndpoints`
    /// `identity`, Discovery `identities`): the forwarder speaks mTLS to
    /// it and checks the server is that workload. One per address: an
    /// address is one workload's listener whichever service lists it.
    pub identities: HashMap<SocketAddr, SpiffeId>,
    /// Every policy in source order, for `/config`.
    pub documents: Vec<Arc<ResiliencePolicy>>,
    /// Where the snapshot came from, e.g. `file:/etc/levee/policy.yaml`.
    pub source: String,
    /// When it was installed (`None` until the first install).
    pub loaded_at: Option<SystemTime>,
    /// For `levee_policy_version`: the control plane's policy revision
    /// (`None`: the local `version` is shown).
    pub policy_revision: Option<u64>,
}

impl Snapshot {
    /// Builds a snapshot from parsed documents. Namespaces default to
    /// `namespace`. A batch with two documents of a kind for one target (or
    /// one object twice) is refused, as [`check_batch`] reports it.
    pub fn from_documents(
        documents: Vec<Document>,
        namespace: &str,
        source: impl Into<String>,
    ) -> Result<Snapshot, PolicyErrors> {
        check_batch(&documents, namespace)?;
        let mut snapshot = Snapshot {
            source: source.into(),
            ..Snapshot::default()
        };
        for document in documents {
            match document {
                Document::Policy(policy) => {
                    let policy = Arc::new(policy);
                    snapshot
                        .policies
                        .insert(policy.target(namespace), policy.clone());
                    snapshot.documents.push(policy);
                }
                Document::Endpoints(endpoints) => {
                    let key = endpoints.service_key(namespace);
                    if let Some(app_protocol) = endpoints.spec.app_protocol {
                        snapshot.app_protocols.insert(key.clone(), app_protocol);
                    }
                    if let Some(id) = &endpoints.spec.identity {
                        for addr in &endpoints.spec.addresses {
                            snapshot.identities.insert(*addr, id.clone());
                        }
                    }
                    snapshot
                        .endpoints
                        .insert(key, endpoints.spec.addresses.into());
                }
            }
        }
        Ok(snapshot)
    }

    /// The policy for calls to `service`: one naming its port, else one for
    /// every port of the service, else none (defaults apply).
    pub fn policy_for(&self, service: &ServiceKey) -> Option<Arc<ResiliencePolicy>> {
        self.policies.get(service).cloned()
    }
}

#[cfg(test)]
mod tests {
    use levee_proto::policy::parse_documents;

    use super::*;

    fn policy(name: &str, target: &str) -> Vec<Document> {
        let yaml = format!(
            "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec: {{target: {target}, outbound: {{timeouts: {{request: 2s}}}}}}\n"
        );
        parse_documents(&yaml).expect("valid policy")
    }

    #[test]
    fn a_policy_naming_the_port_beats_one_for_every_port() {
        let mut documents = policy("any", "{service: payments}");
        documents.extend(policy("exact", "{service: payments, port: 8080}"));
        let snapshot = Snapshot::from_documents(documents, "default", "test").expect("snapshot");

        let exact = snapshot
            .policy_for(&ServiceKey::new("payments", "shop", 8080))
            .expect("exact");
        assert_eq!(exact.spec.target.port, Some(8080));
        let any = snapshot
            .policy_for(&ServiceKey::new("payments", "shop", 9090))
            .expect("every port");
        assert_eq!(any.spec.target.port, None);
        assert!(
            snapshot
                .policy_for(&ServiceKey::new("payments", "default", 8080))
                .is_none()
        );
        assert!(
            snapshot
                .policy_for(&ServiceKey::new("orders", "shop", 8080))
                .is_none()
        );
        assert_eq!(snapshot.documents.len(), 2);
    }

    #[test]
    fn documents_that_bypass_parsing_are_still_checked_for_duplicates() {
        // Each file alone is valid; together they hold two policies for one port.
        let mut documents = policy("first", "{service: payments, port: 8080}");
        documents.extend(policy("second", "{service: payments, port: 8080}"));
        let errors = Snapshot::from_documents(documents, "default", "test").expect_err("duplicate");
        let message = errors.to_string();
        assert!(
            message.contains(
                "document 2 (ResiliencePolicy shop/second): spec.target: document 1 \
                 (ResiliencePolicy shop/first) already is the ResiliencePolicy of \
                 payments.shop:8080"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_target_without_a_namespace_is_in_the_proxys_namespace() {
        // One file: no namespace, then `namespace: default`, same service
        // port but other names. In a proxy of namespace `default` that is
        // one target twice; in a proxy of namespace `shop`, two services.
        let yaml = "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
                    metadata: {name: a}\nspec: {target: {service: payments, port: 8080}}\n\
                    ---\n\
                    apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
                    metadata: {name: b, namespace: default}\n\
                    spec: {target: {service: payments, port: 8080}}\n";
        let documents = parse_documents(yaml).expect("each document is valid");
        let errors = Snapshot::from_documents(documents.clone(), "default", "test")
            .expect_err("one target twice");
        assert!(
            errors.to_string().contains(
                "document 2 (ResiliencePolicy default/b): spec.target: document 1 \
                 (ResiliencePolicy a) already is the ResiliencePolicy of \
                 payments.default:8080"
            ),
            "{errors}"
        );
        let snapshot = Snapshot::from_documents(documents, "shop", "test").expect("two services");
        let in_shop = snapshot.policy_for(&ServiceKey::new("payments", "shop", 8080));
        assert_eq!(in_shop.map(|p| p.metadata.name.clone()), Some("a".into()));
        let in_default = snapshot.policy_for(&ServiceKey::new("payments", "default", 8080));
        assert_eq!(
            in_default.map(|p| p.metadata.name.clone()),
            Some("b".into())
        );
    }
}
