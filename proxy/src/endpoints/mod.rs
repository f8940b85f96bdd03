//! Where a service's endpoints come from: the static `ServiceEndpoints` of
//! the current snapshot first, else the address itself for IP literals, else
//! DNS. DNS answers are cached ([`DnsCache`]) so a request does not pay a
//! lookup: positive answers for a few seconds, failures for one, with a
//! bounded number of entries (services come from untrusted `Host` headers).

mod dns;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use levee_proto::policy::ServiceKey;

use crate::errors::{ErrorKind, ProxyError};
use crate::snapshot::Snapshot;

pub use dns::{CachedAnswer, DnsCache, DnsConfig, Lookup};

/// The endpoints of `service` known without DNS: its static ones in
/// `snapshot` (an empty list is an error), else the address itself for an
/// IP literal; `None`: ask DNS ([`DnsCache::resolve`]). `Shared::resolve`
/// asks in this order.
pub(crate) fn known(
    snapshot: &Snapshot,
    service: &ServiceKey,
) -> Option<Result<Arc<[SocketAddr]>, ProxyError>> {
    if let Some(addresses) = snapshot.endpoints.get(service) {
        if addresses.is_empty() {
            return Some(Err(no_endpoints(
                service,
                "its ServiceEndpoints list no addresses",
            )));
        }
        return Some(Ok(addresses.clone()));
    }
    if service.namespace.is_empty()
        && let Ok(ip) = service.name.parse::<IpAddr>()
    {
        return Some(Ok(Arc::from([SocketAddr::new(ip, service.port)])));
    }
    None
}

/// Whether `service`'s endpoints come from DNS in `snapshot` (no static
/// `ServiceEndpoints`, not an IP literal): only those answers age.
pub(crate) fn from_dns(snapshot: &Snapshot, service: &ServiceKey) -> bool {
    let literal = service.namespace.is_empty() && service.name.parse::<IpAddr>().is_ok();
    !literal && !snapshot.endpoints.contains_key(service)
}

/// The name to look up for `service`: the bare name in the proxy's own
/// namespace (`localhost`, or `payments` through the pod's search path),
/// `name.namespace` for another namespace, the whole host for external names.
pub fn dns_host<'a>(service: &'a ServiceKey, own_namespace: &str) -> Cow<'a, str> {
    if service.namespace.is_empty() || service.namespace == own_namespace {
        Cow::Borrowed(&service.name)
    } else {
        Cow::Owned(format!("{}.{}", service.name, service.namespace))
    }
}

pub(crate) fn no_endpoints(service: &ServiceKey, detail: impl Into<String>) -> ProxyError {
    ProxyError::new(ErrorKind::NoEndpoints, service.to_string(), detail)
}

#[cfg(test)]
mod tests;
