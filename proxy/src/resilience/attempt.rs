//! Request extensions that describe the attempts of one call.
//!
//! - [`CallAttempts`]: the one record of a call's attempts, shared by every
//!   attempt's copy of the request. Written where the endpoint is chosen
//!   (the balancer, or the outbound tunnel path); read by the balancer (a
//!   retry avoids the previous endpoint), the attempt spans (their number),
//!   the logical span (`levee.attempts`) and the access log (`attempts`,
//!   `endpoint`).
//! - [`AttemptDeadline`]: when this attempt gives up (per-try timeout or the
//!   request deadline, whichever is sooner). The retry layer enforces it; a
//!   layer inside whose future is dropped at or after it may count the drop
//!   as a timeout rather than a caller hang-up.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::Request;
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

/// How many attempts one call sent and where the last one went. Clones
/// share the record (one allocation per call).
#[derive(Clone, Debug, Default)]
pub struct CallAttempts(Arc<Record>);

#[derive(Debug, Default)]
struct Record {
    count: AtomicU32,
    last: Mutex<Option<SocketAddr>>,
}

impl CallAttempts {
    /// The record `req` carries, inserted first if it has none.
    pub fn of<B>(req: &mut Request<B>) -> CallAttempts {
        if let Some(found) = req.extensions().get::<CallAttempts>() {
            return found.clone();
        }
        let attempts = CallAttempts::default();
        req.extensions_mut().insert(attempts.clone());
        attempts
    }

    /// Notes an attempt sent to `endpoint`; returns its number (1 for the first).
    pub fn record(&self, endpoint: SocketAddr) -> u32 {
        // Written under the lock so `count` and `last` always agree.
        let mut last = self.0.last.lock().unwrap_or_else(PoisonError::into_inner);
        *last = Some(endpoint);
        self.0.count.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Notes an attempt in `req`'s record, if it carries one.
    pub fn record_in<B>(req: &Request<B>, endpoint: SocketAddr) {
        if let Some(attempts) = req.extensions().get::<CallAttempts>() {
            attempts.record(endpoint);
        }
    }

    /// Attempts sent so far.
    pub fn count(&self) -> u32 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// The endpoint of the latest attempt, if any.
    pub fn last(&self) -> Option<SocketAddr> {
        *self.0.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_a_request_share_one_record() {
        let mut req = Request::new(());
        let attempts = CallAttempts::of(&mut req);
        let mut copy = Request::new(());
        *copy.extensions_mut() = req.extensions().clone();
        assert_eq!(attempts.record("10.0.0.1:80".parse().expect("addr")), 1);
        CallAttempts::record_in(&copy, "10.0.0.2:80".parse().expect("addr"));
        let seen = CallAttempts::of(&mut copy);
        assert_eq!(seen.count(), 2);
        assert_eq!(seen.last(), Some("10.0.0.2:80".parse().expect("addr")));
        // A request without a record is left alone.
        CallAttempts::record_in(&Request::new(()), "10.0.0.3:80".parse().expect("addr"));
        assert_eq!(attempts.count(), 2);
    }
}
