//! [`CallContext`]: the one request extension through which the layers of a
//! call hand down what the layers inside need. One extension rather than one
//! per value: each `http::Extensions` entry is a `Box` (and a rehash of the
//! map), and the retry layer's copy of the head clones every entry again.
//!
//! - [`CallAttempts`]: the one record of a call's attempts, shared by every
//!   attempt's copy of the request. Written where the endpoint is chosen
//!   (the balancer, or the outbound tunnel path); read by the balancer (a
//!   retry avoids the previous endpoint), the forwarder (where to send:
//!   [`CallContext::endpoint`]), the attempt spans (their number), the
//!   logical span (`levee.attempts`) and the access log (`attempts`,
//!   `endpoint`).
//! - The request deadline (`CallContext::deadline`): when the whole call
//!   must be answered by; set by the request timeout layer, read by the
//!   retry layer (no attempt starts after it) and the breaker.
//! - [`AttemptDeadline`]: when this attempt gives up (per-try timeout or the
//!   request deadline, whichever is sooner). The retry layer sets it on each
//!   attempt's copy; a layer inside whose future is dropped at or after it
//!   may count the drop as a timeout rather than a caller hang-up.
//! - The connect timeout (policy `timeouts.connect`) the forwarder uses
//!   instead of `--connect-timeout`.
//!
//! The attempts record also keeps the outcome of the latest attempt's
//! response head, classified once by the balancer ([`CallAttempts::outcome`]):
//! the retry layer and the service breaker read it instead of reading the
//! response's `x-levee-error` and `grpc-status` headers again.
//!
//! The attempts record also says when the retry layer's per-try timer,
//! sooner than the request deadline, is armed ([`SoonerTimer`]): the
//! request timeout layer then leaves its own timer out of the timer wheel
//! (the per-try one wakes the call first), so an attempt arms one timer,
//! not two.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::Request;
use tokio::time::Instant;

use super::classify::Outcome;

/// What the layers of one call hand down (a request extension). Cloned with
/// the request head by the retry layer: the attempts record stays shared,
/// the other fields are the copy's own.
#[derive(Clone, Debug, Default)]
pub struct CallContext {
    /// The call's attempts (`None` until a layer needs one: allocated once).
    pub attempts: Option<CallAttempts>,
    /// When the whole call must be answered by (the request timeout layer).
    pub deadline: Option<Instant>,
    /// When the attempt this copy is gives up (the retry layer).
    pub attempt_deadline: Option<AttemptDeadline>,
    /// The connect timeout for this request's endpoint (policy
    /// `timeouts.connect`), instead of the pool's `--connect-timeout`.
    pub connect_timeout: Option<Duration>,
}

impl CallContext {
    /// The context `req` carries, if any.
    pub fn get<B>(req: &Request<B>) -> Option<&CallContext> {
        req.extensions().get::<CallContext>()
    }

    /// The context `req` carries, inserted first (empty) if it has none.
    pub fn of<B>(req: &mut Request<B>) -> &mut CallContext {
        req.extensions_mut().get_or_insert_default::<CallContext>()
    }

    /// The endpoint the latest attempt of `req`'s call went to (where the
    /// balancer sent this one); `None` when no endpoint was chosen.
    pub fn endpoint<B>(req: &Request<B>) -> Option<SocketAddr> {
        CallContext::get(req)?.attempts.as_ref()?.last()
    }

    /// The call's attempts record, created first if it has none.
    pub fn attempts(&mut self) -> &CallAttempts {
        self.attempts.get_or_insert_default()
    }
}

/// When the current attempt times out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptDeadline(pub Instant);

impl AttemptDeadline {
    /// Whether a future dropped now was dropped by this deadline.
    pub fn has_passed(&self) -> bool {
        Instant::now() >= self.0
    }

    /// The deadline of `req`'s attempt, if it has one.
    pub fn of<B>(req: &Request<B>) -> Option<AttemptDeadline> {
        CallContext::get(req)?.attempt_deadline
    }
}

/// How many attempts one call sent and where the last one went (and
/// whether a [`SoonerTimer`] is armed). Clones share the record (one
/// allocation per call).
#[derive(Clone, Debug, Default)]
pub struct CallAttempts(Arc<Record>);

#[derive(Debug, Default)]
struct Record {
    count: AtomicU32,
    last: Mutex<Last>,
    /// A [`SoonerTimer`] is alive.
    sooner_timer: AtomicBool,
}

/// The latest attempt: where it went and, once its response head (or
/// error) arrived, what the balancer classified it as.
#[derive(Debug, Default)]
struct Last {
    endpoint: Option<SocketAddr>,
    outcome: Option<Outcome>,
}

/// While alive: a timer inside the request timeout layer, set sooner than
/// the call's request deadline, is armed and will wake the call before
/// that deadline (the retry layer's per-try timeout). The request timeout
/// layer does not register its own timer meanwhile; when this is dropped
/// (the attempt ended) it does, at its next poll. One call, one task: the
/// per-try timer wakes the same task the request timeout runs in.
#[derive(Debug)]
pub struct SoonerTimer<'a>(&'a CallAttempts);

impl Drop for SoonerTimer<'_> {
    fn drop(&mut self) {
        self.0.0.sooner_timer.store(false, Ordering::Relaxed);
    }
}

impl CallAttempts {
    /// The record `req` carries, inserted first if it has none.
    pub fn of<B>(req: &mut Request<B>) -> CallAttempts {
        CallContext::of(req).attempts().clone()
    }

    /// Notes an attempt sent to `endpoint`; returns its number (1 for the first).
    pub fn record(&self, endpoint: SocketAddr) -> u32 {
        // Written under the lock so `count` and `last` always agree; a new
        // attempt has no outcome yet.
        let mut last = self.0.last.lock().unwrap_or_else(PoisonError::into_inner);
        *last = Last {
            endpoint: Some(endpoint),
            outcome: None,
        };
        self.0.count.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Notes how the latest attempt ended (the balancer, when its response
    /// head or error arrived).
    pub fn set_outcome(&self, outcome: Outcome) {
        self.0
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .outcome = Some(outcome);
    }

    /// How the latest attempt ended, if it ended through the balancer:
    /// `None` while it runs and for a call whose attempt went elsewhere.
    /// A response that came back from the latest attempt has this outcome,
    /// i.e. `classify_response` of its head; readers fall back to that
    /// when this is `None`.
    pub fn outcome(&self) -> Option<Outcome> {
        self.0
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .outcome
    }

    /// Notes an attempt in `req`'s record, if it carries one.
    pub fn record_in<B>(req: &Request<B>, endpoint: SocketAddr) {
        if let Some(attempts) = CallContext::get(req).and_then(|c| c.attempts.as_ref()) {
            attempts.record(endpoint);
        }
    }

    /// Notes that a timer sooner than the request deadline is armed until
    /// the returned guard is dropped.
    pub fn arm_sooner_timer(&self) -> SoonerTimer<'_> {
        self.0.sooner_timer.store(true, Ordering::Relaxed);
        SoonerTimer(self)
    }

    /// Whether a [`SoonerTimer`] is alive.
    pub fn sooner_timer_armed(&self) -> bool {
        self.0.sooner_timer.load(Ordering::Relaxed)
    }

    /// Attempts sent so far.
    pub fn count(&self) -> u32 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// The endpoint of the latest attempt, if any.
    pub fn last(&self) -> Option<SocketAddr> {
        self.0
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .endpoint
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
        assert_eq!(
            CallContext::endpoint(&req),
            Some("10.0.0.2:80".parse().expect("addr"))
        );
        // A request without a record is left alone.
        CallAttempts::record_in(&Request::new(()), "10.0.0.3:80".parse().expect("addr"));
        assert_eq!(attempts.count(), 2);
        assert_eq!(CallContext::endpoint(&Request::new(())), None);
    }

    #[test]
    fn the_outcome_is_the_latest_attempts_and_a_new_attempt_clears_it() {
        let attempts = CallAttempts::default();
        assert_eq!(attempts.outcome(), None);
        attempts.record("10.0.0.1:80".parse().expect("addr"));
        assert_eq!(attempts.outcome(), None);
        attempts.set_outcome(Outcome::HttpStatus(503));
        assert_eq!(attempts.outcome(), Some(Outcome::HttpStatus(503)));
        // A copy of the record sees it; the next attempt starts without one.
        assert_eq!(attempts.clone().outcome(), Some(Outcome::HttpStatus(503)));
        attempts.record("10.0.0.2:80".parse().expect("addr"));
        assert_eq!(attempts.outcome(), None);
        assert_eq!(attempts.last(), Some("10.0.0.2:80".parse().expect("addr")));
    }

    #[test]
    fn a_copy_keeps_its_own_deadlines() {
        let mut req = Request::new(());
        let now = Instant::now();
        CallContext::of(&mut req).deadline = Some(now + Duration::from_secs(5));
        let mut copy = Request::new(());
        *copy.extensions_mut() = req.extensions().clone();
        let attempt = AttemptDeadline(now + Duration::from_secs(1));
        CallContext::of(&mut copy).attempt_deadline = Some(attempt);
        assert_eq!(AttemptDeadline::of(&copy), Some(attempt));
        assert_eq!(AttemptDeadline::of(&req), None);
        assert_eq!(
            CallContext::get(&copy).and_then(|c| c.deadline),
            Some(now + Duration::from_secs(5))
        );
    }
}
