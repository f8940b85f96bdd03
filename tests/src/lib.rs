//! End-to-end testing for Levee: a test upstream with injectable faults and
//! a harness that runs the real binaries over real sockets.
//!
//! Layout:
//! - [`flaky`]: the flaky test upstream (HTTP/1.1, HTTP/2, gRPC) — a library
//!   and the `levee-flaky` binary.
//! - [`harness`]: the one place for test helpers: runs the real binaries
//!   (port 0, `--addr-file`, waits for `/ready`), HTTP clients, `curl`,
//!   policy files from typed documents, load, metrics and `/config` helpers.
//! - [`otlp`]: a test OpenTelemetry collector (OTLP/gRPC traces) that
//!   records the spans it receives.
//! - [`pb`]: Rust generated from `proto/levee/testing/v1/flaky.proto`.
//! - [`bench`]: the benchmark runner behind `levee-bench` (docs/benchmarks.md).
//! - [`demo`]: the local mesh demo behind `levee-demo` (README's first command).
//! - `tests/e2e/`: the end-to-end tests, one binary with a module per
//!   feature; `py/`: the third-party gRPC client (Python `grpcio`, in an
//!   environment the harness makes on first use: [`harness::python`]).
//!
//! Running: the tests start the built binaries, so build them first:
//! `cargo build --workspace --bins && cargo test -p levee-tests`.

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
