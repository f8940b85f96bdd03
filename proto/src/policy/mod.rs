//! The shared policy model: typed, validated Rust structs for the YAML
//! documents of DESIGN.md §3 (`ResiliencePolicy`, `ServiceEndpoints`), their
//! protobuf form, and the route lookup + merge that yields the values the
//! proxy enforces.
//!
//! Layout:
//! - `document`: the two kinds, their envelope and target service.
//! - `outbound`, `route`: the policy sections as written (unset = default).
//! - `effective`: route lookup, field-by-field merge, defaults resolved.
//! - `parse`, `validate`, `error`: strict YAML reading with field paths.
//! - `app_protocol`: a port's declared protocol (`appProtocol`).
//! - `duration`, `conditions`, `grpc_status`, `service_key`: small value types.

//! - `duration`, `conditions`, `grpc_status`, `service_key`, `spiffe`: small value types.
//! - `mtls`: `spec.inbound.mtls`, who may call a service port.
//! - `target`: which service port a document is about, one document per
//!   target, and which policy applies to a call (a port beats every port).
//! - `to_proto`, `from_proto`: to and from the `levee.v1` protobuf messages
//!   (`From` one way; `TryFrom`, which validates, the other).

mod app_protocol;
mod conditions;
mod document;
mod duration;
mod effective;
mod error;
mod from_proto;
mod grpc_status;
mod mtls;
mod outbound;
mod parse;
mod route;
mod service_key;
mod spiffe;
mod target;
mod to_proto;
mod validate;

pub use app_protocol::{APP_PROTOCOLS, AppProtocol};
pub use conditions::FailureCondition;
pub use document::{
    API_VERSION, Document, EndpointsSpec, KIND_ENDPOINTS, KIND_POLICY, MAX_VIRTUAL_IPS, ObjectMeta,
    PolicySpec, ResiliencePolicy, ServiceEndpoints, Target,
};
pub use duration::{DURATION_PATTERN, Duration, DurationError};
pub use effective::{
    DEFAULT_ROUTE, EffectiveCircuitBreaker, EffectiveConcurrency, EffectiveInbound,
    EffectiveOutbound, EffectiveRateLimit, EffectiveRetry, EffectiveSlowCall, EffectiveTimeouts,
    defaults, merge_retry,
};
pub use error::{FieldError, PolicyErrors};
pub use grpc_status::GrpcStatus;
pub use mtls::{InboundMtls, MAX_ALLOWED_CLIENTS, MtlsMode};
pub use outbound::{
    CircuitBreaker, Concurrency, FailureRate, InboundPolicy, InboundTimeouts, OpenDuration,
    OutboundPolicy, RateLimit, RetryBackoff, RetryBudget, RetryPolicy, SlowCall, Timeouts,
};
pub use parse::{parse_documents, to_yaml};
pub use route::{GrpcMatch, HeaderMatch, Route, RouteMatch, RouteRequest, RouteTimeouts};
pub use service_key::{Authority, DEFAULT_NAMESPACE, ServiceKey};
pub use spiffe::{MAX_SPIFFE_ID, MAX_TRUST_DOMAIN, SPIFFE_SCHEME, SpiffeId, check_trust_domain};
pub use target::{PolicyIndex, TargetKey, check_batch, select_policy};
pub use validate::caps;
pub use validate::names::{check_document_ref, check_hello, check_service_ref};

#[cfg(test)]
mod docs_tests;
