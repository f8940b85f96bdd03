//! An in-process control plane on 127.0.0.1:0 in a temporary directory, and
//! helpers shared by the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use levee_control_plane::config::ControlPlaneConfig;
use levee_control_plane::ctl::client::{AdminClient, connect};
use levee_control_plane::{BoundAddrs, BoxError};
use levee_proto::policy::Document;
use levee_proto::v1;
use levee_proto::v1::discovery_client::DiscoveryClient;
use levee_tests::harness::{get_http1, yaml};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// A running control plane.
pub struct TestControlPlane {
    pub addrs: BoundAddrs,
    pub data_dir: PathBuf,
    stop: watch::Sender<bool>,
    serving: JoinHandle<Result<(), BoxError>>,
}

impl TestControlPlane {
    /// Starts on port 0 with `data_dir` and extra flags.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        // Most of these tests speak plaintext gRPC (TLS and identities:
        // registered_identity.rs and tests/tests/e2e/identity*.rs).
        let mut args = vec!["--insecure-plaintext"];
        args.extend_from_slice(extra);
        Self::start_with(data_dir, &args).await
    }

    /// Starts on port 0 serving gRPC over TLS with its own CA (its trust
    /// bundle is [`TestControlPlane::trust_bundle`]); Discovery then
    /// requires workload certificates.
    pub async fn start_tls(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(data_dir, extra).await
    }

    async fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        let dir = data_dir.to_str().expect("utf-8 path");
        let mut args = vec![
            "levee-control-plane",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
            dir,
        ];
        args.extend_from_slice(extra);
        let config = ControlPlaneConfig::try_parse_from(args).expect("flags");
        let (stop, stop_rx) = watch::channel(false);
        let (addrs, serving) = levee_control_plane::start(config, stop_rx)
            .await
            .expect("control plane starts");
        TestControlPlane {
            addrs,
            data_dir: data_dir.to_owned(),
            stop,
            serving,
        }
    }

    /// The PEM trust bundle a TLS control plane wrote at start.
    pub fn trust_bundle(&self) -> PathBuf {
        self.data_dir.join("trust-bundle.pem")
    }

    /// `http://127.0.0.1:PORT` of the gRPC listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.addrs.grpc)
    }

    /// An admin client with an optional token.
    pub async fn admin(&self, token: Option<&str>) -> AdminClient {
        connect(&self.url(), token).await.expect("connect")
    }

    /// Opens a Watch stream and sends `hello`.
    pub async fn watch(&self, hello: v1::Hello) -> Watch {
        let mut client = DiscoveryClient::connect(self.url())
            .await
            .expect("connect discovery");
        let (tx, rx) = mpsc::channel(16);
        tx.send(hello_request(hello)).await.expect("queue hello");
        let responses = client
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        Watch { tx, responses }
    }

    /// Stops the servers and waits for them (so the store can be reopened).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let finished = tokio::time::timeout(Duration::from_secs(10), self.serving).await;
        let result = finished
            .expect("control plane stops within 10s")
            .expect("task");
        result.expect("clean stop");
    }
}

/// One proxy's side of a Watch stream.
pub struct Watch {
    pub tx: mpsc::Sender<v1::WatchRequest>,
    pub responses: Streaming<v1::WatchResponse>,
}

impl Watch {
    /// Sends one request.
    pub async fn send(&self, kind: v1::watch_request::Kind) {
        self.tx
            .send(v1::WatchRequest { kind: Some(kind) })
            .await
            .expect("send");
    }

    /// The next message, failing after 5s.
    pub async fn next_message(&mut self) -> v1::watch_response::Kind {
        let message = tokio::time::timeout(Duration::from_secs(5), self.responses.message())
            .await
            .expect("a message within 5s")
            .expect("stream ok")
            .expect("stream open");
        message.kind.expect("empty response")
    }

    /// The next update, failing after 5s (or on an address answer).
    pub async fn next_update(&mut self) -> v1::ServiceUpdate {
        match self.next_message().await {
            v1::watch_response::Kind::Update(u) => u,
            other => panic!("expected a ServiceUpdate, got {other:?}"),
        }
    }

    /// The next address answer, failing after 5s (or on a service update).
    pub async fn next_address(&mut self) -> v1::AddressUpdate {
        match self.next_message().await {
            v1::watch_response::Kind::Address(a) => a,
            other => panic!("expected an AddressUpdate, got {other:?}"),
        }
    }

    /// Reads updates until one satisfies `done` (5s deadline).
    pub async fn update_where(
        &mut self,
        done: impl Fn(&v1::ServiceUpdate) -> bool,
    ) -> v1::ServiceUpdate {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "no matching update within 5s");
            let update = self.next_update().await;
            if done(&update) {
                return update;
            }
        }
    }

    /// ACKs an update.
    pub async fn ack(&self, update: &v1::ServiceUpdate) {
        self.send(v1::watch_request::Kind::Ack(v1::Ack {
            service: update.service.clone(),
            version: update.version.clone(),
            nonce: update.nonce.clone(),
        }))
        .await;
    }

    /// NACKs an update.
    pub async fn nack(&self, update: &v1::ServiceUpdate, reason: &str) {
        self.send(v1::watch_request::Kind::Nack(v1::Nack {
            service: update.service.clone(),
            version: update.version.clone(),
            nonce: update.nonce.clone(),
            reason: reason.to_owned(),
        }))
        .await;
    }
}

/// An Apply of YAML text, optionally compare-and-set.
pub fn apply(yaml: String, expected_revision: Option<u64>) -> v1::ApplyRequest {
    v1::ApplyRequest {
        yaml,
        expected_revision,
        ..Default::default()
    }
}

pub fn hello_request(hello: v1::Hello) -> v1::WatchRequest {
    v1::WatchRequest {
        kind: Some(v1::watch_request::Kind::Hello(hello)),
    }
}

pub fn service(name: &str, namespace: &str, port: u32) -> v1::ServiceRef {
    v1::ServiceRef {
        name: name.into(),
        namespace: namespace.into(),
        port,
    }
}

/// The namespace of the documents these tests apply.
pub const NAMESPACE: &str = "shop";

/// A ResiliencePolicy `name` for `service.shop:8080` with a request timeout.
pub fn policy(name: &str, service: &str, request_timeout: &str) -> Document {
    let body = format!("  outbound:\n    timeouts: {{request: {request_timeout}}}\n");
    yaml::named(yaml::policy_in(NAMESPACE, service, 8080, &body), name)
}

/// [`policy`] as a file's text.
pub fn policy_yaml(name: &str, service: &str, request_timeout: &str) -> String {
    yaml::documents(&[policy(name, service, request_timeout)])
}

/// ServiceEndpoints for payments.shop:8080.
pub fn endpoints(addresses: &[&str]) -> Document {
    let addresses: Vec<SocketAddr> = addresses
        .iter()
        .map(|a| a.parse().expect("a socket address"))
        .collect();
    yaml::endpoints_in(NAMESPACE, "payments", 8080, &addresses)
}

/// A plain HTTP/1.1 GET on 127.0.0.1; returns (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = get_http1(addr, "test", path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (response.status.as_u16(), response.text())
}
