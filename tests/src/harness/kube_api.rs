//! A stand-in Kubernetes API server for the Kubernetes-mode tests: plain
//! HTTP/1.1 on 127.0.0.1, answering LISTs of Services, EndpointSlices and
//! ResiliencePolicies with the bodies it is given (the recorded fixtures,
//! with endpoints pointed at loopback), holding every watch open without
//! events, keeping one Lease (create, get, update with resourceVersion
//! checks: 404, 409 Conflict and AlreadyExists as the real one answers),
//! and accepting status patches. [`KubeApi::kubeconfig`] writes a kubeconfig
//! pointing at it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// The fixtures folder of the repository.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/kubernetes")
}

/// A recorded fixture's bytes.
pub fn fixture(name: &str) -> Bytes {
    let path = fixtures_dir().join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

#[derive(Default)]
struct State {
    /// LIST bodies by collection (`services`, `endpointslices`, `resiliencepolicies`).
    lists: HashMap<&'static str, Bytes>,
    /// The one Lease, if created.
    lease: Option<Value>,
    next_rv: u64,
    /// Requests served, `METHOD path?query`.
    log: Vec<String>,
}

/// A running stand-in API server.
pub struct KubeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn collection(path: &str) -> Option<&'static str> {
    ["resiliencepolicies", "endpointslices", "services", "leases"]
        .into_iter()
        .find(|c| path.contains(&format!("/{c}")))
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    full(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
}

impl KubeApi {
    /// Starts serving `lists` (collection → LIST body) on 127.0.0.1.
    pub async fn start(lists: HashMap<&'static str, Bytes>) -> KubeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            lists,
            next_rv: 1000,
            ..State::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        KubeApi { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server into `dir`; returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n\
             users:\n- name: test\n  user:\n    token: test-token\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\n",
            self.url()
        );
        std::fs::write(&path, text).expect("writing the kubeconfig");
        path
    }

    /// Requests served so far (`METHOD path?query`).
    pub fn log(&self) -> Vec<String> {
        self.state.lock().expect("lock").log.clone()
    }

    /// The Lease's current holder, if any.
    pub fn lease_holder(&self) -> Option<String> {
        let state = self.state.lock().expect("lock");
        state.lease.as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_owned)
    }
}

async fn answer(state: &Mutex<State>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let mut state = state.lock().expect("lock");
    state.log.push(format!("{method} {path}?{query}"));
    let Some(kind) = collection(&path) else {
        return status(404, "NotFound", "no such collection");
    };
    if kind == "leases" {
        return lease(&mut state, &method, &body);
    }
    if method == Method::PATCH && path.ends_with("/status") {
        let patched = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
        let object = json!({"apiVersion": "levee.dev/v1alpha1", "kind": "ResiliencePolicy",
            "metadata": {"name": path.rsplit('/').nth(1).unwrap_or_default()},
            "status": patched["status"]});
        return full(StatusCode::OK, object.to_string());
    }
    if query.contains("watch=true") {
        // Held open, no events: the state stays what the LIST said.
        let stream = futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>();
        let mut response = Response::new(StreamBody::new(stream).boxed());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return response;
    }
    match state.lists.get(kind) {
        Some(list) => full(StatusCode::OK, list.clone()),
        None => status(404, "NotFound", "no list"),
    }
}

/// One Lease, with the API server's optimistic concurrency.
fn lease(state: &mut State, method: &Method, body: &[u8]) -> Response<Body> {
    let name = "levee-control-plane";
    let conflict = format!(
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    );
    match *method {
        Method::GET => match &state.lease {
            Some(lease) => full(StatusCode::OK, lease.to_string()),
            None => status(
                404,
                "NotFound",
                &format!("leases.coordination.k8s.io \"{name}\" not found"),
            ),
        },
        Method::POST | Method::PUT => {
            let Ok(mut lease) = serde_json::from_slice::<Value>(body) else {
                return status(400, "BadRequest", "not JSON");
            };
            if *method == Method::POST && state.lease.is_some() {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("leases.coordination.k8s.io \"{name}\" already exists"),
                );
            }
            if *method == Method::PUT {
                let current = state
                    .lease
                    .as_ref()
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if current != Some(lease["metadata"]["resourceVersion"].clone()) {
                    return status(409, "Conflict", &conflict);
                }
            }
            state.next_rv += 1;
            lease["metadata"]["resourceVersion"] = Value::String(state.next_rv.to_string());
            state.lease = Some(lease.clone());
            let code = if *method == Method::POST {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            full(code, lease.to_string())
        }
        _ => status(405, "MethodNotAllowed", "method not allowed"),
    }
}
