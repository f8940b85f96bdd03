//! Properties of accepted policy documents, whichever way they came in
//! (YAML, protobuf): none of these may panic or hang, and a document the
//! proxy accepted must print and read back to itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use levee_proto::policy::{Document, ResiliencePolicy, RouteRequest, parse_documents, to_yaml};
use levee_proto::v1 as pb;
use levee_proxy::body::{self, BoxBody, BoxError};
use levee_proxy::metrics::Metrics;
use levee_proxy::resilience::Destination;
use levee_proxy::state::Snapshot;

/// Requests every compiled route table is asked about.
const REQUESTS: [(&str, &str); 4] = [
    ("GET", "/"),
    ("POST", "/payments/1?x=y"),
    ("POST", "/levee.v1.Discovery/Watch"),
    ("DELETE", "/a/b/c"),
];

/// Runs every later stage on documents that passed validation.
pub fn accepted(docs: &[Document]) {
    // YAML round trip: what `leveectl get` prints must apply again unchanged.
    let yaml = to_yaml(docs);
    match parse_documents(&yaml) {
        Ok(again) => assert_eq!(
            &again, docs,
            "YAML round trip changed the documents:\n{yaml}"
        ),
        Err(e) => panic!("printed documents no longer parse: {e}\n{yaml}"),
    }
    // Protobuf round trip: what the control plane sends must convert back.
    for doc in docs {
        let wire = pb::Document::from(doc);
        match Document::try_from(wire) {
            Ok(back) => assert_eq!(&back, doc, "protobuf round trip changed a document"),
            Err(e) => panic!("a valid document's protobuf form is refused: {e}"),
        }
    }
    // What the proxy builds from them.
    let Ok(snapshot) = Snapshot::from_documents(docs.to_vec(), "default", "fuzz") else {
        return;
    };
    for policy in &snapshot.documents {
        compile(policy);
    }
}

/// How long one call through a compiled stack may take: the endpoint
/// answers at once, so only a hang gets near this.
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// The effective policy of each route, the proxy's compiled stacks, and
/// calls through them to an endpoint that answers `200` at once, so the
/// rate limit, breaker, bulkhead, timeouts and retry bookkeeping run on the
/// policy's values. (Failing answers would make the retry layer sleep in
/// real time: paused time needs tokio's `test-util`, which would rebuild
/// every dependency.)
pub fn compile(policy: &Arc<ResiliencePolicy>) {
    let outbound = &policy.spec.outbound;
    for (method, path) in REQUESTS {
        let _ = outbound.effective(&RouteRequest::new(method, path));
    }
    for route in &outbound.routes {
        let _ = outbound.effective_for(Some(route));
    }
    let _ = policy.spec.inbound.effective();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let metrics = Metrics::new();
        let endpoint = tower::service_fn(|_req: http::Request<BoxBody>| async {
            Ok::<_, BoxError>(http::Response::new(body::empty()))
        });
        let destination = Destination::new("fuzz.default:80", Some(policy), &metrics, endpoint);
        let addrs: Arc<[SocketAddr]> = Arc::from([SocketAddr::from(([127, 0, 0, 1], 9))]);
        destination.balancer.set_endpoints(&addrs);
        let table = destination.routes_for(Some(policy));
        for (method, path) in REQUESTS {
            let stack = table.route(&RouteRequest::new(method, path));
            for _ in 0..3 {
                let mut req = http::Request::new(body::full("fuzz"));
                *req.method_mut() = http::Method::from_bytes(method.as_bytes()).expect("a method");
                *req.uri_mut() =
                    http::Uri::try_from(format!("http://fuzz.default{path}")).expect("a URI");
                if tokio::time::timeout(CALL_LIMIT, stack.call(req))
                    .await
                    .is_err()
                {
                    panic!("a {method} {path} call did not end within {CALL_LIMIT:?} ");
                }
            }
        }
    });
}
