//! Endpoints held through a resync: just after a stream comes up, an update
//! that empties a service's endpoints is not believed for a while
//! (`DiscoveryConfig::resync_hold`, [`RESYNC_HOLD`] unless a test shortens it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use levee_proto::policy::ServiceKey;
use levee_proto::v1 as pb;
use tokio::time::Instant;

use super::Watcher;

/// Just after a stream comes up, an update that takes away every endpoint
/// of a service is not believed at once for this long: a restarted control
/// plane knows no proxy registrations until those proxies reconnect too.
/// The last endpoints keep serving meanwhile (then DNS, as the update says).
pub const RESYNC_HOLD: Duration = Duration::from_secs(15);

impl Watcher {
    /// The endpoints served for the service `update` is about, if any.
    pub(super) fn previous_endpoints(
        &self,
        update: &pb::ServiceUpdate,
    ) -> Option<Arc<[SocketAddr]>> {
        let key = ServiceKey::try_from(update.service.as_ref()?).ok()?;
        if let Some(held) = self.held.get(&key) {
            return Some(held.clone());
        }
        let endpoints = &self.services.get(&key)?.endpoints;
        (!endpoints.is_empty()).then(|| endpoints.clone())
    }

    /// After an accepted change of `key`: holds its `previous` endpoints if
    /// the change emptied them right after (re)connecting; forgets them when
    /// real endpoints arrived.
    pub(super) fn hold_if_emptied(
        &mut self,
        key: &ServiceKey,
        previous: Option<Arc<[SocketAddr]>>,
    ) {
        let emptied = self
            .services
            .get(key)
            .is_some_and(|s| s.endpoints.is_empty());
        if !emptied {
            self.held.remove(key);
            return;
        }
        let (Some(previous), Some(up)) = (previous, self.stream_up) else {
            return;
        };
        let hold = self.config.resync_hold;
        if up.elapsed() >= hold {
            self.held.remove(key);
            return;
        }
        tracing::info!(service = %key, endpoints = previous.len(), ?hold, "no endpoints right after (re)connecting: keeping the last ones a while");
        self.held.insert(key.clone(), previous);
        self.hold_until = Some(up + hold);
    }

    /// The hold is over: what the control plane says stands.
    pub(super) fn release_held(&mut self) {
        self.hold_until = None;
        if std::mem::take(&mut self.held).is_empty() {
            return;
        }
        let source = self
            .installed_source
            .clone()
            .unwrap_or_else(|| self.control_plane_source());
        let version = self.install(source);
        tracing::info!(version, "held endpoints released");
    }
}

/// Fires at `deadline`; never without one.
pub(super) async fn expiry(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
