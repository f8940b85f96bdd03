//! The values flags parse into: output formats, the trace sampler, who may
//! read the admin topology, and durations written as policies write them.

use std::time::Duration;

use clap::ValueEnum;

/// `--log-format`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--trace-sampler`, named as `OTEL_TRACES_SAMPLER` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceSampler {
    #[value(name = "always_on")]
    AlwaysOn,
    #[value(name = "always_off")]
    AlwaysOff,
    #[value(name = "traceidratio")]
    TraceIdRatio,
    #[value(name = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    #[value(name = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    #[value(name = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

/// `--admin-topology`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminTopology {
    /// Only callers whose address is a loopback address.
    Loopback,
    /// Every caller that can reach the admin port.
    Any,
}

/// `--access-log`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
}

/// Durations as policies write them: `500ms`, `10s`, `5m`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<levee_proto::policy::Duration>()
        .map(Duration::from)
        .map_err(|e| e.to_string())
}
