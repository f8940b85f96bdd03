//! The pods' fixed layout: the app's two ports, the proxy uid, the
//! sidecars' listeners, and how long start-up and one scrape may take.

use std::time::Duration;

/// The app's port that the pods intercept (transparent and explicit paths).
pub const APP_PORT: u16 = 8080;
/// The app's port that neither pod intercepts (the direct call).
pub const DIRECT_PORT: u16 = 8081;
/// `init-iptables`' default `--proxy-uid`: the sidecars run as it.
pub const PROXY_UID: u32 = 2102;
/// The sidecars' fixed listeners (the ports `init-iptables` redirects to).
pub(super) const OUTBOUND_PORT: u16 = 4140;
pub(super) const ADMIN_PORT: u16 = 4191;
/// How long one readiness call or `/metrics` scrape may take.
pub(super) const SCRAPE_DEADLINE: Duration = Duration::from_secs(5);
/// How long the pods may take to be ready.
pub(super) const STARTUP: Duration = Duration::from_secs(20);
