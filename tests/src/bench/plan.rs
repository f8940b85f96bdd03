//! What a benchmark run does: the [`Plan`] (full or `--quick`), narrowed to
//! the [`Scenario`]s of `--scenarios`, and which contender runs which
//! open-loop case ([`planned_cases`], [`runs_in`]).

use std::time::Duration;

use super::load::Protocol;
use super::trace_overhead;

/// One open-loop latency case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyCase {
    pub protocol: Protocol,
    pub rate: f64,
    pub connections: usize,
}

impl LatencyCase {
    pub fn new(protocol: Protocol, rate: f64, connections: usize) -> LatencyCase {
        LatencyCase {
            protocol,
            rate,
            connections,
        }
    }
}

/// A part of the benchmark that `--scenarios` can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Scenarios 1 and 4: open-loop latency of every contender, the full
    /// policy among them.
    Latency,
    /// Scenario 2: closed-loop throughput and CPU per request.
    Throughput,
    /// Scenario 3: RSS idle and with idle connections.
    Memory,
    /// Scenario 5: outcomes behind faulty endpoints.
    Faults,
    /// Scenario 6: control-plane convergence.
    Convergence,
    /// Tracing overhead: Levee one hop with tracing off, at 1 % and 100 %.
    Tracing,
    /// Transparent vs explicit: two pods in network namespaces (root only),
    /// the direct call, the explicit two-hop path and the intercepted one.
    Transparent,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub reps: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub latency: Vec<LatencyCase>,
    /// Closed-loop connections for the throughput scenario; `None` skips it.
    pub throughput_connections: Option<usize>,
    /// Scenario 3; `false` skips it.
    pub memory: bool,
    pub idle_connections: usize,
    /// Scenario 3: how long RSS may take to come back after the burst.
    pub memory_settle: Duration,
    /// Scenario 5: measured seconds per fault case and contender; `None` skips it.
    pub faults: Option<Duration>,
    /// Scenario 6: `(watch streams, rounds)` for the control plane's
    /// convergence example.
    pub convergence: Vec<(usize, u32)>,
    /// Tracing overhead: the open-loop cases run against the direct call,
    /// Levee untraced and the traced Levees; empty skips it.
    pub tracing: Vec<LatencyCase>,
    /// Tracing overhead: closed-loop connections for the same contenders
    /// (CPU per request at saturation); `None` skips it.
    pub tracing_closed_loop: Option<usize>,
    /// Transparent vs explicit: open-loop cases against the direct call,
    /// the explicit and the transparent two-hop path; empty skips it.
    pub transparent: Vec<LatencyCase>,
    /// Transparent vs explicit: closed-loop connections (CPU per request
    /// of the two sidecars at saturation); `None` skips it.
    pub transparent_closed_loop: Option<usize>,
}

impl Plan {
    /// Issue 6's scenarios 1–6 and the tracing overhead.
    pub fn full(reps: usize, duration: Duration) -> Plan {
        let case = LatencyCase::new;
        Plan {
            reps,
            warmup: Duration::from_secs(2),
            duration,
            latency: vec![
                case(Protocol::Http1, 1000.0, 16),
                case(Protocol::Http1, 5000.0, 16),
                case(Protocol::Http2, 1000.0, 16),
                case(Protocol::Http2, 5000.0, 16),
                case(Protocol::Http1, 1000.0, 100),
            ],
            throughput_connections: Some(64),
            memory: true,
            idle_connections: 1000,
            memory_settle: Duration::from_secs(60),
            faults: Some(Duration::from_secs(5)),
            convergence: vec![(10, 20), (100, 20), (1000, 20)],
            tracing: vec![
                case(Protocol::Http1, 1000.0, 16),
                case(Protocol::Http1, 5000.0, 16),
            ],
            tracing_closed_loop: Some(64),
            transparent: vec![
                case(Protocol::Http1, 1000.0, 16),
                case(Protocol::Http1, 5000.0, 16),
                case(Protocol::Http2, 1000.0, 16),
            ],
            transparent_closed_loop: Some(64),
        }
    }

    /// A smoke test: every contender and scenario once, briefly.
    pub fn quick() -> Plan {
        Plan {
            reps: 1,
            warmup: Duration::from_millis(300),
            duration: Duration::from_secs(1),
            latency: vec![
                LatencyCase::new(Protocol::Http1, 500.0, 8),
                LatencyCase::new(Protocol::Http2, 500.0, 8),
            ],
            throughput_connections: Some(16),
            memory: true,
            idle_connections: 100,
            memory_settle: Duration::from_secs(2),
            faults: Some(Duration::from_secs(1)),
            convergence: vec![(10, 3)],
            tracing: vec![LatencyCase::new(Protocol::Http1, 500.0, 8)],
            tracing_closed_loop: Some(16),
            // One brief case: the pods' setup and teardown are what it checks.
            transparent: vec![LatencyCase::new(Protocol::Http1, 500.0, 8)],
            transparent_closed_loop: None,
        }
    }

    /// Keeps only the scenarios in `only` (all of them when it is empty).
    pub fn select(mut self, only: &[Scenario]) -> Plan {
        if only.is_empty() {
            return self;
        }
        let keep = |s| only.contains(&s);
        if !keep(Scenario::Latency) {
            self.latency.clear();
        }
        if !keep(Scenario::Throughput) {
            self.throughput_connections = None;
        }
        self.memory &= keep(Scenario::Memory);
        if !keep(Scenario::Faults) {
            self.faults = None;
        }
        if !keep(Scenario::Convergence) {
            self.convergence.clear();
        }
        if !keep(Scenario::Tracing) {
            self.tracing.clear();
            self.tracing_closed_loop = None;
        }
        if !keep(Scenario::Transparent) {
            self.transparent.clear();
            self.transparent_closed_loop = None;
        }
        self
    }

    /// Whether anything runs on loopback (scenarios 1–4, tracing): the
    /// upstream and contenders there are started only then.
    pub fn runs_loopback(&self) -> bool {
        self.compares_proxies() || !self.tracing.is_empty() || self.tracing_closed_loop.is_some()
    }

    /// Whether the transparent-vs-explicit scenario runs.
    pub fn runs_transparent(&self) -> bool {
        !self.transparent.is_empty() || self.transparent_closed_loop.is_some()
    }

    /// Whether the direct/HAProxy/nginx/Levee comparison (scenarios 1–4)
    /// runs, which needs every standard contender started.
    pub fn compares_proxies(&self) -> bool {
        !self.latency.is_empty() || self.throughput_connections.is_some() || self.memory
    }

    /// Connections of the closed-loop case (scenario 2's when both it and
    /// the tracing scenario run it), if any.
    pub fn closed_loop_connections(&self) -> Option<usize> {
        self.throughput_connections.or(self.tracing_closed_loop)
    }

    /// Whether `contender` runs the closed-loop case: the baselines for
    /// either scenario, the traced Levees for tracing, the rest for scenario 2.
    pub fn runs_closed_loop(&self, contender: &str) -> bool {
        let throughput = self.throughput_connections.is_some();
        let tracing = self.tracing_closed_loop.is_some();
        if contender == "direct" || contender == trace_overhead::OFF {
            throughput || tracing
        } else if trace_overhead::is_traced(contender) {
            tracing
        } else {
            throughput
        }
    }
}

/// An open-loop case and the scenarios that asked for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlannedCase {
    pub case: LatencyCase,
    /// Scenario 1: every standard contender runs it.
    pub latency: bool,
    /// Tracing overhead: the traced Levees run it.
    pub tracing: bool,
}

/// The latency cases, then the tracing cases that are not latency cases
/// too; a case in both is run once per contender.
pub fn planned_cases(plan: &Plan) -> Vec<PlannedCase> {
    let mut cases: Vec<PlannedCase> = plan
        .latency
        .iter()
        .map(|&case| PlannedCase {
            case,
            latency: true,
            tracing: false,
        })
        .collect();
    for &case in &plan.tracing {
        match cases.iter_mut().find(|c| c.case == case) {
            Some(existing) => existing.tracing = true,
            None => cases.push(PlannedCase {
                case,
                latency: false,
                tracing: true,
            }),
        }
    }
    cases
}

/// Whether `contender` (which speaks h2c when `h2`) runs `case`: the direct
/// call and untraced Levee run every case (they are the baselines), the
/// traced Levees only tracing cases, the others only latency cases.
pub fn runs_in(case: &PlannedCase, contender: &str, h2: bool) -> bool {
    if case.case.protocol == Protocol::Http2 && !h2 {
        return false;
    }
    if contender == "direct" || contender == trace_overhead::OFF {
        true
    } else if trace_overhead::is_traced(contender) {
        case.tracing
    } else {
        case.latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selecting_tracing_keeps_only_its_cases() {
        let plan = Plan::full(3, Duration::from_secs(8)).select(&[Scenario::Tracing]);
        assert!(plan.latency.is_empty());
        assert_eq!(plan.throughput_connections, None);
        assert!(!plan.memory);
        assert_eq!(plan.faults, None);
        assert!(plan.convergence.is_empty());
        assert_eq!(plan.tracing.len(), 2);
        assert!(!plan.compares_proxies());
        assert_eq!(plan.closed_loop_connections(), Some(64));
        assert!(plan.runs_closed_loop("levee-trace-100%"));
        assert!(plan.runs_closed_loop("direct") && plan.runs_closed_loop("levee-1hop"));
        assert!(!plan.runs_closed_loop("haproxy"));
        assert_eq!(plan.reps, 3);
        assert!(!plan.runs_transparent());
    }

    #[test]
    fn selecting_transparent_keeps_only_its_cases() {
        let plan = Plan::full(3, Duration::from_secs(8)).select(&[Scenario::Transparent]);
        assert!(plan.latency.is_empty() && plan.tracing.is_empty());
        assert!(!plan.memory && plan.faults.is_none() && plan.convergence.is_empty());
        assert!(!plan.compares_proxies() && !plan.runs_loopback());
        assert_eq!(plan.closed_loop_connections(), None);
        assert_eq!(plan.transparent.len(), 3);
        assert_eq!(plan.transparent_closed_loop, Some(64));
        assert!(plan.runs_transparent());
        let quick = Plan::quick().select(&[]);
        assert!(quick.runs_transparent(), "--quick exercises it");
        assert!(!Plan::quick().select(&[Scenario::Memory]).runs_transparent());
    }

    #[test]
    fn selecting_nothing_keeps_everything() {
        let plan = Plan::quick().select(&[]);
        assert!(!plan.latency.is_empty() && !plan.tracing.is_empty());
        assert!(plan.memory && plan.faults.is_some() && plan.compares_proxies());
        let some = Plan::quick().select(&[Scenario::Memory, Scenario::Faults]);
        assert!(some.latency.is_empty() && some.tracing.is_empty());
        assert!(some.memory && some.faults.is_some() && some.compares_proxies());
        assert_eq!(some.closed_loop_connections(), None);
        assert!(!some.runs_closed_loop("direct"));
        let throughput = Plan::quick().select(&[Scenario::Throughput]);
        assert_eq!(throughput.closed_loop_connections(), Some(16));
        assert!(throughput.runs_closed_loop("haproxy") && throughput.runs_closed_loop("direct"));
        assert!(!throughput.runs_closed_loop("levee-trace-1%"));
    }

    #[test]
    fn shared_cases_run_once_and_contenders_get_their_cases() {
        let h1 = LatencyCase::new(Protocol::Http1, 1000.0, 16);
        let h2 = LatencyCase::new(Protocol::Http2, 1000.0, 16);
        let h1_fast = LatencyCase::new(Protocol::Http1, 5000.0, 16);
        let mut plan = Plan::quick();
        plan.latency = vec![h1, h2];
        plan.tracing = vec![h1_fast, h1];
        let cases = planned_cases(&plan);
        let flags: Vec<_> = cases
            .iter()
            .map(|c| (c.case, c.latency, c.tracing))
            .collect();
        assert_eq!(
            flags,
            vec![(h1, true, true), (h2, true, false), (h1_fast, false, true)]
        );
        let who = |case: &PlannedCase, h2: bool| {
            ["direct", "levee-1hop", "levee-trace-1%", "haproxy"]
                .into_iter()
                .filter(|name| runs_in(case, name, h2 || *name != "haproxy"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            who(&cases[0], false),
            ["direct", "levee-1hop", "levee-trace-1%", "haproxy"]
        );
        // HAProxy does not speak h2c; the traced Levee is not in scenario 1.
        assert_eq!(who(&cases[1], false), ["direct", "levee-1hop"]);
        assert_eq!(
            who(&cases[2], false),
            ["direct", "levee-1hop", "levee-trace-1%"]
        );
    }
}
