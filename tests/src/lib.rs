//! End-to-end testing for Levee: a test upstream with injectable faults and
//! a harness that runs the real binaries over real sockets.
//!
//! Layout:
//! - [`flaky`]: the flaky test upstream (HTTP/1.1, HTTP/2, gRPC) — a library
//!   and the `levee-flaky` binary.
//! - [`harness`]: finds and runs `levee-proxy` (port 0, `--addr-file`, waits
//!   for `/ready`), HTTP clients, `curl`, metrics and `/config` helpers.
//! - [`otlp`]: a test OpenTelemetry collector (OTLP/gRPC traces) that
//!   records the spans it receives.
//! - [`pb`]: Rust generated from `proto/levee/testing/v1/flaky.proto`.
//! - [`bench`]: the benchmark runner behind `levee-bench` (docs/benchmarks.md).
//! - [`demo`]: the local mesh demo behind `levee-demo` (README's first command).
//! - `tests/`: the end-to-end tests, one file per feature; `py/`: the
//!   third-party gRPC client (Python `grpcio`).
//!
//! Running: the tests start the built binaries, so build them first:
//! `cargo build --workspace --bins && cargo test -p levee-tests`. The Python
//! test needs `pip install grpcio grpcio-tools`.

pub mod bench;
pub mod demo;
pub mod flaky;
pub mod harness;
pub mod otlp;

/// The flaky upstream's gRPC messages and stubs (`levee.testing.v1`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("levee.testing.v1");
}
