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
use future::Report;
pub use future::ResponseFuture;
pub use layer::BalanceLayer;

/// An endpoint as the balancer hands it to the gate: its address and its
/// position in the endpoint set, which lists the addresses of the gate's
/// last [`EndpointGate::set_endpoints`] in order, each once. A gate may
/// index its per-endpoint state by `at` instead of hashing the address
/// (checking the address there: while a new set is installed, the two may
/// briefly differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointRef {
    pub at: usize,
    pub addr: SocketAddr,
}

impl From<SocketAddr> for EndpointRef {
    /// An address whose position is not known (found by address).
    fn from(addr: SocketAddr) -> Self {
        EndpointRef {
            at: usize::MAX,
            addr,
        }
    }
}

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
    /// `false` while `endpoint` is ejected (or HALF_OPEN with every probe
    /// out). No side effect: the balancer asks about candidates it may not
    /// pick.
    fn is_available(&self, endpoint: EndpointRef) -> bool;
    /// Lets one attempt go to `endpoint`, the one the balancer chose; `None`
    /// when it may not take one now (HALF_OPEN, all probes out; or ejected
    /// since `is_available` said yes).
    fn begin(&self, endpoint: EndpointRef) -> Option<Pass>;
    /// The outcome of one attempt on `endpoint` that `begin` let in, which
    /// took `latency` and ended at `now`.
    fn record(
        &self,
        endpoint: EndpointRef,
        pass: Pass,
        outcome: &Outcome,
        latency: Duration,
        now: Instant,
    );
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
    fn is_available(&self, _: EndpointRef) -> bool {
        true
    }
    fn begin(&self, _: EndpointRef) -> Option<Pass> {
        Some(Pass::default())
    }
    fn record(&self, _: EndpointRef, _: Pass, _: &Outcome, _: Duration, _: Instant) {}
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
        let (_, chosen) = p2c(&set.endpoints, |at, e| candidates.admits(at, e, &[]))
            .unwrap_or((0, &set.endpoints[0]));
        Ok(chosen.clone())
    }

    /// Picks the endpoint for one attempt, avoiding `avoid` when possible,
    /// and has the gate let the attempt in. A candidate that refuses (a
    /// HALF_OPEN endpoint whose probes are all out) is left out and the pick
    /// repeated; `avoid` is the last resort before every endpoint is used
    /// regardless (with a plain pass, so the result decides nothing).
    /// Returns the endpoint, its position in the set, and the pass.
    pub fn pick_attempt(
        &self,
        avoid: Option<SocketAddr>,
    ) -> Result<(Arc<EndpointStats>, usize, Pass), ProxyError> {
        let set = self.endpoints.load();
        let all = &set.endpoints;
        let candidates = self.candidates(&set, avoid)?;
        // Only allocated when a candidate refuses (rare: HALF_OPEN probes out).
        let mut refused: Vec<SocketAddr> = Vec::new();
        while let Some((at, chosen)) = p2c(all, |at, e| candidates.admits(at, e, &refused)) {
            if let Some(pass) = self.gate.begin(chosen.at(at)) {
                return Ok((chosen.clone(), at, pass));
            }
            refused.push(chosen.addr);
        }
        if let Some((at, avoided)) = all.iter().enumerate().find(|(_, e)| Some(e.addr) == avoid)
            && self.gate.is_available(avoided.at(at))
            && let Some(pass) = self.gate.begin(avoided.at(at))
        {
            return Ok((avoided.clone(), at, pass));
        }
        let (at, any) = p2c(all, |_, _| true).unwrap_or((0, &all[0]));
        Ok((any.clone(), at, Pass::default()))
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
        let count = match gate {
            Some(g) => all
                .iter()
                .enumerate()
                .filter(|(at, e)| g.is_available(e.at(*at)))
                .count(),
            None => all.len(),
        };
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
    /// Whether the endpoint `e`, at position `at`, may be picked.
    fn admits(&self, at: usize, e: &EndpointStats, refused: &[SocketAddr]) -> bool {
        Some(e.addr) != self.avoid
            && !refused.contains(&e.addr)
            && self.gate.is_none_or(|g| g.is_available(e.at(at)))
    }
}

/// Power of two choices over the endpoints `keep` admits (given each one's
/// position and stats): the cheaper of two distinct random ones, found by
/// position without collecting them, with its position. `None` when `keep`
/// admits none.
fn p2c(
    all: &[Arc<EndpointStats>],
    keep: impl Fn(usize, &EndpointStats) -> bool,
) -> Option<(usize, &Arc<EndpointStats>)> {
    let n = all
        .iter()
        .enumerate()
        .filter(|(at, e)| keep(*at, e))
        .count();
    let mut kept = all.iter().enumerate().filter(|(at, e)| keep(*at, e));
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
        return all.iter().enumerate().find(|(at, e)| keep(*at, e));
    };
    let Some(b) = kept.nth(second - first - 1) else {
        return Some(a);
    };
    // The i-th draw is the incumbent, so ties go either way.
    let (a, b) = if i < j { (a, b) } else { (b, a) };
    Some(if b.1.load.cost() < a.1.load.cost() {
        b
    } else {
        a
    })
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
        let (chosen, at, pass) = match self.balancer.pick_attempt(avoid) {
            Ok(picked) => picked,
            Err(err) => return ResponseFuture::failed(err),
        };
        let attempts = call.attempts().clone();
        attempts.record(chosen.addr);
        let deadline = call.attempt_deadline;
        chosen.load.start();
        let future = self.inner.call(req);
        ResponseFuture::new(
            future,
            Report {
                endpoint: chosen,
                at,
                gate: self.balancer.gate.clone(),
                pass,
                deadline,
                start: Instant::now(),
                attempts,
            },
        )
    }
}

#[cfg(test)]
mod tests;
