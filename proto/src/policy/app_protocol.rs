//! [`AppProtocol`]: what an app speaks on a service port, spelled as
//! Kubernetes spells a port's `appProtocol` (`ServiceEndpoints.spec.appProtocol`,
//! later filled from a Service's ports). The proxy uses it to choose the
//! upstream protocol instead of learning it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A port's declared application protocol. The spellings are Kubernetes'
/// (`http`, `kubernetes.io/h2c`, `kubernetes.io/ws`) plus `grpc`, and
/// `tcp`/`opaque` for anything the proxy must not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AppProtocol {
    /// `http`: HTTP/1.1; requests that arrived on HTTP/2 are translated
    /// (gRPC ones are not: gRPC needs HTTP/2).
    Http,
    /// `kubernetes.io/h2c`: HTTP/2 over cleartext, prior knowledge.
    H2c,
    /// `grpc`: gRPC, so HTTP/2.
    Grpc,
    /// `kubernetes.io/ws`: HTTP/1.1 with WebSocket upgrades.
    WebSocket,
    /// `tcp`: not HTTP; forwarded byte for byte.
    Tcp,
    /// `opaque`: the same as `tcp` (Linkerd's word).
    Opaque,
}

/// Every accepted spelling, for error messages and docs.
pub const APP_PROTOCOLS: &[&str] = &[
    "http",
    "kubernetes.io/h2c",
    "grpc",
    "kubernetes.io/ws",
    "tcp",
    "opaque",
];

impl AppProtocol {
    /// The spelling as written.
    pub fn as_str(self) -> &'static str {
        match self {
            AppProtocol::Http => "http",
            AppProtocol::H2c => "kubernetes.io/h2c",
            AppProtocol::Grpc => "grpc",
            AppProtocol::WebSocket => "kubernetes.io/ws",
            AppProtocol::Tcp => "tcp",
            AppProtocol::Opaque => "opaque",
        }
    }

    /// Whether the app speaks HTTP/2 (prior knowledge) on this port.
    pub fn is_http2(self) -> bool {
        matches!(self, AppProtocol::H2c | AppProtocol::Grpc)
    }

    /// Whether the app speaks HTTP/1.1 only on this port.
    pub fn is_http1(self) -> bool {
        matches!(self, AppProtocol::Http | AppProtocol::WebSocket)
    }

    /// Whether connections to this port are forwarded as opaque TCP.
    pub fn is_opaque(self) -> bool {
        matches!(self, AppProtocol::Tcp | AppProtocol::Opaque)
    }
}

impl std::str::FromStr for AppProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "http" => AppProtocol::Http,
            "kubernetes.io/h2c" => AppProtocol::H2c,
            "grpc" => AppProtocol::Grpc,
            "kubernetes.io/ws" => AppProtocol::WebSocket,
            "tcp" => AppProtocol::Tcp,
            "opaque" => AppProtocol::Opaque,
            other => {
                return Err(format!(
                    "{other:?} is not an appProtocol Levee knows (one of: {})",
                    APP_PROTOCOLS.join(", ")
                ));
            }
        })
    }
}

impl TryFrom<String> for AppProtocol {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<AppProtocol> for String {
    fn from(p: AppProtocol) -> String {
        p.as_str().to_owned()
    }
}

impl fmt::Display for AppProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_spelling_round_trips_and_others_are_refused() {
        for spelling in APP_PROTOCOLS {
            let p: AppProtocol = spelling.parse().expect("listed");
            assert_eq!(p.as_str(), *spelling);
        }
        let err = "h2".parse::<AppProtocol>().expect_err("unknown");
        assert!(err.contains("\"h2\" is not an appProtocol"), "{err}");
        assert!(AppProtocol::Grpc.is_http2() && !AppProtocol::Grpc.is_http1());
        assert!(AppProtocol::Http.is_http1() && !AppProtocol::Http.is_http2());
        assert!(AppProtocol::Tcp.is_opaque() && AppProtocol::Opaque.is_opaque());
    }
}
