//! The content version of a snapshot: equal content, equal version, on
//! every replica and across restarts.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use levee_proto::policy::{AppProtocol, ResiliencePolicy, SpiffeId};

/// `<policy revision>-<hash of policy and endpoints>`; the hash is FNV-1a
/// (stable across builds and restarts, unlike `DefaultHasher`).
pub(super) fn version(
    policy_revision: u64,
    policy: Option<&ResiliencePolicy>,
    endpoints: &[SocketAddr],
    (app_protocol, virtual_ips, identities): (
        Option<AppProtocol>,
        &[IpAddr],
        &BTreeMap<SocketAddr, SpiffeId>,
    ),
) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    if let Some(policy) = policy {
        feed(serde_json::to_string(policy).unwrap_or_default().as_bytes());
    }
    feed(b"\0");
    for e in endpoints {
        feed(e.to_string().as_bytes());
        feed(b",");
    }
    // Only when set: versions of services that declare neither stay as they were.
    if app_protocol.is_some() || !virtual_ips.is_empty() {
        feed(b"\0");
        feed(app_protocol.map_or("", AppProtocol::as_str).as_bytes());
        for ip in virtual_ips {
            feed(b",");
            feed(ip.to_string().as_bytes());
        }
    }
    if !identities.is_empty() {
        feed(b"\0");
        for (addr, id) in identities {
            feed(addr.to_string().as_bytes());
            feed(b"=");
            feed(id.as_str().as_bytes());
            feed(b",");
        }
    }
    format!("{policy_revision}-{:08x}", hash >> 32)
}
