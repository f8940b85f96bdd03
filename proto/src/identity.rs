//! Workload identities as both sides name them: the SPIFFE ID
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>` that the
//! control plane's CA puts in a certificate's only URI SAN (docs/identity.md).

use std::fmt;

/// The default trust domain of the CA and of proxies (`--trust-domain`,
/// `--identity-trust-domain`).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A parsed, checked SPIFFE ID of a workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// e.g. `cluster.local`.
    pub trust_domain: String,
    /// Kubernetes namespace (or the `--namespace` of a VM workload).
    pub namespace: String,
    /// Kubernetes service account (or the join token's service account).
    pub service_account: String,
}

impl SpiffeId {
    /// A SPIFFE ID from its parts; `Err` says which part is not allowed.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, String> {
        check_trust_domain(trust_domain)?;
        check_segment("namespace", namespace)?;
        check_segment("service account", service_account)?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>` (exactly that shape).
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| format!("{uri:?} is not a spiffe:// URI"))?;
        let mut parts = rest.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) => {
                SpiffeId::new(td, ns, sa).map_err(|e| format!("{uri:?}: {e}"))
            }
            _ => Err(format!(
                "{uri:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
            )),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// SPIFFE trust domains: lowercase letters, digits, `.`, `-`, `_`.
pub fn check_trust_domain(td: &str) -> Result<(), String> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "trust domain {td:?} must be 1-255 characters of a-z, 0-9, '.', '-', '_'"
        ))
    }
}

/// Namespaces and service accounts: Kubernetes names (a-z, 0-9, `-`, `.`).
fn check_segment(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        && !value.starts_with(['-', '.'])
        && !value.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {value:?} must be a Kubernetes name (a-z, 0-9, '-', '.'; 1-253 characters)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_shapes() {
        let id = SpiffeId::new("cluster.local", "shop", "payments").expect("valid");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/payments");
        assert_eq!(SpiffeId::parse(&id.to_string()), Ok(id));
        for bad in [
            "https://cluster.local/ns/shop/sa/payments",
            "spiffe://cluster.local/ns/shop",
            "spiffe://cluster.local/ns/shop/sa/payments/extra",
            "spiffe://cluster.local/sa/shop/ns/payments",
            "spiffe://Cluster.Local/ns/shop/sa/payments",
            "spiffe://cluster.local/ns/Shop/sa/payments",
            "spiffe://cluster.local/ns//sa/payments",
            "spiffe:///ns/shop/sa/payments",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }
}
