//! A third-party gRPC client through the proxy: Python `grpcio` (see
//! `tests/py/flaky_grpc_client.py`) calls every Flaky method via the
//! outbound listener. The harness provides that Python: a virtual
//! environment made on first use (see `harness::python`); the client's
//! start-up and expected answers are `harness::python_grpc`'s.

use std::time::Duration;

use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, python, python_grpc, yaml},
};
use tokio::process::Command;

#[tokio::test]
async fn python_grpcio_client_through_the_proxy() {
    let up = FlakyUpstream::start("py-1").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .start()
        .await;
    let got = python_grpc::call_every_method(
        Command::new(python::python().await),
        &proxy.outbound().to_string(),
        "web:80",
        Duration::from_secs(60),
    )
    .await;
    python_grpc::assert_every_answer(&got, "py-1");
    assert_eq!(up.stats().grpc_requests, python_grpc::CALLS);
}
