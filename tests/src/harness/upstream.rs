//! Small in-process upstreams on 127.0.0.1:0 (HTTP/1.1 + HTTP/2 prior
//! knowledge) for tests that assert what the proxy forwarded, which the
//! [flaky upstream](crate::flaky) does not report:
//! - [`echo`]: says what arrived (`x-seen-*` headers) and echoes the body;
//!   trailers, a slow answer, an upgrade and any status on fixed paths.
//! - [`scripted`]: fails a fixed share of requests (503, or gRPC UNAVAILABLE
//!   as a trailers-only response) on a sequence that is the same every run,
//!   answers after a delay, counts requests, echoes `grpc-timeout`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::{body::Frame, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{Body, BoxError, empty, full, with_trailers};

/// A listener on 127.0.0.1:0 and its address; panics when it cannot bind.
pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding 127.0.0.1:0: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local addr: {e}"));
    (listener, addr)
}

/// Starts the echo upstream. Every response says what arrived:
/// `x-seen-host`, `x-seen-version`, `x-seen-uri`, `x-seen-headers` (header
/// names, sorted), `x-seen-client-id` (the `x-levee-client-id` values).
/// Paths: `/trailers` (echo + trailers `grpc-status: 0`, `x-trailer: yes`),
/// `/slow` (300 ms), `/upgrade` (101, then echoes bytes), `/status/NNN`;
/// anything else echoes the request body as it streams.
pub async fn echo() -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service_fn(echo_answer))
                    .await;
            });
        }
    });
    addr
}

async fn echo_answer(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
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
        ("x-seen-client-id", client_ids(req.headers())),
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
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("x-trailer", HeaderValue::from_static("yes"));
            let mut r = Response::new(with_trailers(body, trailers));
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
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("upgrade", HeaderValue::from_static("echo"));
            r.headers_mut()
                .insert("connection", HeaderValue::from_static("upgrade"));
            r
        }
        p if p.starts_with("/status/") => {
            let mut r = Response::new(full("status"));
            *r.status_mut() = p["/status/".len()..]
                .parse()
                .unwrap_or(StatusCode::BAD_REQUEST);
            r
        }
        _ => Response::new(streamed_echo(req)),
    };
    for (name, value) in seen {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    Ok(response)
}

/// Every `x-levee-client-id` that arrived, comma-separated ("" for none).
fn client_ids(headers: &HeaderMap) -> String {
    let ids: Vec<&str> = headers
        .get_all("x-levee-client-id")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    ids.join(",")
}

/// The request body, streamed back as it arrives.
fn streamed_echo(req: Request<Incoming>) -> Body {
    req.into_body().map_err(BoxError::from).boxed_unsync()
}

/// How a [`scripted`] upstream behaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Behaviour {
    /// Percent of requests answered with a failure, on a fixed sequence.
    pub fail_percent: u32,
    /// The first this-many requests fail.
    pub fail_first: usize,
    /// Wait before answering.
    pub delay: Duration,
}

/// A running [`scripted`] upstream.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Scripted {
    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Starts an upstream that behaves as `behaviour` says. Failures are 503
/// (after reading the body), or for gRPC a trailers-only `grpc-status: 14`;
/// successes echo the body (gRPC: then `grpc-status: 0`). Every response
/// carries `x-upstream: <addr>` and, when the request had one,
/// `x-seen-grpc-timeout`.
pub async fn scripted(behaviour: Behaviour) -> Scripted {
    let (listener, addr) = bind().await;
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc =
                    service_fn(move |req| scripted_answer(req, behaviour, counter.clone(), addr));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Scripted { addr, hits }
}

async fn scripted_answer(
    req: Request<Incoming>,
    behaviour: Behaviour,
    hits: Arc<AtomicUsize>,
    me: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let n = hits.fetch_add(1, Ordering::SeqCst);
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let seen_timeout = req.headers().get("grpc-timeout").cloned();
    tokio::time::sleep(behaviour.delay).await;
    let fail = n < behaviour.fail_first || roll(&behaviour, n) < behaviour.fail_percent;
    let mut response = if fail && grpc {
        let mut r = Response::new(empty());
        r.headers_mut()
            .insert("grpc-status", HeaderValue::from_static("14"));
        r.headers_mut()
            .insert("grpc-message", HeaderValue::from_static("injected"));
        r
    } else if fail {
        // Read the body first, as a real server would.
        let _ = req.into_body().collect().await;
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    } else if grpc {
        // Streams the request back, then `grpc-status: 0` in the trailers.
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let echo = req.into_body().map_err(BoxError::from);
        let tail = futures_util::stream::iter([Ok::<_, BoxError>(Frame::trailers(trailers))]);
        let frames = futures_util::StreamExt::chain(http_body_util::BodyStream::new(echo), tail);
        Response::new(StreamBody::new(frames).boxed_unsync())
    } else {
        Response::new(streamed_echo(req))
    };
    if grpc {
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
    }
    if let Some(timeout) = seen_timeout {
        response
            .headers_mut()
            .insert("x-seen-grpc-timeout", timeout);
    }
    if let Ok(v) = HeaderValue::from_str(&me.to_string()) {
        response.headers_mut().insert("x-upstream", v);
    }
    Ok(response)
}

/// The `n`th request's dice (0..100): a fixed sequence (SplitMix64 of `n`),
/// so a sequential client sees the same failures on every run.
fn roll(behaviour: &Behaviour, n: usize) -> u32 {
    if behaviour.fail_percent == 0 {
        return 100;
    }
    let mut z = (n as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % 100) as u32
}

/// What [`greeting`] sends first on every connection.
pub const GREETING: &[u8] = b"220 ready\r\n";

/// A raw TCP peer (opaque-TCP tests): reads each connection to its end,
/// then answers with the bytes reversed (only a real half-close gets an
/// answer).
pub fn reversing(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if conn.read_to_end(&mut got).await.is_ok() {
                    got.reverse();
                    let _ = conn.write_all(&got).await;
                }
            });
        }
    });
}

/// A raw TCP peer (opaque-TCP tests): writes back each chunk it reads,
/// as it reads it, until the connection ends.
pub fn echoing(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = conn.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
}

/// A server that speaks first: sends [`GREETING`] on each connection
/// before reading anything.
pub fn greeting(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = conn.write_all(GREETING).await;
                let mut sink = Vec::new();
                let _ = conn.read_to_end(&mut sink).await;
            });
        }
    });
}

/// Sends `sent`, half-closes, reads the answer to its end (within `deadline`).
pub async fn exchange(mut conn: TcpStream, sent: &[u8], deadline: Duration) -> Vec<u8> {
    conn.write_all(sent).await.expect("send");
    conn.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    tokio::time::timeout(deadline, conn.read_to_end(&mut got))
        .await
        .expect("an answer in time")
        .expect("read");
    got
}

/// An HTTP/1.1 app (raw, so it speaks nothing else): answers each request
/// with its head, as the app received it, as the body, then closes.
pub fn echo_head(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    head.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.write_all(&head).await;
            });
        }
    });
}
