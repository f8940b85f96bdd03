//! Who a Discovery stream is: the workload certificate it presented (TLS
//! already verified the chain and the validity period against the trust
//! bundle), and what its hello may claim with it — its own identity's
//! namespace and service, and the address it connects from.

use std::net::SocketAddr;
use std::sync::Arc;

use levee_proto::policy::SpiffeId;
use levee_proto::v1;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The identity of a verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Its only URI SAN.
    pub spiffe_id: SpiffeId,
    /// Its subject CN: the service it may register endpoints for.
    pub service: String,
    /// Its notAfter, Unix seconds.
    pub not_after_unix: i64,
}

/// Why a stream is refused; `reason` is the label of `levee_cp_watch_refused_total`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloRefusal {
    /// `no_certificate`, `identity_mismatch` or `address_mismatch`.
    pub reason: &'static str,
    /// What to tell the proxy.
    pub message: String,
}

/// The identity of the leaf in `certs` (as tonic reports a verified peer).
pub fn from_certs(
    certs: Option<Arc<Vec<CertificateDer<'static>>>>,
) -> Result<PeerIdentity, HelloRefusal> {
    let refuse = |message: String| HelloRefusal {
        reason: "no_certificate",
        message,
    };
    let certs = certs.ok_or_else(|| {
        refuse(
            "Discovery requires a workload certificate (mTLS): start the proxy with \
             --identity-token-file or --identity-sa-token-file"
                .into(),
        )
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| refuse("the client presented no certificate".into()))?;
    parse_leaf(leaf).map_err(refuse)
}

/// Reads the SPIFFE ID, service and expiry of a workload certificate.
pub fn parse_leaf(der: &[u8]) -> Result<PeerIdentity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("the client certificate's SAN does not parse: {e}"))?
        .ok_or("the client certificate has no SAN")?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let [uri] = uris.as_slice() else {
        return Err(format!(
            "the client certificate must have exactly one URI SAN, it has {}",
            uris.len()
        ));
    };
    let spiffe_id = SpiffeId::parse(uri)?;
    if spiffe_id.namespace().is_none() {
        return Err(format!(
            "{spiffe_id} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
        ));
    }
    let service = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok(PeerIdentity {
        spiffe_id,
        service,
        not_after_unix: cert.validity().not_after.timestamp(),
    })
}

/// Whether `hello` (from `peer`) claims only what `identity` allows.
pub fn check_hello(
    hello: &v1::Hello,
    identity: &PeerIdentity,
    peer: Option<SocketAddr>,
) -> Result<(), HelloRefusal> {
    let mismatch = |message: String| HelloRefusal {
        reason: "identity_mismatch",
        message,
    };
    let namespace = if hello.namespace.is_empty() {
        levee_proto::policy::DEFAULT_NAMESPACE
    } else {
        &hello.namespace
    };
    let granted = identity.spiffe_id.namespace().unwrap_or_default();
    if namespace != granted {
        return Err(mismatch(format!(
            "hello.namespace {namespace:?} disagrees with the certificate's identity {} (namespace {granted:?})",
            identity.spiffe_id
        )));
    }
    if !hello.service.is_empty() && hello.service != identity.service {
        return Err(mismatch(format!(
            "hello.service {:?}: the certificate {} may register endpoints only for service {:?}",
            hello.service, identity.spiffe_id, identity.service
        )));
    }
    if !hello.address.is_empty() {
        let from = peer.map(|p| p.ip().to_canonical());
        let claimed = hello
            .address
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
        if claimed.is_none() || claimed != from {
            return Err(HelloRefusal {
                reason: "address_mismatch",
                message: format!(
                    "hello.address {:?} is not the address the stream comes from ({}); a proxy registers only its own address",
                    hello.address,
                    from.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
                ),
            });
        }
    }
    Ok(())
}
