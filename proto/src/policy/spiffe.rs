//! [`SpiffeId`]: a workload identity, `spiffe://<trust-domain>/<path>`, as
//! the SPIFFE ID standard spells it (trust domain of lowercase letters,
//! digits, `.`, `-`, `_`; a path of non-empty segments of letters, digits,
//! `.`, `-`, `_`, none of them `.` or `..`), bounded in length. Checked
//! once when read (YAML, protobuf, certificates), so every `SpiffeId` in
//! the program is well-formed and can be compared byte for byte.

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
    if domain.is_empty() {
        return Err(format!("{text:?}: the trust domain is empty"));
    }
    if domain.len() > MAX_TRUST_DOMAIN {
        return Err(format!(
            "{text:?}: the trust domain is longer than {MAX_TRUST_DOMAIN} bytes"
        ));
    }
    if let Some(bad) = domain
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(*c)))
    {
        return Err(format!(
            "{text:?}: {bad:?} is not allowed in a trust domain (lowercase letters, digits, '.', '-', '_')"
        ));
    }
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
    fn yaml_reads_and_writes_the_plain_string() {
        let id: SpiffeId = serde_norway::from_str("spiffe://td/ns/a/sa/b").expect("yaml");
        assert_eq!(id.as_str(), "spiffe://td/ns/a/sa/b");
        assert!(serde_norway::from_str::<SpiffeId>("spiffe://td").is_err());
    }
}
