//! HTTP clients for tests: hyper HTTP/1.1 and HTTP/2 (prior knowledge)
//! connections over fresh sockets, request bodies, a fully read response, and
//! a `curl` runner.

use std::{net::SocketAddr, process::ExitStatus, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpStream, process::Command};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The request body type of the harness clients.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// How long any single harness request may take before it counts as a hang.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of `data` followed by `trailers`.
pub fn with_trailers(data: impl Into<Bytes>, trailers: HeaderMap) -> Body {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> =
        vec![Ok(Frame::data(data.into())), Ok(Frame::trailers(trailers))];
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

/// A response read to the end.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl HttpResponse {
    pub async fn read(resp: Response<Incoming>) -> Result<HttpResponse, BoxError> {
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(HttpResponse {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }

    /// A header as text ("" when absent or not text).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value, BoxError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("body is not JSON ({e}): {:?}", self.text()).into())
    }
}

/// One HTTP/1.1 connection (keep-alive: requests go one after another).
pub struct Http1Conn {
    sender: hyper::client::conn::http1::SendRequest<Body>,
}

impl Http1Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Http1Conn, BoxError> {
        let io = TokioIo::new(TcpStream::connect(addr).await?);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await?;
        tokio::spawn(conn.with_upgrades());
        Ok(Http1Conn { sender })
    }

    /// Sends and returns the response head (its body not yet read).
    pub async fn send_raw(&mut self, req: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }

    pub async fn send(&mut self, req: Request<Body>) -> Result<HttpResponse, BoxError> {
        let resp = self.send_raw(req).await?;
        HttpResponse::read(resp).await
    }
}

/// One HTTP/2 connection with prior knowledge; clone it to multiplex.
#[derive(Clone)]
pub struct Http2Conn {
    sender: hyper::client::conn::http2::SendRequest<Body>,
}

impl Http2Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Http2Conn, BoxError> {
        let io = TokioIo::new(TcpStream::connect(addr).await?);
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await?;
        tokio::spawn(conn);
        Ok(Http2Conn { sender })
    }

    pub async fn send_raw(&mut self, req: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }

    pub async fn send(&mut self, req: Request<Body>) -> Result<HttpResponse, BoxError> {
        let resp = self.send_raw(req).await?;
        HttpResponse::read(resp).await
    }
}

/// `GET path` with `Host: authority` on a fresh HTTP/1.1 connection to `addr`.
pub async fn get_http1(
    addr: SocketAddr,
    authority: &str,
    path: &str,
) -> Result<HttpResponse, BoxError> {
    let req = Request::get(path)
        .header(http::header::HOST, authority)
        .body(empty())?;
    send_http1(addr, req).await
}

/// `GET http://authority/path` on a fresh HTTP/2 prior-knowledge connection.
pub async fn get_http2(
    addr: SocketAddr,
    authority: &str,
    path: &str,
) -> Result<HttpResponse, BoxError> {
    let req = Request::get(format!("http://{authority}{path}")).body(empty())?;
    send_http2(addr, req).await
}

/// Sends one request on a fresh HTTP/1.1 connection, within [`REQUEST_DEADLINE`].
pub async fn send_http1(addr: SocketAddr, req: Request<Body>) -> Result<HttpResponse, BoxError> {
    deadline(async { Http1Conn::connect(addr).await?.send(req).await }).await
}

/// Sends one request on a fresh HTTP/2 connection, within [`REQUEST_DEADLINE`].
pub async fn send_http2(addr: SocketAddr, req: Request<Body>) -> Result<HttpResponse, BoxError> {
    deadline(async { Http2Conn::connect(addr).await?.send(req).await }).await
}

async fn deadline<T>(fut: impl Future<Output = Result<T, BoxError>>) -> Result<T, BoxError> {
    tokio::time::timeout(REQUEST_DEADLINE, fut)
        .await
        .map_err(|_| format!("no response within {REQUEST_DEADLINE:?} (a hang)"))?
}

/// Reads an HTTP/1 response head (up to the blank line) byte by byte, so
/// whatever follows stays in the socket. Fails on EOF or after
/// [`REQUEST_DEADLINE`].
pub async fn read_head(stream: &mut TcpStream) -> Result<String, BoxError> {
    use tokio::io::AsyncReadExt;
    deadline(async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await? == 0 {
                let partial = String::from_utf8_lossy(&head);
                return Err(format!("connection closed after {partial:?}").into());
            }
            head.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&head).into_owned())
    })
    .await
}

/// A tonic channel to `addr` whose requests carry `:authority` `authority`
/// (as a gRPC client dialling the proxy for service `authority` would).
pub async fn grpc_channel(
    addr: SocketAddr,
    authority: &str,
) -> Result<tonic::transport::Channel, BoxError> {
    let origin: http::Uri = format!("http://{authority}").parse()?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .origin(origin)
        .connect_timeout(REQUEST_DEADLINE)
        .timeout(REQUEST_DEADLINE);
    deadline(async { Ok(endpoint.connect().await?) }).await
}

/// What `curl` printed and returned.
#[derive(Debug)]
pub struct CurlOutput {
    pub exit: ExitStatus,
    /// `%{http_code}`: 0 when no response arrived.
    pub status: u16,
    /// `%{http_version}`, e.g. `1.1` or `2`.
    pub http_version: String,
    /// Headers of the last response, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub stderr: String,
}

impl CurlOutput {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `curl -sS ARGS` (10 s max) with proxy variables cleared, so only an
/// explicit `-x` selects a proxy.
pub async fn curl(args: &[&str]) -> Result<CurlOutput, BoxError> {
    curl_command(Command::new("curl"), args).await
}

/// [`curl`] run by `cmd`, a command that ends in `curl` (e.g. `ip netns
/// exec NAME curl`).
pub async fn curl_command(mut cmd: Command, args: &[&str]) -> Result<CurlOutput, BoxError> {
    let dir = tempfile::tempdir()?;
    let (headers_path, body_path) = (dir.path().join("headers"), dir.path().join("body"));
    cmd.args(["-sS", "--max-time", "10", "-D"])
        .arg(&headers_path)
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .kill_on_drop(true);
    for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        cmd.env_remove(var).env_remove(var.to_uppercase());
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("running curl (is it installed?): {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut written = stdout.split_whitespace();
    let status = written.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = written.next().unwrap_or("").to_owned();
    let raw_headers = std::fs::read_to_string(&headers_path).unwrap_or_default();
    // With interim responses (100, 101) curl writes several blocks; keep the last.
    let last_block = raw_headers
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or("");
    let headers = last_block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(CurlOutput {
        exit: out.status,
        status,
        http_version,
        headers,
        body: std::fs::read_to_string(&body_path).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
