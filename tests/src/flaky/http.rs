//! The flaky upstream's request handler: applies the request's faults, then
//! routes to `/echo`, an `Upgrade` echo, the gRPC service (by content-type
//! `application/grpc`), `/__flaky/stats`, or the default body.

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{body::Frame, body::Incoming};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Notify,
};
use tonic::codegen::Service;

use super::{Decision, Shared, grpc};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    reset: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req.uri().path() == "/__flaky/stats" {
        let stats = serde_json::to_value(shared.stats.snapshot()).unwrap_or_default();
        return Ok(with_instance(
            &shared,
            json_response(StatusCode::OK, &stats),
        ));
    }
    let grpc = is_grpc(req.headers());
    let _in_flight = shared.stats.request(req.uri().path(), grpc);
    let decision = match shared.faults().with_overrides(req.headers()) {
        Ok(faults) => faults.decide(&mut rand::rng()),
        Err(e) => {
            let body = serde_json::json!({ "error": e });
            return Ok(with_instance(
                &shared,
                json_response(StatusCode::BAD_REQUEST, &body),
            ));
        }
    };
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    if decision.reset {
        shared.stats.reset();
        reset.notify_one();
        // The connection task drops this future when it resets the socket.
        return std::future::pending().await;
    }
    let resp = if let Some(status) = decision.status {
        shared.stats.injected_failure();
        injected_status(status)
    } else if grpc {
        if let Some(code) = decision.grpc_status {
            shared.stats.injected_failure();
            tonic::Status::new(tonic::Code::from(code), "flaky: injected").into_http()
        } else {
            grpc_call(&shared, req).await
        }
    } else if req.headers().contains_key(header::UPGRADE) {
        upgrade(req)
    } else if req.uri().path() == "/echo" {
        echo(&shared, req).await
    } else {
        default_body(&shared, &decision, req).await
    };
    Ok(with_instance(&shared, resp))
}

fn with_instance(shared: &Shared, mut resp: Response<Body>) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(&shared.id) {
        resp.headers_mut().insert("x-flaky-instance", v);
    }
    resp
}

fn injected_status(status: u16) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "injected": status.as_u16() });
    json_response(status, &body)
}

async fn grpc_call(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let mut svc = grpc::service(shared.clone());
    match svc.call(req).await {
        Ok(resp) => resp.map(|b| b.map_err(BoxError::from).boxed_unsync()),
        Err(never) => match never {},
    }
}

fn header_map_json(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_owned()).or_default().push(value);
    }
    map
}

/// Answers with what arrived: method, URI, version, headers, body, trailers.
/// With `x-flaky-trailers: true` the response ends with trailer
/// `x-flaky-trailer: <id>`; each `x-flaky-set-header: NAME: VALUE` adds a
/// response header (to test what the proxy does with response headers).
async fn echo(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let extra = response_headers(req.headers());
    let mut resp = echo_body(shared, req).await;
    for (name, value) in extra {
        resp.headers_mut().append(name, value);
    }
    resp
}

fn response_headers(headers: &HeaderMap) -> Vec<(header::HeaderName, HeaderValue)> {
    headers
        .get_all("x-flaky-set-header")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split_once(':'))
        .filter_map(|(n, v)| Some((n.trim().parse().ok()?, v.trim().parse().ok()?)))
        .collect()
}

async fn echo_body(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let (bytes, trailers) = match body.collect().await {
        Ok(c) => {
            let trailers = c.trailers().cloned();
            (c.to_bytes(), trailers)
        }
        Err(e) => {
            let body = serde_json::json!({ "error": format!("reading body: {e}") });
            return json_response(StatusCode::BAD_REQUEST, &body);
        }
    };
    let value = serde_json::json!({
        "instance": shared.id,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "path": parts.uri.path(),
        // `:authority` for HTTP/2, `Host` for HTTP/1.1.
        "authority": parts.uri.authority().map(|a| a.to_string()).or_else(|| {
            parts.headers.get(header::HOST).map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        }),
        "version": format!("{:?}", parts.version),
        "headers": header_map_json(&parts.headers),
        "body": String::from_utf8_lossy(&bytes),
        "trailers": trailers.as_ref().map(header_map_json),
    });
    let want_trailers = parts
        .headers
        .get("x-flaky-trailers")
        .is_some_and(|v| v == "true");
    if !want_trailers {
        return json_response(StatusCode::OK, &value);
    }
    let mut trailers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&shared.id) {
        trailers.insert("x-flaky-trailer", v);
    }
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from(value.to_string()))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut resp =
        Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // HTTP/1.1 sends only trailer fields the head announced (RFC 9110 §6.6.2).
    resp.headers_mut()
        .insert(header::TRAILER, HeaderValue::from_static("x-flaky-trailer"));
    resp
}

/// `101 Switching Protocols`, then every byte received is sent back.
fn upgrade(mut req: Request<Incoming>) -> Response<Body> {
    let protocol = req.headers().get(header::UPGRADE).cloned();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = vec![0u8; 8192];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() || io.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(p) = protocol {
        resp.headers_mut().insert(header::UPGRADE, p);
    }
    resp
}

/// Reads the request body (its length goes to `x-flaky-received-bytes`) and
/// answers `flaky <id>\n`, or `body_bytes` of `x`, possibly slowly.
async fn default_body(
    shared: &Shared,
    decision: &Decision,
    req: Request<Incoming>,
) -> Response<Body> {
    let received = match req.into_body().collect().await {
        Ok(c) => c.to_bytes().len(),
        Err(e) => {
            let body = serde_json::json!({ "error": format!("reading body: {e}") });
            return json_response(StatusCode::BAD_REQUEST, &body);
        }
    };
    let content: Bytes = match decision.body_bytes {
        Some(n) => vec![b'x'; n].into(),
        None => format!("flaky {}\n", shared.id).into(),
    };
    let body = match decision.slow_body {
        None => full(content),
        Some(slow) => slow_body(content, slow.chunks.max(1), slow.interval),
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp.headers_mut()
        .insert("x-flaky-received-bytes", HeaderValue::from(received));
    resp
}

/// `content` split into `chunks` pieces with `interval` before each but the first.
fn slow_body(content: Bytes, chunks: u32, interval: Duration) -> Body {
    let size = content.len().div_ceil(chunks as usize).max(1);
    let pieces: Vec<Bytes> = (0..content.len())
        .step_by(size)
        .map(|start| content.slice(start..(start + size).min(content.len())))
        .collect();
    let stream = futures_util::stream::unfold(
        (pieces.into_iter(), true),
        move |(mut it, first)| async move {
            let piece = it.next()?;
            if !first {
                tokio::time::sleep(interval).await;
            }
            Some((Ok::<_, BoxError>(Frame::data(piece)), (it, false)))
        },
    );
    StreamBody::new(stream).boxed_unsync()
}
