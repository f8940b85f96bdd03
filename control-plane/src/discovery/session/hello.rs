//! A stream's first message: the hello. Reading it (within a deadline),
//! checking it (the wire rules, then what the stream's workload
//! certificate allows), and the endpoint it registers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use levee_proto::policy::SpiffeId;
use levee_proto::v1::{self, watch_request::Kind};
use tonic::{Status, Streaming};

use super::super::limits::note_inbound_error;
use super::super::registry::Registration;
use super::{Outbound, SessionContext};
use crate::identity::peer::{PeerIdentity, check_hello};

/// How long a new stream may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// The hello, or `None` when the stream ended first or was refused (the
/// refusal is already sent).
pub(super) async fn read(
    ctx: &SessionContext,
    inbound: &mut Streaming<v1::WatchRequest>,
    tx: &Outbound,
) -> Option<v1::Hello> {
    let refusal = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(v1::WatchRequest {
            kind: Some(Kind::Hello(hello)),
        }))) => return Some(hello),
        Ok(Ok(None)) => return None,
        Ok(Err(status)) => {
            note_inbound_error(&status, &ctx.metrics);
            status
        }
        Ok(Ok(Some(_))) => Status::invalid_argument("the first message must be hello"),
        Err(_) => Status::deadline_exceeded("no hello within 30s"),
    };
    let _ = tx.send(Box::new(Err(refusal))).await;
    None
}

/// Checks `hello` from `peer`; the endpoint it registers, if any (none in
/// Kubernetes mode). A refusal is counted and logged here.
pub(super) fn admit(
    ctx: &SessionContext,
    hello: &v1::Hello,
    peer: Option<SocketAddr>,
    identity: Option<&PeerIdentity>,
) -> Result<Option<Registration>, Status> {
    levee_proto::policy::check_hello(hello)
        .map_err(|errors| Status::invalid_argument(errors.to_string()))?;
    if let Some(identity) = identity
        && let Err(refusal) = check_hello(hello, identity, peer)
    {
        ctx.metrics.watch_refused(refusal.reason);
        tracing::warn!(?peer, spiffe_id = %identity.spiffe_id, reason = refusal.reason, message = %refusal.message, "refused a hello");
        return Err(Status::permission_denied(refusal.message));
    }
    let registration = registration(hello, peer, identity)?;
    Ok(registration.filter(|_| ctx.register_endpoints))
}

/// The endpoint a hello registers, if any, with the identity callers are to
/// expect there: the stream's verified certificate's (none over plaintext).
fn registration(
    hello: &v1::Hello,
    peer: Option<SocketAddr>,
    identity: Option<&PeerIdentity>,
) -> Result<Option<Registration>, Status> {
    if hello.service.is_empty() || hello.inbound_port == 0 {
        return Ok(None);
    }
    let inbound_port = u16::try_from(hello.inbound_port).map_err(|_| {
        Status::invalid_argument(format!(
            "hello.inbound_port {} is outside 1-65535",
            hello.inbound_port
        ))
    })?;
    let port = match hello.service_port {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| {
            Status::invalid_argument(format!("hello.service_port {p} is outside 1-65535"))
        })?),
    };
    let ip: IpAddr = if hello.address.is_empty() {
        peer.map(|p| p.ip()).ok_or_else(|| {
            Status::invalid_argument("hello.address is empty and the peer address is unknown")
        })?
    } else {
        hello.address.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "hello.address {:?} is not an IP address",
                hello.address
            ))
        })?
    };
    let namespace = if hello.namespace.is_empty() {
        levee_proto::policy::DEFAULT_NAMESPACE
    } else {
        &hello.namespace
    };
    Ok(Some(Registration {
        service: hello.service.clone(),
        namespace: namespace.to_owned(),
        port,
        addr: SocketAddr::new(ip, inbound_port),
        identity: identity.and_then(expected_identity),
    }))
}

/// The certificate's SPIFFE ID in the policy model's form. Certificates
/// the CA issues always convert; another one (an operator's root issuing
/// longer IDs than updates allow) registers without one, so callers speak
/// plaintext rather than NACK the service's updates.
fn expected_identity(identity: &PeerIdentity) -> Option<SpiffeId> {
    match SpiffeId::parse(&identity.spiffe_id.to_string()) {
        Ok(id) => Some(id),
        Err(error) => {
            tracing::warn!(spiffe_id = %identity.spiffe_id, %error, "a registered identity cannot be sent to callers; they will speak plaintext to it");
            None
        }
    }
}
