//! The mTLS families: handshakes by direction and result, open
//! connections cut at this proxy's certificate's expiry by direction, and inbound
//! authorization refusals by caller identity (the seconds left on the
//! certificate in use are `levee_identity_cert_expiry_seconds`, one gauge
//! whatever the certificate's source: [`super::identity`]). The identity label is bounded: the first
//! [`MAX_CLIENT_LABELS`] distinct callers get their own series, later ones
//! share [`OTHER_CLIENTS`] (identities come from certificates the trust
//! roots signed, but a large mesh must not grow the registry without end).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::family::registered;
use super::identity::IdentityMetrics;
use super::labels::Direction;

/// Distinct `client` label values of `levee_authz_denied_total`.
pub const MAX_CLIENT_LABELS: usize = 100;
/// The `client` label of refusals beyond [`MAX_CLIENT_LABELS`].
pub const OTHER_CLIENTS: &str = "other";
/// The `client` label of a caller without a verified identity.
pub const NO_IDENTITY: &str = "none";

/// The `result` label of `levee_tls_handshakes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsResult {
    /// The handshake completed (and, outbound, the server was the expected identity).
    Ok,
    /// Outbound: the server proved another identity.
    IdentityMismatch,
    /// Outbound: mTLS expected, and this proxy has no certificate.
    NoCredentials,
    /// This proxy's certificate expired (not renewed in time), so it was
    /// not presented: outbound, no handshake was tried; inbound, the
    /// client's was refused.
    Expired,
    /// Any other failure (untrusted chain, protocol, alert, reset).
    Error,
}

impl TlsResult {
    fn as_str(self) -> &'static str {
        match self {
            TlsResult::Ok => "ok",
            TlsResult::IdentityMismatch => "identity-mismatch",
            TlsResult::NoCredentials => "no-credentials",
            TlsResult::Expired => "expired",
            TlsResult::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    direction: Direction,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeniedLabels {
    service: String,
    client: String,
}

/// Cheap to clone; shared inside.
#[derive(Clone, Debug)]
pub struct TlsMetrics {
    handshakes: Family<HandshakeLabels, Counter>,
    /// Open mTLS connections cut because this proxy's certificate expired.
    expired: Family<DirectionLabels, Counter>,
    /// Where the certificate in use reports its expiry.
    identity: IdentityMetrics,
    denied: Family<DeniedLabels, Counter>,
    /// Client label values given out so far.
    clients: Arc<Mutex<HashSet<String>>>,
}

impl TlsMetrics {
    pub(super) fn register(registry: &mut Registry, identity: IdentityMetrics) -> TlsMetrics {
        TlsMetrics {
            handshakes: registered(
                registry,
                "levee_tls_handshakes",
                "mTLS handshakes between sidecars, by direction and result",
                Family::default(),
            ),
            expired: registered(
                registry,
                "levee_tls_connections_expired",
                "Open mTLS connections closed because this proxy's certificate expired unrenewed, by direction",
                Family::default(),
            ),
            identity,
            denied: registered(
                registry,
                "levee_authz_denied",
                "Inbound requests refused by spec.inbound.mtls, by service and caller identity",
                Family::default(),
            ),
            clients: Arc::default(),
        }
    }

    /// Counts a handshake.
    pub fn handshake(&self, direction: Direction, result: TlsResult) {
        self.handshakes
            .get_or_create(&HandshakeLabels {
                direction,
                result: result.as_str(),
            })
            .inc();
    }

    /// The handshakes counted for `direction` and `result`.
    pub fn handshakes(&self, direction: Direction, result: TlsResult) -> u64 {
        self.handshakes
            .get_or_create(&HandshakeLabels {
                direction,
                result: result.as_str(),
            })
            .get()
    }

    /// Counts an open mTLS connection cut at this proxy's certificate's expiry.
    pub fn connection_expired(&self, direction: Direction) {
        self.expired
            .get_or_create(&DirectionLabels { direction })
            .inc();
    }

    /// The connections counted as cut at expiry for `direction`.
    pub fn connections_expired(&self, direction: Direction) -> u64 {
        self.expired
            .get_or_create(&DirectionLabels { direction })
            .get()
    }

    /// The certificate presented from now on is valid until `not_after_unix`.
    pub fn certificate_in_use(&self, not_after_unix: i64) {
        self.identity.in_use(not_after_unix);
    }

    /// Counts an authorization refusal of `client` (`None`: no identity).
    pub fn denied(&self, service: &str, client: Option<&str>) {
        let client = match client {
            None => NO_IDENTITY.to_owned(),
            Some(id) => {
                let mut seen = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
                if seen.contains(id) {
                    id.to_owned()
                } else if seen.len() < MAX_CLIENT_LABELS {
                    seen.insert(id.to_owned());
                    id.to_owned()
                } else {
                    OTHER_CLIENTS.to_owned()
                }
            }
        };
        self.denied
            .get_or_create(&DeniedLabels {
                service: service.to_owned(),
                client,
            })
            .inc();
    }
}
