//! Shared pieces of the proxy's in-process tests: a test upstream (hyper,
//! HTTP/1.1 + HTTP/2, upgrades), the proxy started with `run_with` on port 0,
//! and small clients.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use levee_proxy::body::{BoxBody, BoxError};
use levee_proxy::{BoundAddrs, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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

/// A `ServiceEndpoints` document for `name.test:port`.
pub fn endpoints(name: &str, port: u16, addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "---\napiVersion: levee.dev/v1alpha1\nkind: ServiceEndpoints\nmetadata: {{name: {name}, namespace: test}}\nspec: {{service: {name}, port: {port}, addresses: [{}]}}\n",
        list.join(", ")
    )
}

/// Starts the proxy (namespace `test`, all listeners on port 0) with `policy`
/// as its policy file and `extra` flags.
pub async fn start_proxy(policy: &str, extra: &[&str]) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy).expect("write policy");
    let file = file.to_str().expect("utf-8 path").to_owned();
    let mut args = vec![
        "--outbound-addr",
        "127.0.0.1:0",
        "--inbound-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--namespace",
        "test",
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

/// Starts the test upstream; see [`upstream`] for what it answers.
pub async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service_fn(upstream))
                    .await;
            });
        }
    });
    addr
}

/// The test upstream. Every response says what arrived: `x-seen-host`,
/// `x-seen-version`, `x-seen-uri`, `x-seen-headers` (header names).
/// Paths: `/trailers` (echo + trailers `grpc-status: 0`), `/slow` (300 ms),
/// `/upgrade` (101, then echoes bytes), `/status/NNN`; anything else echoes
/// the request body as it streams.
async fn upstream(mut req: Request<Incoming>) -> Result<Response<BoxBody>, Infallible> {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    let seen = [
        ("x-seen-host", host),
        ("x-seen-version", format!("{:?}", req.version())),
        ("x-seen-uri", req.uri().to_string()),
        ("x-seen-headers", names.join(",")),
    ];
    let path = req.uri().path().to_owned();
    let mut response = match path.as_str() {
        "/trailers" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("x-trailer", HeaderValue::from_static("yes"));
            let frames = vec![
                Ok::<_, BoxError>(Frame::data(body)),
                Ok(Frame::trailers(trailers)),
            ];
            let mut r = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            r
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Response::new(full("slow done"))
        }
        "/upgrade" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("upgrade", HeaderValue::from_static("echo"));
            r.headers_mut()
                .insert("connection", HeaderValue::from_static("upgrade"));
            r
        }
        p if p.starts_with("/status/") => {
            let mut r = Response::new(full("status"));
            *r.status_mut() = p[8..].parse().unwrap_or(StatusCode::BAD_REQUEST);
            r
        }
        _ => Response::new(req.into_body().map_err(BoxError::from).boxed()),
    };
    for (name, value) in seen {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    Ok(response)
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
