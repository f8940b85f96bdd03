//! The bulkhead: at most `maxInFlight` calls at once, `maxQueued` more
//! waiting in FIFO order, and beyond that `503 overloaded` at once (never an
//! unbounded wait; the request timeout bounds the queued wait too).
//!
//! [`Bulkhead`] is the shared state of one service (outbound) or of the
//! local app (inbound); [`ConcurrencyLayer`] applies it as tower middleware.
//! A slot is held until the response head arrives (as tower's
//! `ConcurrencyLimit`), not while the body streams.

mod future;
mod layer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use levee_proto::policy::EffectiveConcurrency;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

pub use future::ResponseFuture;
pub use layer::{ConcurrencyLayer, ConcurrencyService};

use crate::errors::{ErrorKind, ProxyError};
use crate::metrics::{Direction, Metrics};

/// A slot waiting for a permit.
pub type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// In-flight slots plus a bounded queue.
#[derive(Debug)]
pub struct Bulkhead {
    cfg: EffectiveConcurrency,
    permits: Arc<Semaphore>,
    /// Calls waiting now (bounded by `max_queued`).
    queued: Arc<AtomicUsize>,
    service: String,
    /// `levee_rejected_total{reason="overloaded"}`.
    rejected: Counter,
}

/// What [`Bulkhead::try_acquire`] got.
pub enum Admission {
    /// A slot, now.
    Now(OwnedSemaphorePermit),
    /// A place in the queue: await the slot.
    Queued(QueueSlot, Acquire),
}

/// A place in the queue, given back when dropped (served or given up).
#[derive(Debug)]
pub struct QueueSlot(Arc<AtomicUsize>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    pub fn new(
        cfg: &EffectiveConcurrency,
        direction: Direction,
        service: &str,
        metrics: &Metrics,
    ) -> Bulkhead {
        let slots = usize::try_from(cfg.max_in_flight.max(1)).unwrap_or(usize::MAX);
        Bulkhead {
            cfg: *cfg,
            permits: Arc::new(Semaphore::new(slots.min(Semaphore::MAX_PERMITS))),
            queued: Arc::new(AtomicUsize::new(0)),
            service: service.to_owned(),
            rejected: metrics.rejected(direction, service, ErrorKind::Overloaded.as_str()),
        }
    }

    /// The config this bulkhead enforces (to keep it across unchanged updates).
    pub fn config(&self) -> &EffectiveConcurrency {
        &self.cfg
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        let slots = usize::try_from(self.cfg.max_in_flight.max(1)).unwrap_or(usize::MAX);
        slots.saturating_sub(self.permits.available_permits())
    }

    /// Calls waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// A slot now, a place in the queue, or the `503 overloaded` error.
    pub fn try_acquire(&self) -> Result<Admission, ProxyError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(Admission::Now(permit));
        }
        let limit = usize::try_from(self.cfg.max_queued).unwrap_or(usize::MAX);
        let queued = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        if queued.is_err() {
            self.rejected.inc();
            return Err(ProxyError::new(
                ErrorKind::Overloaded,
                &*self.service,
                format!(
                    "{} calls in flight and {} queued: the concurrency limit is reached",
                    self.cfg.max_in_flight, self.cfg.max_queued
                ),
            ));
        }
        let slot = QueueSlot(self.queued.clone());
        Ok(Admission::Queued(
            slot,
            Box::pin(self.permits.clone().acquire_owned()),
        ))
    }

    /// Waits for a slot (within the queue bound) or fails with `503 overloaded`.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, ProxyError> {
        match self.try_acquire()? {
            Admission::Now(permit) => Ok(permit),
            Admission::Queued(slot, acquire) => {
                let permit = acquire.await.map_err(|_| self.closed())?;
                drop(slot);
                Ok(permit)
            }
        }
    }

    /// The semaphore is never closed; should it be, callers get overloaded.
    pub(crate) fn closed(&self) -> ProxyError {
        ProxyError::new(
            ErrorKind::Overloaded,
            &*self.service,
            "the concurrency limit is closed",
        )
    }
}

#[cfg(test)]
mod tests;
