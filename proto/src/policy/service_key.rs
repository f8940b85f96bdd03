//! Service identity shared by proxy and control plane: `name.namespace:port`,
//! parsing it from a request authority (`Host` / `:authority`), and its wire
//! form (`levee.v1.ServiceRef`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::v1;

/// The namespace of documents and wire references that name none, for the
/// control plane and leveectl. (A proxy in file mode uses its own
/// `--namespace`, whose default is also `default`.)
pub const DEFAULT_NAMESPACE: &str = "default";

/// A service port: `payments.shop:8080`.
///
/// For IP literals and names outside the cluster naming scheme
/// (`api.example.com`), `name` is the host text and `namespace` is empty.
///
/// Serialises as its display string (`"payments.shop:8080"`), so it can be a
/// JSON map key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Service name (or the whole host for IPs / external names).
    pub name: String,
    /// Namespace; empty for IPs / external names.
    pub namespace: String,
    /// Port.
    pub port: u16,
}

/// A parsed authority: the normalised key plus the host as written, which is
/// what a DNS lookup needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    /// The host as written, lower-cased, without brackets or a trailing dot.
    pub host: String,
    /// The port (given or defaulted).
    pub port: u16,
    /// The normalised service identity.
    pub key: ServiceKey,
}

impl ServiceKey {
    /// The key of `name` in `namespace` on `port`, taken as given (no
    /// normalisation; [`ServiceKey::from_authority`] parses what callers send).
    pub fn new(name: impl Into<String>, namespace: impl Into<String>, port: u16) -> ServiceKey {
        ServiceKey {
            name: name.into(),
            namespace: namespace.into(),
            port,
        }
    }

    /// Parses an authority: `name[.namespace[.svc[.cluster.local]]][:port]`.
    ///
    /// The namespace defaults to `default_ns`, the port to `default_port`
    /// (80 for http). IP-literal hosts (`10.0.0.1:80`, `[::1]:8080`) give
    /// `name` = the IP text and an empty namespace; so do names of three or
    /// more labels whose third label is not `svc` (`api.example.com`).
    pub fn from_authority(
        authority: &str,
        default_ns: &str,
        default_port: u16,
    ) -> Result<ServiceKey, String> {
        Authority::parse(authority, default_ns, default_port).map(|a| a.key)
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            if self.name.contains(':') {
                write!(f, "[{}]:{}", self.name, self.port)
            } else {
                write!(f, "{}:{}", self.name, self.port)
            }
        } else {
            write!(f, "{}.{}:{}", self.name, self.namespace, self.port)
        }
    }
}

impl Serialize for ServiceKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServiceKey {
    /// Reads what `Display` prints; a missing namespace stays empty.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ServiceKey::from_authority(&text, "", 80).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<&v1::ServiceRef> for ServiceKey {
    type Error = String;

    /// Reads a wire reference; an empty namespace is [`DEFAULT_NAMESPACE`].
    /// Names must be DNS labels ([`super::check_service_ref`]).
    fn try_from(service: &v1::ServiceRef) -> Result<Self, String> {
        super::check_service_ref("service", service).map_err(|e| e.to_string())
    }
}

impl From<&ServiceKey> for v1::ServiceRef {
    fn from(key: &ServiceKey) -> Self {
        v1::ServiceRef {
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            port: u32::from(key.port),
        }
    }
}

impl Authority {
    /// Parses `authority`; see [`ServiceKey::from_authority`].
    pub fn parse(authority: &str, default_ns: &str, default_port: u16) -> Result<Self, String> {
        let bad = |why: &str| format!("authority {authority:?}: {why}");
        if authority.is_empty() {
            return Err(bad("empty"));
        }
        if authority.contains('@') {
            return Err(bad("user info is not allowed"));
        }
        // Bare IPv6 without brackets or port.
        if let Ok(ip) = authority.parse::<Ipv6Addr>() {
            return Ok(Self::ip(IpAddr::V6(ip), default_port));
        }
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (ip, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let ip: Ipv6Addr = ip.parse().map_err(|_| bad("not an IPv6 address"))?;
            let port = match after {
                "" => default_port,
                p => parse_port(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?)
                    .map_err(|e| bad(&e))?,
            };
            return Ok(Self::ip(IpAddr::V6(ip), port));
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, parse_port(port).map_err(|e| bad(&e))?),
                None => (authority, default_port),
            }
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Self::ip(ip, port));
        }
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if host.len() > 253 {
            return Err(bad("host name longer than 253 characters"));
        }
        let labels: Vec<&str> = host.split('.').collect();
        if let Some(l) = labels.iter().find(|l| !is_dns_label(l)) {
            return Err(bad(&format!("{l:?} is not a DNS label")));
        }
        let (name, namespace) = match labels.as_slice() {
            [name] => (*name, default_ns),
            [name, ns] => (*name, *ns),
            [name, ns, "svc", ..] => (*name, *ns),
            _ => (host.as_str(), ""),
        };
        let key = ServiceKey {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            port,
        };
        Ok(Authority { host, port, key })
    }

    fn ip(ip: IpAddr, port: u16) -> Self {
        let text = ip.to_string();
        Authority {
            host: text.clone(),
            port,
            key: ServiceKey {
                name: text,
                namespace: String::new(),
                port,
            },
        }
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {text:?} is not a number"));
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {text} is outside 1-65535")),
        Ok(p) => Ok(p),
    }
}

/// RFC 1123 label: 1–63 of `[a-z0-9-]`, not starting or ending with `-`.
pub(crate) fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(a: &str) -> Result<ServiceKey, String> {
        ServiceKey::from_authority(a, "default", 80)
    }

    fn k(name: &str, namespace: &str, port: u16) -> ServiceKey {
        ServiceKey {
            name: name.into(),
            namespace: namespace.into(),
            port,
        }
    }

    #[test]
    fn cluster_names() {
        assert_eq!(key("payments"), Ok(k("payments", "default", 80)));
        assert_eq!(key("payments:8080"), Ok(k("payments", "default", 8080)));
        assert_eq!(key("payments.shop"), Ok(k("payments", "shop", 80)));
        assert_eq!(key("payments.shop:8080"), Ok(k("payments", "shop", 8080)));
        assert_eq!(
            key("payments.shop.svc:8080"),
            Ok(k("payments", "shop", 8080))
        );
        assert_eq!(
            key("payments.shop.svc.cluster.local:8080"),
            Ok(k("payments", "shop", 8080))
        );
        assert_eq!(
            key("Payments.Shop.svc.cluster.local."),
            Ok(k("payments", "shop", 80))
        );
        assert_eq!(
            key("api.example.com:443"),
            Ok(k("api.example.com", "", 443))
        );
    }

    #[test]
    fn ip_literals() {
        assert_eq!(key("10.0.0.1:9000"), Ok(k("10.0.0.1", "", 9000)));
        assert_eq!(key("127.0.0.1"), Ok(k("127.0.0.1", "", 80)));
        assert_eq!(key("[::1]:8080"), Ok(k("::1", "", 8080)));
        assert_eq!(key("[::1]"), Ok(k("::1", "", 80)));
        assert_eq!(key("::1"), Ok(k("::1", "", 80)));
        assert_eq!(
            key("[::1]:8080").map(|k| k.to_string()),
            Ok("[::1]:8080".into())
        );
    }

    #[test]
    fn keeps_host_for_dns() {
        let a =
            Authority::parse("Payments.Shop.svc.cluster.local:8080", "default", 80).expect("valid");
        assert_eq!(a.host, "payments.shop.svc.cluster.local");
        assert_eq!(a.port, 8080);
        assert_eq!(a.key.to_string(), "payments.shop:8080");
    }

    #[test]
    fn rejects_bad_authorities() {
        for bad in [
            "",
            "payments:",
            "payments:0",
            "payments:65536",
            "payments:http",
            "user@payments",
            "pay_ments",
            "-payments",
            "payments..shop",
            "[::1",
            "[::1]x",
            "[nope]:80",
            "a b",
        ] {
            assert!(key(bad).is_err(), "{bad:?} parsed as {:?}", key(bad));
        }
    }

    #[test]
    fn serde_uses_the_display_form() {
        for key in [
            k("payments", "shop", 8080),
            k("10.0.0.1", "", 80),
            k("::1", "", 8080),
            k("api.example.com", "", 443),
        ] {
            let json = serde_json::to_string(&key).expect("json");
            assert_eq!(json, format!("\"{key}\""));
            let back: ServiceKey = serde_json::from_str(&json).expect("back");
            assert_eq!(back, key);
        }
        let map = std::collections::BTreeMap::from([(k("a", "b", 1), 1)]);
        assert_eq!(serde_json::to_string(&map).expect("map"), r#"{"a.b:1":1}"#);
    }

    #[test]
    fn wire_references_default_the_namespace_and_check_the_port() {
        let wire = |name: &str, namespace: &str, port: u32| v1::ServiceRef {
            name: name.into(),
            namespace: namespace.into(),
            port,
        };
        assert_eq!(
            ServiceKey::try_from(&wire("payments", "", 8080)),
            Ok(k("payments", "default", 8080))
        );
        let shop = k("payments", "shop", 8080);
        assert_eq!(ServiceKey::try_from(&v1::ServiceRef::from(&shop)), Ok(shop));
        for bad in [
            wire("", "shop", 80),
            wire("p", "", 0),
            wire("p", "", 65536),
            wire("Pay", "shop", 80),
            wire("p", "a.b", 80),
            wire(&"a".repeat(64), "shop", 80),
        ] {
            assert!(ServiceKey::try_from(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display() {
        assert_eq!(
            k("payments", "shop", 8080).to_string(),
            "payments.shop:8080"
        );
        assert_eq!(k("10.0.0.1", "", 80).to_string(), "10.0.0.1:80");
    }
}
