//! [`OwnListeners`]: the addresses this proxy's listeners answer on, and
//! whether a connect target is one of them.
//!
//! Addresses are compared after resolution, as the socket addresses a
//! connect would use — never as text — so every spelling of one address is
//! the same address: `localhost` and `127.1` arrive here as `127.0.0.1`,
//! and an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is read as its
//! IPv4 address. A target on a listener's port is one of its own when:
//! - it is the listener's address;
//! - it is the unspecified address (`0.0.0.0`, `::`): connecting there
//!   reaches the local host;
//! - the listener is bound to a wildcard (`0.0.0.0`, `::`), which owns its
//!   port on every local address: all of loopback (`127.0.0.0/8`, `::1`)
//!   and every address of the host's interfaces.
//!
//! A wildcard listener owns its port on local addresses of both families:
//! a `::` listener takes IPv4 too (dual stack), and erring on the side of
//! refusal costs nothing on a port the proxy itself holds.
//!
//! Interface addresses are read with `getifaddrs` (the `if-addrs` crate),
//! only for a target on a wildcard listener's port that is not loopback,
//! and kept for [`INTERFACES_TTL`] so a busy path pays no system call per
//! request while an address added later is still seen.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

/// How long a reading of the host's interface addresses is used.
pub const INTERFACES_TTL: Duration = Duration::from_secs(5);

/// The bound addresses of this proxy's listeners (outbound, inbound,
/// admin). Empty by default: then no target is refused.
#[derive(Debug, Default)]
pub struct OwnListeners {
    bound: Vec<SocketAddr>,
    interfaces: Interfaces,
}

impl OwnListeners {
    /// The listeners bound to `bound` (as `local_addr` reports them).
    pub fn new(bound: impl IntoIterator<Item = SocketAddr>) -> Self {
        OwnListeners {
            bound: bound.into_iter().collect(),
            interfaces: Interfaces::default(),
        }
    }

    /// The listener that connecting to `target` would reach, if any.
    pub fn reached_by(&self, target: SocketAddr) -> Option<SocketAddr> {
        reached_by(&self.bound, target, |ip| self.interfaces.contains(ip))
    }
}

/// Whether connecting to `target` reaches the listener bound to `listener`,
/// by the same rule as [`OwnListeners::reached_by`], reading the host's
/// interfaces afresh when the answer depends on them (for checks off the
/// request path, such as a control-plane update's endpoints).
pub fn reaches(target: SocketAddr, listener: SocketAddr) -> bool {
    reached_by(&[listener], target, |ip| {
        if_addrs::get_if_addrs()
            .is_ok_and(|interfaces| interfaces.iter().any(|i| i.ip().to_canonical() == ip))
    })
    .is_some()
}

/// [`OwnListeners::reached_by`] with the interface lookup given, so the
/// rule is tested without depending on the host's addresses.
pub(super) fn reached_by(
    bound: &[SocketAddr],
    target: SocketAddr,
    on_interface: impl Fn(IpAddr) -> bool,
) -> Option<SocketAddr> {
    let ip = target.ip().to_canonical();
    let mut on_port = bound.iter().filter(|l| l.port() == target.port());
    on_port
        .find(|listener| {
            let own = listener.ip().to_canonical();
            ip == own
                || ip.is_unspecified()
                || (own.is_unspecified() && (ip.is_loopback() || on_interface(ip)))
        })
        .copied()
}

/// The host's interface addresses, re-read at most every [`INTERFACES_TTL`].
#[derive(Debug)]
struct Interfaces {
    /// The last reading and when it was taken.
    current: ArcSwap<Reading>,
    /// Held by the one caller re-reading; the others use the old reading.
    refreshing: Mutex<()>,
}

#[derive(Debug)]
struct Reading {
    at: Option<Instant>,
    addrs: Vec<IpAddr>,
}

impl Default for Interfaces {
    fn default() -> Self {
        Interfaces {
            current: ArcSwap::from_pointee(Reading {
                at: None,
                addrs: Vec::new(),
            }),
            refreshing: Mutex::new(()),
        }
    }
}

impl Interfaces {
    fn contains(&self, ip: IpAddr) -> bool {
        let reading = self.current();
        reading.addrs.iter().any(|a| a.to_canonical() == ip)
    }

    fn current(&self) -> Arc<Reading> {
        let reading = self.current.load_full();
        let fresh = reading.at.is_some_and(|at| at.elapsed() < INTERFACES_TTL);
        if fresh {
            return reading;
        }
        let _one_reader = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return reading,
        };
        let addrs = match if_addrs::get_if_addrs() {
            Ok(interfaces) => interfaces.into_iter().map(|i| i.ip()).collect(),
            Err(error) => {
                // Keep the last reading; loopback and wildcards still count.
                tracing::warn!(%error, "reading the host's interface addresses");
                reading.addrs.clone()
            }
        };
        let fresh = Arc::new(Reading {
            at: Some(Instant::now()),
            addrs,
        });
        self.current.store(fresh.clone());
        fresh
    }
}
