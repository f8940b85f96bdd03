//! A programmable upstream for the resilience tests: fails a share of
//! requests (503, or gRPC UNAVAILABLE as a trailers-only response), answers
//! after a delay, counts what it got, and echoes the request body and the
//! `grpc-timeout` it saw. HTTP/1.1 and HTTP/2 (prior knowledge).
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use levee_proxy::body::{BoxBody, BoxError};
use tokio::net::TcpListener;

/// How an upstream behaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Behaviour {
    /// Percent of requests answered with a failure, at random.
    pub fail_percent: u32,
    /// The first this-many requests fail.
    pub fail_first: usize,
    /// Wait before answering.
    pub delay: Duration,
}

/// A running upstream.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests received.
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub async fn start(behaviour: Behaviour) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(req, behaviour, counter.clone(), addr));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream { addr, hits }
}

async fn answer(
    req: Request<Incoming>,
    behaviour: Behaviour,
    hits: Arc<AtomicUsize>,
    me: SocketAddr,
) -> Result<Response<BoxBody>, Infallible> {
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
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let echo = req.into_body().map_err(BoxError::from);
        let tail = futures_util::stream::iter([Ok::<_, BoxError>(Frame::trailers(trailers))]);
        let frames = futures_util::StreamExt::chain(http_body_util::BodyStream::new(echo), tail);
        Response::new(StreamBody::new(frames).boxed())
    } else {
        Response::new(req.into_body().map_err(BoxError::from).boxed())
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

fn empty() -> BoxBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|n| match n {})
        .boxed()
}

/// A policy document for `name.test:8080` with `outbound` (YAML block,
/// indented four spaces) and the endpoints.
pub fn policy(name: &str, outbound: &str, endpoints: &[SocketAddr]) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: {name}, namespace: test}}\n\
         spec:\n  target: {{service: {name}, port: 8080}}\n  outbound:\n{outbound}\
         ---\napiVersion: levee.dev/v1alpha1\nkind: ServiceEndpoints\nmetadata: {{name: {name}, namespace: test}}\n\
         spec: {{service: {name}, port: 8080, addresses: [{}]}}\n",
        list.join(", ")
    )
}

/// The value of the first metrics line starting with `prefix` (0 when absent).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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
