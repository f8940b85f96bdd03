//! Shared pieces of the proxy's in-process tests: the proxy started with
//! `run_with` on port 0 (namespace `test`), its policy documents, and small
//! clients. The upstreams are the harness's ([`upstream`]).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use levee_proto::policy::Document;
use levee_proxy::body::{BoxBody, BoxError};
use levee_proxy::{BoundAddrs, ProxyConfig};
pub use levee_tests::harness::upstream;
pub use levee_tests::harness::yaml;
use levee_tests::harness::yaml::PolicyFile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(10);

/// A proxy running in this process.
pub struct Proxy {
    pub addrs: BoundAddrs,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), BoxError>>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// The policy file the proxy watches (rewrite it to update the policy).
    pub fn policy_file(&self) -> std::path::PathBuf {
        self._dir.path().join("policy.yaml")
    }

    /// Cancels and waits for `run` to return.
    pub async fn stop(self) -> Result<(), BoxError> {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("proxy stops in time")
            .expect("proxy task")
    }
}

/// The proxy's `--namespace` in these tests.
pub const NAMESPACE: &str = "test";

/// A `ServiceEndpoints` document for `name.test:port`.
pub fn endpoints(name: &str, port: u16, addrs: &[SocketAddr]) -> Document {
    yaml::endpoints_in(NAMESPACE, name, port, addrs)
}

/// One service's policy file: `name.test:8080`'s endpoints and, unless
/// `outbound` is `None`, a policy with that outbound section (YAML indented
/// by four spaces).
pub fn service(name: &str, outbound: Option<&str>, addrs: &[SocketAddr]) -> String {
    yaml::service_in(NAMESPACE, name, 8080, outbound, addrs)
}

/// A `ResiliencePolicy` for `name.test:port` (`None`: every port) whose
/// spec besides the target is `spec_body` (see [`yaml::policy`]).
pub fn policy(name: &str, port: impl Into<Option<u16>>, spec_body: &str) -> Document {
    yaml::policy_in(NAMESPACE, name, port, spec_body)
}

/// Starts the proxy (namespace `test`, all listeners on port 0) with `policy`
/// as its policy file and `extra` flags.
pub async fn start_proxy(policy: impl PolicyFile, extra: &[&str]) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy.into_yaml()).expect("write policy");
    let file = file.to_str().expect("utf-8 path").to_owned();
    let mut args = vec![
        "--outbound-addr",
        "127.0.0.1:0",
        "--inbound-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--namespace",
        NAMESPACE,
        "--policy-file",
        &file,
    ];
    args.extend_from_slice(extra);
    let config = ProxyConfig::from_args(args).expect("flags");
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(levee_proxy::run_with(config, shutdown.clone(), Some(tx)));
    let addrs = tokio::time::timeout(DEADLINE, rx)
        .await
        .expect("proxy binds in time")
        .expect("proxy started");
    Proxy {
        addrs,
        shutdown,
        task,
        _dir: dir,
    }
}

pub fn full(text: &'static str) -> BoxBody {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|n| match n {})
        .boxed()
}

/// An HTTP/1.1 client connection to `addr`.
pub async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<BoxBody> {
    let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("h1 handshake");
    tokio::spawn(conn.with_upgrades());
    sender
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
pub async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<BoxBody> {
    let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

/// Sends raw bytes and reads until the peer closes or `until` appears.
pub async fn raw(addr: SocketAddr, request: &[u8], until: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_until(&mut stream, until).await
}

pub async fn read_until(stream: &mut TcpStream, until: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if !until.is_empty() && String::from_utf8_lossy(&out).contains(until) {
                break;
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("response in time");
    String::from_utf8_lossy(&out).into_owned()
}

/// The header `name` of `r` as text ("" when absent).
pub fn header<B>(r: &Response<B>, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// GETs `path` from the admin server and returns the body.
pub async fn admin_get(addr: SocketAddr, path: &str) -> String {
    let mut sender = h1(addr).await;
    let req = Request::get(path)
        .header("host", "admin")
        .body(full(""))
        .expect("request");
    let r = sender.send_request(req).await.expect("admin answers");
    let bytes = r
        .into_body()
        .collect()
        .await
        .expect("admin body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}
