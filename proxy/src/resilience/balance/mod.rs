//! The balancer (DESIGN.md §2, layer 7): power of two choices over peak-EWMA
//! load, among the endpoints that endpoint health has not ejected.
//!
//! For each attempt, two distinct endpoints are drawn at random from the
//! available ones and the cheaper ([`ewma`]) gets the request. The endpoint
//! the previous attempt of the same call used (its
//! [`CallAttempts`](super::call::CallAttempts)) is left out
//! while another one is available, so a retry lands elsewhere. The choice
//! walks the endpoint set in place (count, then draw two positions), so an
//! attempt allocates nothing; while health has ejected nothing, it does not
//! ask about each endpoint either. When health
//! says every endpoint is ejected (it caps ejection, so only with one or two
//! endpoints), all of them are candidates again rather than failing the call.
//!
//! The chosen endpoint must then let the attempt in ([`EndpointGate::begin`]):
//! a HALF_OPEN endpoint admits only its `halfOpenProbes` trial calls, so a
//! refused pick moves on to another candidate. The [`Pass`] it hands out
//! travels with the attempt and comes back with its outcome.
//!
//! The chosen address is recorded in the call's attempts record (in its
//! [`CallContext`], created if the request has none), which is how the
//! service inside learns it ([`CallContext::endpoint`]). The response
//! future ([`future`]) feeds the latency to the load estimate and the
//! outcome to endpoint health.

mod endpoints;
pub mod ewma;
mod future;
mod layer;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Request;
use tokio::time::Instant;
use tower::Service;

use super::call::CallContext;
use super::classify::Outcome;
use crate::body::BoxError;
use crate::errors::{ErrorKind, ProxyError};
pub use endpoints::{EndpointSet, EndpointStats};
pub use future::ResponseFuture;
pub use layer::BalanceLayer;

/// What [`EndpointGate::begin`] granted one attempt; handed back with the
/// attempt's outcome to [`EndpointGate::record`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// `Some` for a HALF_OPEN trial call: the breaker generation it was
    /// admitted in. `None`: an ordinary call (its result counts while the
    /// endpoint is CLOSED and is ignored otherwise).
    pub probe: Option<u64>,
}

/// What the balancer asks of endpoint health (outlier ejection).
pub trait EndpointGate: Send + Sync + 'static {
    /// `false` while `addr` is ejected (or HALF_OPEN with every probe out).
    /// No side effect: the balancer asks about candidates it may not pick.
    fn is_available(&self, addr: SocketAddr) -> bool;
    /// Lets one attempt go to `addr`, the endpoint the balancer chose; `None`
    /// when it may not take one now (HALF_OPEN, all probes out; or ejected
    /// since `is_available` said yes).
    fn begin(&self, addr: SocketAddr) -> Option<Pass>;
    /// The outcome of one attempt on `addr` that `begin` let in.
    fn record(&self, addr: SocketAddr, pass: Pass, outcome: &Outcome, latency: Duration);
    /// The endpoint set changed.
    fn set_endpoints(&self, addrs: &[SocketAddr]);
    /// `true` only when every endpoint is available (nothing ejected), so
    /// the balancer may skip [`EndpointGate::is_available`]. The default
    /// always asks.
    fn none_ejected(&self) -> bool {
        false
    }
}

/// A gate that ejects nothing (no breaker configured, or tests).
#[derive(Debug, Default)]
pub struct OpenGate;

impl EndpointGate for OpenGate {
    fn is_available(&self, _: SocketAddr) -> bool {
        true
    }
    fn begin(&self, _: SocketAddr) -> Option<Pass> {
        Some(Pass::default())
    }
    fn record(&self, _: SocketAddr, _: Pass, _: &Outcome, _: Duration) {}
    fn set_endpoints(&self, _: &[SocketAddr]) {}
    fn none_ejected(&self) -> bool {
        true
    }
}

/// The balancing state of one service: its endpoints and their health.
pub struct Balancer {
    service: Arc<str>,
    endpoints: ArcSwap<EndpointSet>,
    gate: Arc<dyn EndpointGate>,
    /// Serialises endpoint-set updates (readers never wait for it).
    updating: Mutex<()>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("service", &self.service)
            .field("endpoints", &self.endpoints.load().endpoints.len())
            .finish_non_exhaustive()
    }
}

impl Balancer {
    pub fn new(service: Arc<str>, gate: Arc<dyn EndpointGate>) -> Self {
        Balancer {
            service,
            endpoints: ArcSwap::from_pointee(EndpointSet::default()),
            gate,
            updating: Mutex::new(()),
        }
    }

    /// Makes `addrs` the endpoint set (cheap when unchanged). Requests in
    /// flight to removed endpoints finish normally.
    pub fn set_endpoints(&self, addrs: &Arc<[SocketAddr]>) {
        if self.endpoints.load().is_same(addrs) {
            return;
        }
        let _one_at_a_time = self.updating.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.endpoints.load_full();
        if current.is_same(addrs) {
            return;
        }
        self.gate.set_endpoints(addrs);
        self.endpoints.store(Arc::new(current.next(addrs.clone())));
    }

    /// The addresses currently balanced over.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let set = self.endpoints.load();
        set.endpoints.iter().map(|e| e.addr).collect()
    }

    /// Picks an endpoint for a connection that is not measured (a tunnel):
    /// the same choice as [`Balancer::pick_attempt`], without a [`Pass`].
    pub fn pick(&self, avoid: Option<SocketAddr>) -> Result<Arc<EndpointStats>, ProxyError> {
        let set = self.endpoints.load();
        let candidates = self.candidates(&set, avoid)?;
        Ok(p2c(&set.endpoints, |e| candidates.admits(e, &[]))
            .unwrap_or(&set.endpoints[0])
            .clone())
    }

    /// Picks the endpoint for one attempt, avoiding `avoid` when possible,
    /// and has the gate let the attempt in. A candidate that refuses (a
    /// HALF_OPEN endpoint whose probes are all out) is left out and the pick
    /// repeated; `avoid` is the last resort before every endpoint is used
    /// regardless (with a plain pass, so the result decides nothing).
    pub fn pick_attempt(
        &self,
        avoid: Option<SocketAddr>,
    ) -> Result<(Arc<EndpointStats>, Pass), ProxyError> {
        let set = self.endpoints.load();
        let all = &set.endpoints;
        let candidates = self.candidates(&set, avoid)?;
        // Only allocated when a candidate refuses (rare: HALF_OPEN probes out).
        let mut refused: Vec<SocketAddr> = Vec::new();
        while let Some(chosen) = p2c(all, |e| candidates.admits(e, &refused)) {
            if let Some(pass) = self.gate.begin(chosen.addr) {
                return Ok((chosen.clone(), pass));
            }
            refused.push(chosen.addr);
        }
        if let Some(avoided) = all.iter().find(|e| Some(e.addr) == avoid)
            && self.gate.is_available(avoided.addr)
            && let Some(pass) = self.gate.begin(avoided.addr)
        {
            return Ok((avoided.clone(), pass));
        }
        let any = p2c(all, |_| true).unwrap_or(&all[0]);
        Ok((any.clone(), Pass::default()))
    }

    /// Which endpoints an attempt may go to: the available ones (all when
    /// none is), without `avoid` while another is left. Errs when the set
    /// is empty.
    fn candidates<'a>(
        &'a self,
        set: &EndpointSet,
        avoid: Option<SocketAddr>,
    ) -> Result<Candidates<'a>, ProxyError> {
        let all = &set.endpoints;
        if all.is_empty() {
            return Err(ProxyError::new(
                ErrorKind::NoEndpoints,
                &*self.service,
                "the service has no endpoints",
            ));
        }
        let gate = (!self.gate.none_ejected()).then_some(&*self.gate);
        let available = |e: &EndpointStats| gate.is_none_or(|g| g.is_available(e.addr));
        let count = all.iter().filter(|e| available(e)).count();
        let gate = if count == 0 { None } else { gate };
        let avoid = avoid.filter(|a| {
            let left = if gate.is_some() { count } else { all.len() };
            left > 1 && all.iter().any(|e| e.addr == *a)
        });
        Ok(Candidates { gate, avoid })
    }
}

/// The rule [`Balancer::candidates`] settled on for one pick.
struct Candidates<'a> {
    /// Ask this gate about each endpoint (`None`: every endpoint qualifies,
    /// because nothing is ejected or everything is).
    gate: Option<&'a dyn EndpointGate>,
    avoid: Option<SocketAddr>,
}

impl Candidates<'_> {
    fn admits(&self, e: &EndpointStats, refused: &[SocketAddr]) -> bool {
        Some(e.addr) != self.avoid
            && !refused.contains(&e.addr)
            && self.gate.is_none_or(|g| g.is_available(e.addr))
    }
}

/// Power of two choices over the endpoints `keep` admits: the cheaper of
/// two distinct random ones, found by position without collecting them.
/// `None` when `keep` admits none.
fn p2c(
    all: &[Arc<EndpointStats>],
    keep: impl Fn(&EndpointStats) -> bool,
) -> Option<&Arc<EndpointStats>> {
    let n = all.iter().filter(|e| keep(e)).count();
    let mut kept = all.iter().filter(|e| keep(e));
    if n <= 1 {
        return kept.next();
    }
    let i = rand::random_range(0..n);
    let mut j = rand::random_range(0..n - 1);
    if j >= i {
        j += 1;
    }
    let (first, second) = (i.min(j), i.max(j));
    // Availability may change between the two walks: fall back to what is there.
    let Some(a) = kept.nth(first) else {
        return all.iter().find(|e| keep(e));
    };
    let Some(b) = kept.nth(second - first - 1) else {
        return Some(a);
    };
    // The i-th draw is the incumbent, so ties go either way.
    let (a, b) = if i < j { (a, b) } else { (b, a) };
    Some(if b.load.cost() < a.load.cost() { b } else { a })
}

/// Sends each request to the endpoint [`Balancer`] picks.
#[derive(Clone, Debug)]
pub struct Balance<S> {
    inner: S,
    balancer: Arc<Balancer>,
}

impl<S> Balance<S> {
    pub fn new(inner: S, balancer: Arc<Balancer>) -> Self {
        Balance { inner, balancer }
    }
}

impl<S, B, R> Service<Request<B>> for Balance<S>
where
    S: Service<Request<B>, Response = http::Response<R>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The call's record carries the choice (every outbound call has one;
        // another request gets one here).
        let call = CallContext::of(&mut req);
        let avoid = call.attempts().last();
        let (chosen, pass) = match self.balancer.pick_attempt(avoid) {
            Ok(picked) => picked,
            Err(err) => return ResponseFuture::failed(err),
        };
        call.attempts().record(chosen.addr);
        let deadline = call.attempt_deadline;
        chosen.load.start();
        let future = self.inner.call(req);
        ResponseFuture::new(
            future,
            chosen,
            self.balancer.gate.clone(),
            pass,
            deadline,
            Instant::now(),
        )
    }
}

#[cfg(test)]
mod tests;
