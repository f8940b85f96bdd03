//! Per-route request metrics: the label handles of one
//! (direction, service, route) resolved once and reused by every request.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::labels::{Direction, RequestLabels, RouteLabels};

/// Distinct (code, outcome) pairs kept per route; more are still counted,
/// just through the family's own (hashing) lookup.
const MAX_CODES_PER_ROUTE: usize = 32;

/// Routes whose handles are cached; beyond this, handles are built per call
/// (and their series are not removed with their destination). Outbound
/// destinations are bounded and forgotten with their routes
/// ([`super::Metrics::forget_destination`]), so this is only a backstop.
pub(super) const MAX_CACHED_ROUTES: usize = 65_536;

pub(super) type DurationFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Records the result of requests on one (direction, service, route).
/// Cheap to clone; obtain it with [`super::Metrics::requests`].
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    inner: Arc<RouteHandles>,
}

#[derive(Debug)]
struct RouteHandles {
    labels: RouteLabels,
    /// This route's histogram, resolved once.
    duration: Histogram,
    /// The family, to add counters for codes not seen yet.
    totals: Family<RequestLabels, Counter>,
    /// Counters by (code, outcome): a handful per route, scanned linearly.
    codes: RwLock<Vec<(Arc<str>, &'static str, Counter)>>,
    /// (code, outcome) series beyond `codes`, remembered so
    /// [`RequestMetrics::remove_series`] finds them.
    more_codes: Mutex<HashSet<(Arc<str>, &'static str)>>,
    /// Its series were removed (its destination was forgotten): requests
    /// still in flight count into the handles but create no new series.
    removed: AtomicBool,
}

impl RequestMetrics {
    pub(super) fn new(
        labels: RouteLabels,
        durations: &DurationFamily,
        totals: &Family<RequestLabels, Counter>,
    ) -> Self {
        let duration = durations.get_or_create_owned(&labels);
        RequestMetrics {
            inner: Arc::new(RouteHandles {
                labels,
                duration,
                totals: totals.clone(),
                codes: RwLock::new(Vec::new()),
                more_codes: Mutex::default(),
                removed: AtomicBool::new(false),
            }),
        }
    }

    /// Removes this route's series (duration and every code) from the
    /// families; the handles keep working but are no longer exported.
    pub(super) fn remove_series(&self, durations: &DurationFamily) {
        let inner = &self.inner;
        // Under the codes lock, so no code is added after this look.
        let codes = inner.codes.write().unwrap_or_else(PoisonError::into_inner);
        inner.removed.store(true, Ordering::Release);
        durations.remove(&inner.labels);
        let more = inner
            .more_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let all = codes
            .iter()
            .map(|(code, outcome, _)| (code, *outcome))
            .chain(more.iter().map(|(code, outcome)| (code, *outcome)));
        for (code, outcome) in all {
            inner.totals.remove(&RequestLabels {
                direction: inner.labels.direction,
                service: inner.labels.service.clone(),
                route: inner.labels.route.clone(),
                code: code.clone(),
                outcome,
            });
        }
    }

    /// Counts one finished request: `code` is the HTTP status or gRPC code,
    /// `outcome` its classification (see [`super::outcome`]).
    pub fn record(&self, code: &str, outcome: &'static str, elapsed: Duration) {
        self.inner.duration.observe(elapsed.as_secs_f64());
        self.inner.count(code, outcome);
    }
}

impl RouteHandles {
    fn count(&self, code: &str, outcome: &'static str) {
        {
            let codes = self.codes.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, _, counter)) =
                codes.iter().find(|(c, o, _)| **c == *code && *o == outcome)
            {
                counter.inc();
                return;
            }
        }
        let mut codes = self.codes.write().unwrap_or_else(PoisonError::into_inner);
        // Another request may have added it between the two locks.
        if let Some((_, _, counter)) = codes.iter().find(|(c, o, _)| **c == *code && *o == outcome)
        {
            counter.inc();
            return;
        }
        if self.removed.load(Ordering::Acquire) {
            return;
        }
        let code: Arc<str> = Arc::from(code);
        let counter = self.totals.get_or_create_owned(&RequestLabels {
            direction: self.labels.direction,
            service: self.labels.service.clone(),
            route: self.labels.route.clone(),
            code: code.clone(),
            outcome,
        });
        counter.inc();
        if codes.len() < MAX_CODES_PER_ROUTE {
            codes.push((code, outcome, counter));
        } else {
            self.more_codes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((code, outcome));
        }
    }
}

/// The cache behind [`super::Metrics::requests`]: per direction, service → route → handles.
#[derive(Debug, Default)]
pub(super) struct RouteCache {
    by_direction: [RwLock<Routes>; 2],
}

#[derive(Debug, Default)]
struct Routes {
    by_service: HashMap<Box<str>, HashMap<Box<str>, RequestMetrics>>,
    /// Routes cached over all services.
    len: usize,
}

impl RouteCache {
    pub(super) fn get(
        &self,
        direction: Direction,
        service: &str,
        route: &str,
    ) -> Option<RequestMetrics> {
        let map = self.by_direction[direction.index()]
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.by_service.get(service)?.get(route).cloned()
    }

    /// Inserts `make()` unless the route is cached already or the cache is full.
    pub(super) fn get_or_insert(
        &self,
        direction: Direction,
        service: &str,
        route: &str,
        make: impl FnOnce() -> RequestMetrics,
    ) -> RequestMetrics {
        let mut map = self.by_direction[direction.index()]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = map
            .by_service
            .get(service)
            .and_then(|routes| routes.get(route))
        {
            return found.clone();
        }
        let made = make();
        if map.len < MAX_CACHED_ROUTES {
            map.by_service
                .entry(service.into())
                .or_default()
                .insert(route.into(), made.clone());
            map.len += 1;
        }
        made
    }

    /// Takes every cached route of `service` out of the cache.
    pub(super) fn remove_service(
        &self,
        direction: Direction,
        service: &str,
    ) -> Vec<RequestMetrics> {
        let mut map = self.by_direction[direction.index()]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(routes) = map.by_service.remove(service) else {
            return Vec::new();
        };
        map.len = map.len.saturating_sub(routes.len());
        routes.into_values().collect()
    }
}
