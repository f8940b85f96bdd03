//! The proxy library's integration tests: `levee_proxy::run_with` in this
//! process on loopback port 0, driven over real sockets. One test binary
//! with a module per feature (one link instead of one per file). What the
//! real binary does as a whole (issue 3's scenarios, signals, flags) is
//! tested end to end in `tests/tests/e2e`.

mod support;

mod forwarding;
mod inbound_limits;
mod limits;
mod resilience_grpc;
mod resilience_http;
