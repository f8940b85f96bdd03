//! The policy stream's families: the policy version in use, updates
//! accepted or refused, and whether the control-plane stream is up.

use super::labels::UpdateLabels;
use super::registry::Metrics;

impl Metrics {
    /// Sets `levee_policy_version`.
    pub fn set_policy_version(&self, version: u64) {
        self.inner
            .policy_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// Counts a policy update: accepted (`ack`) or refused (`nack`).
    pub fn policy_update(&self, accepted: bool) {
        let result = if accepted { "ack" } else { "nack" };
        self.inner
            .policy_updates_total
            .get_or_create(&UpdateLabels { result })
            .inc();
    }

    /// The current count of `levee_policy_updates_total{result}` (for tests and logs).
    pub fn policy_updates(&self, accepted: bool) -> u64 {
        let result = if accepted { "ack" } else { "nack" };
        self.inner
            .policy_updates_total
            .get(&UpdateLabels { result })
            .map_or(0, |c| c.get())
    }

    /// Sets `levee_control_plane_connected`.
    pub fn set_control_plane_connected(&self, connected: bool) {
        self.inner.control_plane_connected.set(i64::from(connected));
    }
}
