//! Registering a family: the registry keeps a clone for encoding and the
//! caller keeps the handle. Shared by every file that registers families.

use prometheus_client::registry::{Metric, Registry};

/// Registers `metric` as `name` with `help` in `registry` and returns it: the
/// registry keeps a clone for `encode`, the returned handle shares its series.
pub(super) fn registered<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}
