//! What a proxy sends after its hello: subscriptions to services and to
//! destination addresses, unsubscriptions, ACKs and NACKs (recorded in the
//! stream's status).

use std::net::SocketAddr;
use std::sync::Mutex;

use levee_proto::policy::{ServiceKey, check_service_ref};
use levee_proto::v1::{self, watch_request::Kind};
use tokio_stream::wrappers::WatchStream;
use tonic::Status;

use super::super::limits::check_subscriptions;
use super::super::status::{SessionStatus, SubscriptionStatus, with_status};
use super::{SessionContext, Watched};
use crate::metrics::UpdateLabels;

pub(super) fn handle(
    ctx: &SessionContext,
    status: &Mutex<SessionStatus>,
    watched: &mut Watched,
    request: v1::WatchRequest,
) -> Result<(), Status> {
    match request.kind {
        Some(Kind::Subscribe(s)) => {
            subscribe(ctx, status, watched, "subscribe.services", &s.services)?;
            subscribe_addresses(ctx, watched, &s.addresses)
        }
        Some(Kind::Unsubscribe(u)) => {
            for (i, service) in u.services.iter().enumerate() {
                let key = service_key(&format!("unsubscribe.services[{i}]"), service)?;
                watched.services.remove(&key);
                with_status(status, |s| s.subscriptions.remove(&key));
            }
            for (i, text) in u.addresses.iter().enumerate() {
                let addr = address(&format!("unsubscribe.addresses[{i}]"), text)?;
                watched.addresses.remove(&addr);
            }
            Ok(())
        }
        Some(Kind::Ack(ack)) => {
            let key = service_key("ack.service", &ack.service.unwrap_or_default())?;
            ctx.metrics
                .updates
                .get_or_create(&UpdateLabels { result: "ack" })
                .inc();
            with_status(status, |s| {
                if let Some(sub) = s.subscriptions.get_mut(&key) {
                    sub.acked_version = ack.version;
                    sub.nacked_version.clear();
                    sub.nack_reason.clear();
                }
            });
            Ok(())
        }
        Some(Kind::Nack(nack)) => {
            let key = service_key("nack.service", &nack.service.unwrap_or_default())?;
            ctx.metrics
                .updates
                .get_or_create(&UpdateLabels { result: "nack" })
                .inc();
            tracing::warn!(service = %key, version = %nack.version, reason = %nack.reason, "proxy NACKed an update");
            with_status(status, |s| {
                if let Some(sub) = s.subscriptions.get_mut(&key) {
                    sub.nacked_version = nack.version;
                    sub.nack_reason = nack.reason;
                }
            });
            Ok(())
        }
        Some(Kind::Hello(_)) => Err(Status::invalid_argument(
            "hello may be sent only once per stream",
        )),
        None => Err(Status::invalid_argument("empty WatchRequest")),
    }
}

pub(super) fn subscribe(
    ctx: &SessionContext,
    status: &Mutex<SessionStatus>,
    watched: &mut Watched,
    path: &str,
    services: &[v1::ServiceRef],
) -> Result<(), Status> {
    for (i, service) in services.iter().enumerate() {
        let key = service_key(&format!("{path}[{i}]"), service)?;
        if watched.services.contains_key(&key) {
            continue;
        }
        check_subscriptions(
            watched.len(),
            ctx.limits.subscriptions_per_stream,
            &ctx.metrics,
        )?;
        let rx = ctx.registry.subscribe(&key);
        with_status(status, |s| {
            s.subscriptions
                .entry(key.clone())
                .or_insert_with(SubscriptionStatus::default);
        });
        watched.services.insert(key, WatchStream::new(rx));
    }
    Ok(())
}

/// Watches the owners of `addresses` (answered at once, then on change);
/// they count against the same per-stream limit as services.
fn subscribe_addresses(
    ctx: &SessionContext,
    watched: &mut Watched,
    addresses: &[String],
) -> Result<(), Status> {
    for (i, text) in addresses.iter().enumerate() {
        let addr = address(&format!("subscribe.addresses[{i}]"), text)?;
        if watched.addresses.contains_key(&addr) {
            continue;
        }
        check_subscriptions(
            watched.len(),
            ctx.limits.subscriptions_per_stream,
            &ctx.metrics,
        )?;
        let rx = ctx.registry.subscribe_address(addr);
        watched.addresses.insert(addr, WatchStream::new(rx));
    }
    Ok(())
}

/// A wire destination address found at `path` (`ip:port`, port not 0).
fn address(path: &str, text: &str) -> Result<SocketAddr, Status> {
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok(addr),
        _ => Err(Status::invalid_argument(format!(
            "{path}: {text:?} is not an ip:port address"
        ))),
    }
}

/// A wire service reference found at `path` as a key (names checked; an
/// empty namespace means "default").
pub fn service_key(path: &str, service: &v1::ServiceRef) -> Result<ServiceKey, Status> {
    check_service_ref(path, service).map_err(|errors| Status::invalid_argument(errors.to_string()))
}
