//! Ports of one workload against real apps on 127.0.0.1: which port's
//! stack a request gets, and that each port's limits count its own calls.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use levee_proto::policy::parse_documents;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::body;
use crate::errors::ProxyError;
use crate::forward::Forwarder;
use crate::forward::pool::PoolSettings;
use crate::snapshot::Snapshot;

const DEADLINE: Duration = Duration::from_secs(10);

/// An HTTP/1.1 app on 127.0.0.1: each request says it arrived on
/// `arrived`, then waits for a permit of `release` before answering 200.
async fn app(arrived: mpsc::UnboundedSender<u16>, release: Arc<Semaphore>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (arrived, release) = (arrived.clone(), release.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let (arrived, release) = (arrived.clone(), release.clone());
                    async move {
                        let _ = arrived.send(port);
                        let _permit = release.acquire().await;
                        Ok::<_, Infallible>(Response::new(body::empty()))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

/// `policies` (YAML documents) as the snapshot of `shared`.
fn install(shared: &Shared, policies: &str) {
    let documents = parse_documents(policies).expect("valid policies");
    let snapshot = Snapshot::from_documents(documents, "test", "test").expect("snapshot");
    shared.install(snapshot);
}

fn inbound_policy(port: u16, inbound: &str) -> String {
    format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
         metadata: {{name: echo-{port}, namespace: test}}\n\
         spec:\n  target: {{service: echo, port: {port}}}\n  inbound: {inbound}\n---\n"
    )
}

fn ports(shared: &Arc<Shared>, app_port: u16) -> InboundPorts {
    let forwarder = Arc::new(Forwarder::new(
        PoolSettings::default(),
        TaskTracker::new(),
        CancellationToken::new(),
    ));
    let app = AppService::new(
        forwarder,
        SocketAddr::from(([127, 0, 0, 1], app_port)),
        "echo".into(),
    );
    InboundPorts::new("echo".into(), app_port, shared.metrics.clone(), app).with_policy(
        shared.clone(),
        app_port,
        TimeoutDefaults::off(),
    )
}

/// A request redirected from `port` (`None`: made to the listener itself).
fn request(port: Option<u16>) -> Request<BoxBody> {
    let mut req = Request::get("http://echo.test/")
        .body(body::empty())
        .expect("request");
    if let Some(port) = port {
        req.extensions_mut()
            .insert(OriginalDst(SocketAddr::from(([10, 0, 0, 7], port))));
    }
    req
}

/// The status the caller would see: the app's, or the proxy error's.
async fn status(ports: &InboundPorts, port: Option<u16>) -> StatusCode {
    let req = request(port);
    let inbound = ports.for_request(req.extensions().get());
    match tokio::time::timeout(DEADLINE, inbound.send(req)).await {
        Err(_) => panic!("no answer within {DEADLINE:?}"),
        Ok(Ok(response)) => response.status(),
        Ok(Err(error)) => error
            .downcast::<ProxyError>()
            .expect("ProxyError")
            .kind
            .status(),
    }
}

#[tokio::test]
async fn requests_get_the_stack_and_label_of_the_port_their_caller_dialled() {
    let shared = Arc::new(Shared::new("test".into(), Metrics::new()));
    let mut subscribed = shared.subscriptions.enable().expect("control-plane mode");
    let ports = ports(&shared, 8080);
    let main = ports.for_request(None);
    assert_eq!(&*main.label, "echo");
    let to_app_port = OriginalDst(SocketAddr::from(([10, 0, 0, 7], 8080)));
    assert!(Arc::ptr_eq(&main, &ports.for_request(Some(&to_app_port))));
    let grpc = OriginalDst(SocketAddr::from(([10, 0, 0, 7], 9090)));
    let other = ports.for_request(Some(&grpc));
    assert_eq!(&*other.label, "echo:9090");
    assert!(
        Arc::ptr_eq(&other, &ports.for_request(Some(&grpc))),
        "made once per port"
    );
    let key = ServiceKey::from_authority("echo", "test", 9090).expect("key");
    assert_eq!(
        subscribed.try_recv(),
        Ok(crate::subscriptions::Change::Subscribe(key)),
        "the port's policy is asked for"
    );
    assert!(subscribed.try_recv().is_err(), "once");
}

#[tokio::test]
async fn the_ports_over_the_cap_share_one_stack_unless_a_policy_names_them() {
    let shared = Arc::new(Shared::new("test".into(), Metrics::new()));
    let named = 20_000;
    install(&shared, &inbound_policy(named, "{timeouts: {request: 5s}}"));
    let ports = ports(&shared, 8080);
    let at = |port: u16| OriginalDst(SocketAddr::from(([10, 0, 0, 7], port)));
    for port in 0..MAX_OTHER_PORTS {
        let port = 10_000 + u16::try_from(port).expect("small");
        assert_eq!(
            *ports.for_request(Some(&at(port))).label,
            *format!("echo:{port}")
        );
    }
    let over = ports.for_request(Some(&at(30_000)));
    assert_eq!(&*over.label, "echo:other");
    assert!(Arc::ptr_eq(&over, &ports.for_request(Some(&at(30_001)))));
    assert_eq!(&*ports.for_request(Some(&at(named))).label, "echo:20000");
}

/// Two ports with a bulkhead of one call each: a full port refuses its
/// second call (503 overloaded, counted under its own label) while the
/// other port still takes one.
#[tokio::test]
async fn each_ports_limit_applies_to_that_port_only() {
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let http = app(arrived.clone(), release.clone()).await;
    let grpc = app(arrived, release.clone()).await;
    let shared = Arc::new(Shared::new("test".into(), Metrics::new()));
    let one = "{concurrency: {maxInFlight: 1, maxQueued: 0}}";
    install(
        &shared,
        &format!("{}{}", inbound_policy(http, one), inbound_policy(grpc, one)),
    );
    let ports = Arc::new(ports(&shared, http));

    let first = tokio::spawn({
        let ports = ports.clone();
        async move { status(&ports, Some(grpc)).await }
    });
    let seen = tokio::time::timeout(DEADLINE, arrivals.recv()).await;
    assert_eq!(
        seen.ok().flatten(),
        Some(grpc),
        "the first call reached the app"
    );
    assert_eq!(
        status(&ports, Some(grpc)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "the port's one slot is taken"
    );

    // The main port (explicit mode, or its own original port) is not full.
    let second = tokio::spawn({
        let ports = ports.clone();
        async move { status(&ports, None).await }
    });
    let seen = tokio::time::timeout(DEADLINE, arrivals.recv()).await;
    assert_eq!(seen.ok().flatten(), Some(http), "the main port took a call");
    release.add_permits(2);
    assert_eq!(first.await.expect("join"), StatusCode::OK);
    assert_eq!(second.await.expect("join"), StatusCode::OK);

    let text = shared.metrics.encode();
    let overloaded = format!(
        r#"levee_rejected_total{{direction="inbound",service="echo:{grpc}",reason="overloaded"}} 1"#
    );
    assert!(text.contains(&overloaded), "{text}");
    assert!(
        text.contains(
            r#"levee_rejected_total{direction="inbound",service="echo",reason="overloaded"} 0"#
        ),
        "the main port refused nothing: {text}"
    );
    assert_eq!(
        status(&ports, Some(grpc)).await,
        StatusCode::OK,
        "free again once its call ended"
    );
}
