//! Services' cluster IPs (virtual IPs) for discovery by address.
//!
//! The translation keeps every Service's `spec.clusterIPs` (both families on
//! a dual-stack Service) in [`Translated::virtual_ips`]. The Discovery
//! protocol gains the fields that carry them (`EndpointsSpec.virtual_ips`,
//! `ServiceUpdate` 7/8) on the addr-discovery branch; until those exist this
//! is the ONE place they will be handed over, and it only records them.
//!
//! [`Translated::virtual_ips`]: super::translate::Translated::virtual_ips

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::translate::ObjectName;

/// HAND-OVER POINT (addr-discovery): pass `virtual_ips` to the registry here
/// once `EndpointsSpec` has field 4 `virtual_ips`. Today: a debug log only,
/// so proxies see exactly what the redb mode sends.
pub fn hand_to_discovery(virtual_ips: &BTreeMap<ObjectName, Vec<IpAddr>>) {
    tracing::debug!(
        services = virtual_ips.len(),
        "virtual IPs translated (not sent: the protocol has no field for them yet)"
    );
}
