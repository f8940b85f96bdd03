//! [`SpiffeId`]: a workload identity, `spiffe://<trust-domain>/<path>`, as
//! the SPIFFE ID standard spells it (trust domain of lowercase letters,
//! digits, `.`, `-`, `_`; a path of non-empty segments of letters, digits,
//! `.`, `-`, `_`, none of them `.` or `..`), bounded in length. Checked
//! once when read (YAML, protobuf, certificates), so every `SpiffeId` in
//! the program is well-formed and can be compared byte for byte.
//!
//! It is the one SPIFFE ID type of Levee: policy allow-lists, expected
//! endpoint identities and verified peers, and the IDs the control plane's
//! CA issues. Those have Levee's workload form,
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`
//! ([`SpiffeId::workload`] builds one from its parts, [`SpiffeId::namespace`]
//! and [`SpiffeId::service_account`] read them back); other IDs (from
//! another issuer) are valid too, and have no such parts.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The scheme every SPIFFE ID starts with.
pub const SPIFFE_SCHEME: &str = "spiffe://";
/// Longest trust domain accepted (the standard's bound).
pub const MAX_TRUST_DOMAIN: usize = 255;
/// Longest whole ID accepted (the standard's bound for URIs in SANs).
pub const MAX_SPIFFE_ID: usize = 2048;

/// A well-formed SPIFFE ID. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId(Arc<str>);

impl schemars::JsonSchema for SpiffeId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SpiffeId".into()
    }

    fn inline_schema() -> bool {
        true
    }

    /// A `spiffe://` URI (the validator checks the rest of the syntax).
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^spiffe://",
            "maxLength": MAX_SPIFFE_ID,
        })
    }
}

impl SpiffeId {
    /// Parses `text`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<SpiffeId, String> {
        check(text)?;
        Ok(SpiffeId(text.into()))
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain (between `spiffe://` and the path).
    pub fn trust_domain(&self) -> &str {
        let rest = &self.0[SPIFFE_SCHEME.len()..];
        rest.split('/').next().unwrap_or(rest)
    }

    /// Levee's workload ID `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`;
    /// `Err` says which part is not allowed (the namespace and service
    /// account must be Kubernetes names).
    pub fn workload(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, String> {
        check_trust_domain(trust_domain)?;
        check_name("namespace", namespace)?;
        check_name("service account", service_account)?;
        SpiffeId::parse(&format!(
            "{SPIFFE_SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// The namespace of a workload ID (`None` for another path shape).
    pub fn namespace(&self) -> Option<&str> {
        self.workload_parts().map(|(namespace, _)| namespace)
    }

    /// The service account of a workload ID (`None` for another path shape).
    pub fn service_account(&self) -> Option<&str> {
        self.workload_parts().map(|(_, account)| account)
    }

    /// `(namespace, service account)` of a `/ns/<ns>/sa/<sa>` path.
    fn workload_parts(&self) -> Option<(&str, &str)> {
        let rest = &self.0[SPIFFE_SCHEME.len()..];
        let mut segments = rest.split('/').skip(1);
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(namespace), Some("sa"), Some(account), None) => {
                Some((namespace, account))
            }
            _ => None,
        }
    }
}

/// SPIFFE trust domains: 1-255 bytes of lowercase letters, digits, `.`,
/// `-`, `_` (`--trust-domain`, `--identity-trust-domain`, and every ID).
pub fn check_trust_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("the trust domain is empty".into());
    }
    if domain.len() > MAX_TRUST_DOMAIN {
        return Err(format!(
            "the trust domain is longer than {MAX_TRUST_DOMAIN} bytes"
        ));
    }
    if let Some(bad) = domain
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(*c)))
    {
        return Err(format!(
            "{bad:?} is not allowed in a trust domain (lowercase letters, digits, '.', '-', '_'): {domain:?}"
        ));
    }
    Ok(())
}

/// Namespaces and service accounts of workload IDs: Kubernetes names.
fn check_name(what: &str, value: &str) -> Result<(), String> {
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

fn check(text: &str) -> Result<(), String> {
    if text.len() > MAX_SPIFFE_ID {
        return Err(format!(
            "a SPIFFE ID is at most {MAX_SPIFFE_ID} bytes (this one has {})",
            text.len()
        ));
    }
    let Some(rest) = text.strip_prefix(SPIFFE_SCHEME) else {
        return Err(format!(
            "{text:?} is not a SPIFFE ID (spiffe://<trust-domain>/<path>)"
        ));
    };
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    check_trust_domain(domain).map_err(|e| format!("{text:?}: {e}"))?;
    if path.is_empty() {
        return Err(format!(
            "{text:?}: a workload ID needs a path (e.g. spiffe://{domain}/ns/<namespace>/sa/<account>)"
        ));
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err(format!("{text:?}: the path has an empty segment"));
        }
        if segment == "." || segment == ".." {
            return Err(format!("{text:?}: the path has a {segment:?} segment"));
        }
        if let Some(bad) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-._".contains(*c)))
        {
            return Err(format!(
                "{text:?}: {bad:?} is not allowed in a path (letters, digits, '.', '-', '_')"
            ));
        }
    }
    Ok(())
}

impl TryFrom<String> for SpiffeId {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        check(&text)?;
        Ok(SpiffeId(text.into()))
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> String {
        id.0.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_ids_parse() {
        let id = SpiffeId::parse("spiffe://levee.local/ns/shop/sa/payments").expect("valid");
        assert_eq!(id.trust_domain(), "levee.local");
        assert_eq!(id.as_str(), "spiffe://levee.local/ns/shop/sa/payments");
        assert!(SpiffeId::parse("spiffe://example.org/a_b-c.d").is_ok());
    }

    #[test]
    fn malformed_ids_are_refused_with_a_reason() {
        let cases = [
            ("https://levee.local/ns/a", "not a SPIFFE ID"),
            ("spiffe:///ns/a", "trust domain is empty"),
            ("spiffe://Levee.local/ns/a", "not allowed in a trust domain"),
            ("spiffe://levee.local", "needs a path"),
            ("spiffe://levee.local/", "needs a path"),
            ("spiffe://levee.local/ns/", "empty segment"),
            ("spiffe://levee.local/ns//a", "empty segment"),
            ("spiffe://levee.local/ns/../a", "\"..\" segment"),
            ("spiffe://levee.local/ns/a?b", "not allowed in a path"),
            ("spiffe://levee.local/ns/a%20", "not allowed in a path"),
        ];
        for (text, why) in cases {
            let err = SpiffeId::parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
        let long = format!("spiffe://levee.local/{}", "a".repeat(MAX_SPIFFE_ID));
        assert!(
            SpiffeId::parse(&long)
                .expect_err("long")
                .contains("at most")
        );
        let domain = format!("spiffe://{}/a", "d".repeat(MAX_TRUST_DOMAIN + 1));
        assert!(
            SpiffeId::parse(&domain)
                .expect_err("domain")
                .contains("longer")
        );
    }

    #[test]
    fn workload_ids_are_built_from_and_read_back_as_parts() {
        let id = SpiffeId::workload("cluster.local", "shop", "payments").expect("valid");
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/shop/sa/payments");
        assert_eq!(SpiffeId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), Some("shop"));
        assert_eq!(id.service_account(), Some("payments"));
        for (td, ns, sa, why) in [
            ("Cluster.Local", "shop", "payments", "trust domain"),
            ("", "shop", "payments", "trust domain is empty"),
            ("cluster.local", "Shop", "payments", "namespace"),
            ("cluster.local", "shop", "", "service account"),
            ("cluster.local", "shop", "a/b", "service account"),
            ("cluster.local", "shop", "-a", "service account"),
        ] {
            let err = SpiffeId::workload(td, ns, sa).expect_err(sa);
            assert!(err.contains(why), "{td} {ns} {sa}: {err}");
        }
        // Other valid IDs have no workload parts.
        for other in [
            "spiffe://td/ns/shop",
            "spiffe://td/ns/shop/sa/payments/extra",
            "spiffe://td/sa/shop/ns/payments",
            "spiffe://td/workload/payments",
        ] {
            let id = SpiffeId::parse(other).expect(other);
            assert_eq!(
                (id.namespace(), id.service_account()),
                (None, None),
                "{other}"
            );
        }
    }

    #[test]
    fn yaml_reads_and_writes_the_plain_string() {
        let id: SpiffeId = serde_norway::from_str("spiffe://td/ns/a/sa/b").expect("yaml");
        assert_eq!(id.as_str(), "spiffe://td/ns/a/sa/b");
        assert!(serde_norway::from_str::<SpiffeId>("spiffe://td").is_err());
    }
}
