//! The opaque TCP families: connections forwarded byte for byte (transparent
//! mode), their bytes each way and their duration. Label values are few
//! and fixed (no address, no service), so the series are made once, when a
//! listener's forwarder is built, and exist from the start.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::family::registered;
use super::labels::Direction;

/// The `target` label: where an opaque connection was forwarded.
pub mod target {
    /// Outbound: the connection's original destination, unknown to the
    /// proxy (no service, no policy): forwarded unchanged.
    pub const PASSTHROUGH: &str = "passthrough";
    /// Inbound: the local workload, on the connection's original port.
    pub const WORKLOAD: &str = "workload";
}

/// The `outcome` label of `levee_tcp_connections_total` (in the order of
/// [`TcpOutcome::ALL`], which indexes the handles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOutcome {
    /// Connected to the target and forwarded.
    Connected = 0,
    /// Connecting to the target failed or timed out: the client's connection
    /// is closed.
    ConnectError = 1,
    /// The proxy's own connection came back to it (a loop): closed.
    LoopDetected = 2,
}

impl TcpOutcome {
    const ALL: [TcpOutcome; 3] = [
        TcpOutcome::Connected,
        TcpOutcome::ConnectError,
        TcpOutcome::LoopDetected,
    ];

    fn as_str(self) -> &'static str {
        match self {
            TcpOutcome::Connected => "connected",
            TcpOutcome::ConnectError => "connect-error",
            TcpOutcome::LoopDetected => "loop-detected",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    direction: Direction,
    target: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    direction: Direction,
    target: &'static str,
    /// `to_target` (client to target) or `to_client`.
    flow: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    direction: Direction,
    target: &'static str,
}

/// Buckets of `levee_tcp_duration_seconds`: 10 ms to 1 h (connections live
/// far longer than requests).
const TCP_DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

type DurationFamily = Family<DurationLabels, Histogram, fn() -> Histogram>;

/// The families, registered once per registry.
#[derive(Debug)]
pub(super) struct TcpFamilies {
    connections: Family<ConnectionLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
    duration: DurationFamily,
}

impl TcpFamilies {
    pub(super) fn register(registry: &mut Registry) -> TcpFamilies {
        TcpFamilies {
            connections: registered(
                registry,
                "levee_tcp_connections",
                "Opaque TCP connections forwarded byte for byte, by target and outcome",
                Family::default(),
            ),
            bytes: registered(
                registry,
                "levee_tcp_bytes",
                "Bytes of opaque TCP connections, by flow (to_target, to_client)",
                Family::default(),
            ),
            duration: registered(
                registry,
                "levee_tcp_duration_seconds",
                "Lifetime of forwarded opaque TCP connections, from connect to close, in seconds",
                Family::new_with_constructor(|| Histogram::new(TCP_DURATION_BUCKETS)),
            ),
        }
    }

    pub(super) fn handles(&self, direction: Direction, target: &'static str) -> TcpMetrics {
        let connections = TcpOutcome::ALL.map(|outcome| {
            self.connections.get_or_create_owned(&ConnectionLabels {
                direction,
                target,
                outcome: outcome.as_str(),
            })
        });
        let bytes = |flow| {
            self.bytes.get_or_create_owned(&BytesLabels {
                direction,
                target,
                flow,
            })
        };
        TcpMetrics {
            connections,
            to_target: bytes("to_target"),
            to_client: bytes("to_client"),
            duration: self
                .duration
                .get_or_create_owned(&DurationLabels { direction, target }),
        }
    }
}

/// The handles of one (direction, target): cheap to clone, lock-free.
#[derive(Clone, Debug)]
pub struct TcpMetrics {
    connections: [Counter; 3],
    /// Bytes from the client to the target.
    pub to_target: Counter,
    /// Bytes from the target to the client.
    pub to_client: Counter,
    /// Connection lifetimes (connected ones).
    pub duration: Histogram,
}

impl TcpMetrics {
    /// Counts a connection's outcome.
    pub fn connection(&self, outcome: TcpOutcome) {
        self.connections[outcome as usize].inc();
    }

    /// The connection count of `outcome`.
    pub fn connections(&self, outcome: TcpOutcome) -> u64 {
        self.connections[outcome as usize].get()
    }
}
