//! Scenario 3's measurement of one contender: RSS idle, with many idle
//! keep-alive connections open, and how long it takes to come back after
//! they close.

use std::time::Duration;

use super::contenders::Contender;
use super::load::{self, LoadSpec, Protocol};
use super::report::{MIB, MemoryRow};

/// Idle RSS, then RSS with `n` idle keep-alive connections open, then how
/// long RSS takes to come back after they close (at most `settle_for`).
pub async fn measure(c: &Contender, n: usize, settle_for: Duration) -> MemoryRow {
    let idle = c.usage.rss();
    let target = LoadSpec {
        target: c.addr,
        authority: c.authority.clone(),
        protocol: Protocol::Http1,
        connections: n,
        rate: None,
        warmup: Duration::ZERO,
        duration: Duration::ZERO,
    };
    let (conns, errors) = load::open_idle(&target, n).await;
    let with = c.usage.rss();
    drop(conns);
    let after = settle(c, idle, settle_for).await;
    MemoryRow {
        contender: c.name.to_owned(),
        rss_idle_mib: idle as f64 / MIB,
        idle_connections: n,
        rss_with_connections_mib: with as f64 / MIB,
        connection_errors: errors,
        rss_after_mib: after.rss as f64 / MIB,
        settled_after: after.settled_after.map(|d| d.as_secs_f64()),
    }
}

/// Where RSS went once the burst's connections were closed.
struct Settled {
    /// RSS at the end of the wait (or when it settled).
    rss: u64,
    /// How long after the close RSS was back within [`SETTLED_WITHIN`] of the
    /// pre-burst figure (`None`: not within `limit`).
    settled_after: Option<Duration>,
}

/// "Back to normal" after a burst: within 2 MiB of the pre-burst RSS.
const SETTLED_WITHIN: u64 = 2 * 1024 * 1024;

/// Samples RSS every 250 ms for up to `limit` after the burst's connections
/// closed, until it is back within [`SETTLED_WITHIN`] of `before`.
async fn settle(c: &Contender, before: u64, limit: Duration) -> Settled {
    let closed = tokio::time::Instant::now();
    loop {
        let rss = c.usage.rss();
        if rss <= before + SETTLED_WITHIN {
            return Settled {
                rss,
                settled_after: Some(closed.elapsed()),
            };
        }
        if closed.elapsed() >= limit {
            return Settled {
                rss,
                settled_after: None,
            };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
