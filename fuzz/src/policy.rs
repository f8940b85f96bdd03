//! Properties of accepted policy documents, whichever way they came in
//! (YAML, protobuf): none of these may panic, and a document the proxy
//! accepted must print and read back to itself.

use std::sync::Arc;

use levee_proto::policy::{Document, ResiliencePolicy, RouteRequest, parse_documents, to_yaml};
use levee_proto::v1 as pb;
use levee_proxy::body::{BoxBody, BoxError};
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

/// The effective policy of each route and the proxy's compiled stacks.
pub fn compile(policy: &Arc<ResiliencePolicy>) {
    let outbound = &policy.spec.outbound;
    for (method, path) in REQUESTS {
        let _ = outbound.effective(&RouteRequest::new(method, path));
    }
    for route in &outbound.routes {
        let _ = outbound.effective_for(Some(route));
    }
    let _ = policy.spec.inbound.effective();
    // The route tables: durations converted, budgets, breakers, limiters.
    let runtime = runtime();
    let _guard = runtime.enter();
    let metrics = Metrics::new();
    let endpoint = tower::service_fn(|_req: http::Request<BoxBody>| async {
        Err::<http::Response<BoxBody>, BoxError>("fuzz: no endpoint".into())
    });
    let destination = Destination::new("fuzz", Some(policy), &metrics, endpoint);
    let table = destination.routes_for(Some(policy));
    for (method, path) in REQUESTS {
        let _ = table.route(&RouteRequest::new(method, path));
    }
}

/// One current-thread runtime per thread, for code that needs a reactor or timer.
fn runtime() -> &'static tokio::runtime::Runtime {
    use std::sync::OnceLock;
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}
