//! An in-process control plane on 127.0.0.1:0 in a temporary directory, and
//! helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use levee_control_plane::config::ControlPlaneConfig;
use levee_control_plane::ctl::client::{AdminClient, connect};
use levee_control_plane::{BoundAddrs, BoxError};
use levee_proto::v1;
use levee_proto::v1::discovery_client::DiscoveryClient;
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

    /// The next update, failing after 5s.
    pub async fn next_update(&mut self) -> v1::ServiceUpdate {
        let message = tokio::time::timeout(Duration::from_secs(5), self.responses.message())
            .await
            .expect("an update within 5s")
            .expect("stream ok")
            .expect("stream open");
        match message.kind {
            Some(v1::watch_response::Kind::Update(u)) => u,
            None => panic!("empty response"),
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

/// A ResiliencePolicy for `service` in `shop` with a request timeout.
pub fn policy_yaml(name: &str, service: &str, request_timeout: &str) -> String {
    format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  target: {{service: {service}, port: 8080}}\n  outbound:\n    timeouts: {{request: {request_timeout}}}\n"
    )
}

/// ServiceEndpoints for payments.shop:8080.
pub fn endpoints_yaml(addresses: &[&str]) -> String {
    let list = addresses
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ServiceEndpoints\nmetadata: {{name: payments, namespace: shop}}\n\
         spec: {{service: payments, port: 8080, addresses: [{list}]}}\n"
    )
}

/// Polls `check` every 10ms until it returns `Some`, failing after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1; returns (status code, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}
