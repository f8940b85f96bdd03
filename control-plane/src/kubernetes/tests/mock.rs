//! A kube client backed by `tower_test::mock::pair`, answering with the
//! recorded API-server bodies (tests/fixtures/kubernetes) byte for byte.
//!
//! LISTs are answered from per-kind queues of `(status, body)`; the first
//! watch of a kind streams whatever the test pushes line by line (and ends
//! when the test says so); later watches stay open and silent. Every request
//! is logged with its body.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use kube::Client;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// One frame of a response body.
type Chunk = Result<Frame<Bytes>, Infallible>;

/// The response body type of the mock service.
pub type MockBody = StreamBody<ReceiverStream<Chunk>>;

/// One request as the mock API server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub content_type: String,
    pub body: Bytes,
}

/// A recorded file's bytes.
pub fn fixture(name: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/kubernetes")
        .join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => panic!("fixture {}: {e}", path.display()),
    }
}

/// The lines of a recorded `.jsonl` watch body, each with its `\n`.
pub fn lines(name: &str) -> Vec<Bytes> {
    let all = fixture(name);
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in all.iter().enumerate() {
        if *b == b'\n' {
            out.push(all.slice(start..=i));
            start = i + 1;
        }
    }
    out
}

/// Which collection a path is about.
pub fn kind_of(path: &str) -> &'static str {
    if path.contains("/resiliencepolicies") {
        "resiliencepolicies"
    } else if path.contains("/endpointslices") {
        "endpointslices"
    } else if path.contains("/services") {
        "services"
    } else if path.contains("/leases") {
        "leases"
    } else if path.contains("/configmaps") {
        "configmaps"
    } else if path.starts_with("/api/v1/namespaces?") {
        "namespaces"
    } else if path.contains("/pods") {
        "pods"
    } else {
        "other"
    }
}

fn body(bytes: Bytes) -> MockBody {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Ok(Frame::data(bytes)));
    StreamBody::new(ReceiverStream::new(rx))
}

/// The mock API server's state, shared with the test.
#[derive(Default)]
pub struct MockApi {
    /// Answers to LISTs, per kind, in order (the last one repeats).
    pub lists: Mutex<HashMap<&'static str, VecDeque<(StatusCode, Bytes)>>>,
    /// Where the test's watch lines go, per kind (the first watch only).
    watches: Mutex<HashMap<&'static str, mpsc::Sender<Chunk>>>,
    /// Waiting first-watch bodies, per kind.
    pending: Mutex<HashMap<&'static str, mpsc::Receiver<Chunk>>>,
    /// Later watches' senders, kept so their bodies stay open.
    idle: Mutex<Vec<mpsc::Sender<Chunk>>>,
    /// Every request.
    pub seen: Mutex<Vec<Seen>>,
}

impl MockApi {
    /// A client whose requests this mock answers.
    pub fn client() -> (Client, Arc<MockApi>) {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<MockBody>>();
        let api = Arc::new(MockApi::default());
        for kind in [
            "services",
            "endpointslices",
            "resiliencepolicies",
            "namespaces",
            "pods",
        ] {
            let (tx, rx) = mpsc::channel(64);
            api.watches.lock().unwrap().insert(kind, tx);
            api.pending.lock().unwrap().insert(kind, rx);
        }
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, req_body) = request.into_parts();
                let bytes = req_body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let uri = parts.uri.to_string();
                let seen = Seen {
                    method: parts.method.to_string(),
                    uri: uri.clone(),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                    body: bytes,
                };
                server.seen.lock().unwrap().push(seen.clone());
                let (status, body) = server.answer(&seen);
                let mut response = Response::new(body);
                *response.status_mut() = status;
                respond.send_response(response);
            }
        });
        (Client::new(service, "default"), api)
    }

    fn answer(&self, seen: &Seen) -> (StatusCode, MockBody) {
        let kind = kind_of(&seen.uri);
        if seen.method == "PATCH" && seen.uri.contains("/status") {
            // The API server answers with the object; nothing reads it here.
            return (StatusCode::OK, body(fixture_object()));
        }
        if seen.method == "PATCH" && kind == "configmaps" {
            // A server-side apply: the API server answers with the object.
            return (StatusCode::OK, body(seen.body.clone()));
        }
        if seen.uri.contains("watch=true") {
            if let Some(rx) = self.pending.lock().unwrap().remove(kind) {
                return (StatusCode::OK, StreamBody::new(ReceiverStream::new(rx)));
            }
            let (tx, rx) = mpsc::channel(1);
            self.idle.lock().unwrap().push(tx);
            return (StatusCode::OK, StreamBody::new(ReceiverStream::new(rx)));
        }
        let mut lists = self.lists.lock().unwrap();
        let queue = lists.entry(kind).or_default();
        let answer = if queue.len() > 1 {
            queue.pop_front()
        } else {
            queue.front().cloned()
        };
        match answer {
            Some((status, bytes)) => (status, body(bytes)),
            None => (StatusCode::NOT_FOUND, body(Bytes::from_static(b"{}"))),
        }
    }

    /// Queues a LIST answer for `kind`.
    pub fn list(&self, kind: &'static str, status: StatusCode, bytes: Bytes) {
        self.lists
            .lock()
            .unwrap()
            .entry(kind)
            .or_default()
            .push_back((status, bytes));
    }

    /// Queues the recorded LISTs of Services, EndpointSlices and
    /// ResiliencePolicies (the state most tests start from).
    pub fn recorded_lists(&self) {
        for (kind, file) in [
            ("services", "watch/services.list.json"),
            ("endpointslices", "watch/endpointslices.list.json"),
            ("resiliencepolicies", "watch/resiliencepolicies.list.json"),
        ] {
            self.list(kind, StatusCode::OK, fixture(file));
        }
    }

    /// Streams one line on the first watch of `kind`.
    pub async fn push(&self, kind: &'static str, line: Bytes) {
        let tx = self.watches.lock().unwrap().get(kind).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(Ok(Frame::data(line))).await;
        }
    }

    /// Ends the first watch of `kind` (the server closes the stream).
    pub fn end_watch(&self, kind: &'static str) {
        self.watches.lock().unwrap().remove(kind);
        self.pending.lock().unwrap().remove(kind);
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn fixture_object() -> Bytes {
    Bytes::from_static(
        br#"{"apiVersion":"levee.dev/v1alpha1","kind":"ResiliencePolicy","metadata":{"name":"payments","namespace":"shop"}}"#,
    )
}
