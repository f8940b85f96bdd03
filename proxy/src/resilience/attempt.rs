//! Request extensions the retry layer hands to the layers inside it, one
//! attempt at a time.
//!
//! - [`AttemptDeadline`]: when this attempt gives up (per-try timeout or the
//!   request deadline, whichever is sooner). The retry layer enforces it; a
//!   layer inside whose future is dropped at or after it may count the drop
//!   as a timeout rather than a caller hang-up.
//! - [`AttemptTrace`]: shared by all attempts of one call; the balancer notes
//!   the endpoint it chose, so the next attempt prefers another one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

/// When the current attempt times out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptDeadline(pub Instant);

impl AttemptDeadline {
    /// Whether a future dropped now was dropped by this deadline.
    pub fn has_passed(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// The endpoints the attempts of one call went to, oldest first.
#[derive(Clone, Debug, Default)]
pub struct AttemptTrace {
    endpoints: Arc<Mutex<Vec<SocketAddr>>>,
}

impl AttemptTrace {
    /// Notes the endpoint an attempt was sent to.
    pub fn record(&self, addr: SocketAddr) {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        endpoints.push(addr);
    }

    /// The endpoint of the previous attempt, if any.
    pub fn last(&self) -> Option<SocketAddr> {
        let endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        endpoints.last().copied()
    }

    /// Every endpoint tried so far.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
