//! The server name (SNI) a proxy sends when it originates mTLS, and how
//! the callee's proxy recognises one (docs/identity.md, "How a mesh
//! ClientHello is recognised").
//!
//! On Kubernetes a caller dials the callee pod's app port, and the
//! callee's iptables redirect the connection to its proxy: the proxy must
//! tell a peer proxy's ClientHello from the app's own TLS before any
//! handshake. The originating proxy names the expected identity as a DNS
//! name under a label pair no app uses, `identity.levee`:
//! `spiffe://<td>/ns/<ns>/sa/<sa>` becomes
//! `<sa>.<ns>.serviceaccount.identity.levee.<td>`; any other SPIFFE ID
//! `<hash>.spiffe.identity.levee.<td>`. The name only marks the hello: the
//! client still verifies the server's URI SAN against the expected SPIFFE
//! ID ([`super::verify`]), never the name, so the callee terminates every
//! mesh name (not only its own) and a caller that expected another
//! identity gets a clean identity mismatch instead of the app's bytes.

use std::hash::{Hash, Hasher};

use levee_proto::policy::SpiffeId;
use rustls::pki_types::{DnsName, ServerName};

/// The labels every mesh name carries, after the kind label.
const MARK: [&str; 2] = ["identity", "levee"];
/// The kind label of a name built from a Kubernetes-shaped SPIFFE ID.
const SERVICE_ACCOUNT: &str = "serviceaccount";
/// The kind label of a name built from a hash of any other SPIFFE ID.
const HASHED: &str = "spiffe";

/// The server name sent to an endpoint expected to be `expected`.
pub fn for_identity(expected: &SpiffeId) -> ServerName<'static> {
    let td = expected.trust_domain();
    let readable = match (expected.namespace(), expected.service_account()) {
        (Some(ns), Some(sa)) => dns(format!("{sa}.{ns}.{SERVICE_ACCOUNT}.identity.levee.{td}")),
        _ => None,
    };
    readable.unwrap_or_else(|| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        expected.as_str().hash(&mut hasher);
        let hash = hasher.finish();
        dns(format!("{hash:016x}.{HASHED}.identity.levee.{td}")).unwrap_or_else(|| {
            // A trust domain that is no DNS name: hex and fixed labels are.
            let name = format!("{hash:016x}.{HASHED}.identity.levee");
            ServerName::DnsName(DnsName::try_from(name).expect("hex and fixed labels"))
        })
    })
}

/// `text` as a server name, when it is a valid DNS name.
fn dns(text: String) -> Option<ServerName<'static>> {
    DnsName::try_from(text).ok().map(ServerName::DnsName)
}

/// Whether `sni` (a ClientHello's server name) is a mesh name: a peer
/// proxy's mTLS, whatever identity it expects.
pub fn is_mesh_name(sni: &str) -> bool {
    let labels: Vec<&str> = sni.trim_end_matches('.').split('.').collect();
    labels.windows(3).skip(1).any(|w| {
        (w[0].eq_ignore_ascii_case(SERVICE_ACCOUNT) || w[0].eq_ignore_ascii_case(HASHED))
            && w[1].eq_ignore_ascii_case(MARK[0])
            && w[2].eq_ignore_ascii_case(MARK[1])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(id: &str) -> String {
        match for_identity(&SpiffeId::parse(id).expect("id")) {
            ServerName::DnsName(name) => name.as_ref().to_owned(),
            other => panic!("not a DNS name: {other:?}"),
        }
    }

    #[test]
    fn a_kubernetes_identity_is_named_after_its_service_account_and_namespace() {
        assert_eq!(
            name("spiffe://cluster.local/ns/shop/sa/web"),
            "web.shop.serviceaccount.identity.levee.cluster.local"
        );
        assert!(is_mesh_name(&name("spiffe://cluster.local/ns/shop/sa/web")));
    }

    #[test]
    fn other_identities_get_a_stable_hashed_mesh_name() {
        let odd = name("spiffe://levee.test/some/other/path");
        assert!(odd.ends_with(".spiffe.identity.levee.levee.test"), "{odd}");
        assert_eq!(odd, name("spiffe://levee.test/some/other/path"));
        assert_ne!(odd, name("spiffe://levee.test/another"));
        assert!(is_mesh_name(&odd));
        // A service account too long for a DNS label.
        let long = format!("spiffe://levee.test/ns/shop/sa/{}", "a".repeat(70));
        let hashed = name(&long);
        assert!(
            hashed.ends_with(".spiffe.identity.levee.levee.test"),
            "{hashed}"
        );
        assert!(is_mesh_name(&hashed), "{hashed}");
        // A trust domain that is no DNS name.
        let odd_domain = name("spiffe://levee..test/ns/shop/sa/web");
        assert!(
            odd_domain.ends_with(".spiffe.identity.levee"),
            "{odd_domain}"
        );
        assert!(is_mesh_name(&odd_domain), "{odd_domain}");
    }

    #[test]
    fn an_apps_own_server_names_are_not_mesh_names() {
        for sni in [
            "",
            "example.com",
            "api.shop.svc.cluster.local",
            "identity.levee",
            "serviceaccount.identity.levee",
            "x.identity.levee.example",
            "x.serviceaccount.identity.leveex.td",
        ] {
            assert!(!is_mesh_name(sni), "{sni}");
        }
        assert!(is_mesh_name("WEB.shop.ServiceAccount.Identity.Levee.td."));
    }
}
