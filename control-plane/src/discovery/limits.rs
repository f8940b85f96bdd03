//! Bounds one client cannot push past on `Discovery.Watch`: open streams
//! per peer IP and subscriptions per stream (message sizes are bounded by
//! tonic, set in `crate::start`). A refusal is `RESOURCE_EXHAUSTED` naming
//! the flag, counted in `levee_cp_watch_refused_total{reason}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tonic::Status;

use crate::metrics::Metrics;

/// The flags' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchLimits {
    /// `--max-watch-streams-per-peer` (0: no limit).
    pub streams_per_peer: usize,
    /// `--max-subscriptions-per-stream` (0: no limit).
    pub subscriptions_per_stream: usize,
}

/// Open Watch streams by peer IP.
#[derive(Debug, Default)]
pub struct PeerStreams {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted stream; uncounted when dropped.
#[derive(Debug)]
pub struct PeerSlot {
    streams: Arc<PeerStreams>,
    ip: IpAddr,
}

impl PeerStreams {
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Counting cannot be left half-done by a panic elsewhere.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new stream from `ip`, or refuses it when `ip` already has
    /// `limit` open (`limit` 0: never refuses).
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limit: usize,
        metrics: &Metrics,
    ) -> Result<PeerSlot, Status> {
        let mut open = self.lock();
        let count = open.entry(ip).or_insert(0);
        if limit != 0 && *count >= limit {
            metrics.watch_refused("streams_per_peer");
            return Err(Status::resource_exhausted(format!(
                "{ip} already has {count} open Watch streams, the most allowed per peer \
                 (--max-watch-streams-per-peer {limit})"
            )));
        }
        *count += 1;
        Ok(PeerSlot {
            streams: self.clone(),
            ip,
        })
    }

    /// Open streams from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.streams.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Refuses a subscription that would take a stream past `limit` (0: no limit).
pub fn check_subscriptions(current: usize, limit: usize, metrics: &Metrics) -> Result<(), Status> {
    if limit != 0 && current >= limit {
        metrics.watch_refused("subscriptions");
        return Err(Status::resource_exhausted(format!(
            "the stream already has {current} subscriptions, the most allowed \
             (--max-subscriptions-per-stream {limit})"
        )));
    }
    Ok(())
}

/// Counts an inbound message refused for its size (tonic ends the stream
/// with `OUT_OF_RANGE` "decoded message length too large").
pub fn note_inbound_error(status: &Status, metrics: &Metrics) {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
        metrics.watch_refused("message_too_large");
    }
}
