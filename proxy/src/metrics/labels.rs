//! Label sets of Levee's metric families, and the label values callers pass
//! ([`Direction`], [`StateTable`]). Field names are label names and
//! are part of the metrics contract (DESIGN.md §5, `docs/metrics.md`).

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// Which side of the proxy a request went through.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// A call that arrived from a peer, forwarded to the local app.
    Inbound,
    /// A call the local app made, forwarded to another service.
    Outbound,
}

impl Direction {
    /// The label value: `inbound` or `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Direction::Inbound => 0,
            Direction::Outbound => 1,
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// `levee_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub direction: Direction,
    pub service: Arc<str>,
    pub route: Arc<str>,
    pub code: Arc<str>,
    pub outcome: &'static str,
}

/// `levee_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RouteLabels {
    pub direction: Direction,
    pub service: Arc<str>,
    pub route: Arc<str>,
}

/// `levee_retries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RetryLabels {
    pub service: String,
    pub route: String,
    pub reason: String,
}

/// `levee_retry_budget_exhausted_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ServiceRouteLabels {
    pub service: String,
    pub route: String,
}

/// `levee_circuit_state`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CircuitLabels {
    pub service: String,
    pub endpoint: String,
}

/// `levee_circuit_transitions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TransitionLabels {
    pub service: String,
    pub endpoint: String,
    pub to: &'static str,
}

/// `levee_rejected_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RejectedLabels {
    pub direction: Direction,
    pub service: String,
    pub reason: &'static str,
}

/// `levee_timeouts_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TimeoutLabels {
    pub service: String,
    pub route: String,
    pub kind: &'static str,
}

/// `levee_endpoints`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EndpointLabels {
    pub service: String,
    pub state: &'static str,
}

/// `levee_policy_updates_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct UpdateLabels {
    pub result: &'static str,
}

/// `levee_state_evictions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StateLabels {
    pub table: &'static str,
}

/// The bounded tables keyed by what callers send, as the `table` label of
/// `levee_state_evictions_total` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateTable {
    /// Outbound destinations (by `Host` / `:authority`).
    Destinations,
    /// Cached DNS answers (by destination).
    Dns,
    /// Per-client rate-limit buckets (by client address).
    Clients,
    /// Control-plane subscriptions (by destination service), dropped when
    /// the set is full (evicted destinations are unsubscribed uncounted).
    Subscriptions,
    /// Destination addresses looked up by address (transparent mode): the
    /// least recently used are dropped (and unsubscribed) when full.
    Addresses,
}

impl StateTable {
    pub(super) const ALL: [StateTable; 5] = [
        StateTable::Destinations,
        StateTable::Dns,
        StateTable::Clients,
        StateTable::Subscriptions,
        StateTable::Addresses,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StateTable::Destinations => "destinations",
            StateTable::Dns => "dns",
            StateTable::Clients => "clients",
            StateTable::Subscriptions => "subscriptions",
            StateTable::Addresses => "addresses",
        }
    }
}
