//! Workload identities: the SPIFFE ID
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>` that the
//! control plane's CA puts in a certificate's only URI SAN (docs/identity.md)
//! is a [`crate::policy::SpiffeId`], Levee's one SPIFFE ID type
//! ([`crate::policy::SpiffeId::workload`] builds one from its parts).

/// The default trust domain of the CA and of proxies (`--trust-domain`,
/// `--identity-trust-domain`).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
