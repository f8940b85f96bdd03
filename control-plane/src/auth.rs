//! Who may call `PolicyAdmin`.
//!
//! With `--admin-token-file`, every admin call must carry
//! `authorization: Bearer <token>` (compared in constant time). Without a
//! token file the admin API answers loopback peers only: a call from any
//! other address is refused, while `Discovery` stays open to every peer on
//! the same listener. Refusals are `UNAUTHENTICATED` and happen before the
//! call reaches the API, so nothing changes.

use std::net::SocketAddr;
use std::path::Path;

use tonic::{Request, Status};

use crate::metrics::{Metrics, RejectLabels};

/// The admin API's access rule.
#[derive(Clone)]
pub struct AdminAuth {
    token: Option<Vec<u8>>,
    metrics: Metrics,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AdminAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AdminAuth {
    /// Token required (`Some`) or loopback-only (`None`).
    pub fn new(token: Option<String>, metrics: Metrics) -> Self {
        AdminAuth {
            token: token.map(String::into_bytes),
            metrics,
        }
    }

    /// Reads the token file: its content without surrounding whitespace,
    /// which must not be empty.
    pub fn load_token(path: &Path) -> Result<String, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!(
                "--admin-token-file {}: the file is empty",
                path.display()
            ));
        }
        Ok(token.to_owned())
    }

    /// Whether a token is required.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// The tonic interceptor: passes the request on or refuses it.
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        match &self.token {
            Some(expected) => {
                let presented = request
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim);
                match presented {
                    Some(token) if constant_time_eq(token.as_bytes(), expected) => Ok(request),
                    Some(_) => Err(self.reject("unauthenticated", "invalid bearer token")),
                    None => Err(self.reject(
                        "unauthenticated",
                        "missing `authorization: Bearer <token>` (use --token or LEVEE_TOKEN)",
                    )),
                }
            }
            None if request.remote_addr().is_some_and(|a| is_loopback(&a)) => Ok(request),
            None => Err(self.reject(
                "not_loopback",
                "the admin API accepts loopback callers only when the control plane runs \
                 without --admin-token-file",
            )),
        }
    }

    fn reject(&self, reason: &'static str, message: &str) -> Status {
        self.metrics
            .admin_rejected
            .get_or_create(&RejectLabels { reason })
            .inc();
        Status::unauthenticated(message)
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(a) => a.ip().is_loopback(),
        SocketAddr::V6(a) => {
            a.ip().is_loopback() || a.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Compares without an early exit, so the time taken does not reveal how
/// much of the token was right. (The length is not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn request(auth: Option<&str>) -> Request<()> {
        let mut req = Request::new(());
        if let Some(v) = auth {
            req.metadata_mut()
                .insert("authorization", v.parse().expect("ascii"));
        }
        req
    }

    #[test]
    fn token_must_match_exactly() {
        let auth = AdminAuth::new(Some("s3cret".into()), Metrics::new());
        assert!(auth.check(request(Some("Bearer s3cret"))).is_ok());
        for bad in [
            None,
            Some("Bearer nope"),
            Some("Bearer s3cre"),
            Some("s3cret"),
        ] {
            let err = auth.check(request(bad)).expect_err("refused");
            assert_eq!(err.code(), Code::Unauthenticated, "{bad:?}");
        }
    }

    #[test]
    fn without_token_only_loopback_passes() {
        let auth = AdminAuth::new(None, Metrics::new());
        // No peer address known (not from a socket): refused.
        assert_eq!(
            auth.check(request(None)).expect_err("no peer").code(),
            Code::Unauthenticated
        );
        assert!(is_loopback(&"127.0.0.1:1".parse().expect("addr")));
        assert!(is_loopback(&"[::1]:1".parse().expect("addr")));
        assert!(is_loopback(&"[::ffff:127.0.0.1]:1".parse().expect("addr")));
        assert!(!is_loopback(&"10.0.0.1:1".parse().expect("addr")));
    }

    fn from_peer(peer: &str) -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(peer.parse().expect("addr")),
            });
        req
    }

    #[test]
    fn loopback_only_refuses_other_peers_and_ignores_tokens() {
        let auth = AdminAuth::new(None, Metrics::new());
        assert!(auth.check(from_peer("127.0.0.1:5000")).is_ok());
        assert!(auth.check(from_peer("[::1]:5000")).is_ok());
        let mut remote = from_peer("10.1.2.3:5000");
        remote
            .metadata_mut()
            .insert("authorization", "Bearer anything".parse().expect("ascii"));
        let err = auth.check(remote).expect_err("not loopback");
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(err.message().contains("loopback"), "{}", err.message());
    }

    #[test]
    fn with_a_token_remote_peers_are_fine() {
        let auth = AdminAuth::new(Some("t".into()), Metrics::new());
        let mut remote = from_peer("10.1.2.3:5000");
        remote
            .metadata_mut()
            .insert("authorization", "Bearer t".parse().expect("ascii"));
        assert!(auth.check(remote).is_ok());
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
