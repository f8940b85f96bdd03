//! The watch task against an in-process fake `Discovery` server: hello
//! fields, subscribe on first use, ACK/NACK messages, readiness, the cache,
//! a full resync after the server drops the stream, and the endpoint hold
//! after a reconnect (kept, then released when the hold is over).

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use levee_proto::policy::{Document, parse_documents};
use levee_proto::v1::discovery_server::{Discovery, DiscoveryServer};
use levee_proto::v1::watch_response::Kind as Response;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tonic::{Status, Streaming};

use super::*;
use crate::backoff::Backoff;
use crate::discovery::cache;
use crate::discovery::{DiscoveryConfig, Identity, LocalChecks, RECONNECT_BACKOFF};
use crate::metrics::Metrics;

type Responses = mpsc::UnboundedSender<Result<pb::WatchResponse, Status>>;

/// One `Watch` call the fake server received.
struct Session {
    requests: Streaming<pb::WatchRequest>,
    responses: Responses,
}

impl Session {
    async fn next(&mut self) -> Request {
        let message = tokio::time::timeout(Duration::from_secs(10), self.requests.message())
            .await
            .expect("a request within 10 s")
            .expect("no stream error")
            .expect("the stream is open");
        message.kind.expect("a request kind")
    }

    fn send(&self, update: pb::ServiceUpdate) {
        let response = pb::WatchResponse {
            kind: Some(Response::Update(update)),
        };
        self.responses.send(Ok(response)).expect("client listening");
    }
}

struct Fake {
    sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl Discovery for Fake {
    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        request: tonic::Request<Streaming<pb::WatchRequest>>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.sessions.send(Session {
            requests: request.into_inner(),
            responses: tx,
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

async fn fake_server() -> (String, mpsc::UnboundedReceiver<Session>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::unbounded_channel();
    let server = tonic::transport::Server::builder()
        .add_service(DiscoveryServer::new(Fake { sessions: tx }))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    (url, rx)
}

fn payments() -> ServiceKey {
    ServiceKey {
        name: "payments".into(),
        namespace: "shop".into(),
        port: 8080,
    }
}

fn policy(timeout: &str) -> pb::ResiliencePolicy {
    let yaml = format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: p, namespace: shop}}\n\
         spec: {{target: {{service: payments, port: 8080}}, outbound: {{timeouts: {{request: {timeout}}}}}}}\n"
    );
    match parse_documents(&yaml).expect("valid").remove(0) {
        Document::Policy(p) => pb::ResiliencePolicy::from(&p),
        Document::Endpoints(_) => unreachable!("a policy"),
    }
}

fn update(version: &str, nonce: &str, policy: Option<pb::ResiliencePolicy>) -> pb::ServiceUpdate {
    pb::ServiceUpdate {
        identities: Default::default(),
        service: Some(pb::ServiceRef::from(&payments())),
        version: version.into(),
        nonce: nonce.into(),
        policy_revision: 3,
        policy,
        endpoints: vec!["127.0.0.1:9001".into()],
        ..Default::default()
    }
}

/// The endpoint hold after a reconnect in the first test (short, to see it end).
const HOLD: Duration = Duration::from_secs(2);

/// The config of an anonymous proxy watching `url` (no identity, the
/// normal backoff and resync hold, plaintext), caching to `cache` if given;
/// tests change what they need with `..plain(url, cache)`.
fn plain(url: String, cache: Option<std::path::PathBuf>) -> DiscoveryConfig {
    DiscoveryConfig {
        url,
        identity: Identity::default(),
        cache,
        backoff: RECONNECT_BACKOFF,
        checks: LocalChecks { outbound: None },
        resync_hold: RESYNC_HOLD,
        tls: None,
        certified: None,
    }
}

/// The `orders.shop:8080` identity with its inbound on `127.0.0.1:4143`.
fn orders_identity() -> Identity {
    Identity::new(
        Some("orders"),
        "shop",
        8080,
        "127.0.0.1:4143".parse().expect("addr"),
    )
}

/// A fast reconnect backoff (10 to 50 ms), for tests that drop streams.
const FAST_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(10),
    max: Duration::from_millis(50),
};

/// Starts the watch task with `config`; returns what stops it.
async fn start(shared: &Arc<Shared>, config: DiscoveryConfig) -> (CancellationToken, TaskTracker) {
    let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
    crate::discovery::start(shared.clone(), config, shutdown.clone(), &tasks)
        .await
        .expect("start");
    (shutdown, tasks)
}

/// Starts watching `url` with [`plain`]'s config.
async fn start_plain(
    shared: &Arc<Shared>,
    url: String,
    cache: Option<std::path::PathBuf>,
) -> (CancellationToken, TaskTracker) {
    start(shared, plain(url, cache)).await
}

/// The first request to payments: it subscribes the service, `session`
/// answers with `version` and `nonce` (a policy with a `request` timeout),
/// the proxy ACKs it and the waiting request goes on with the subscription
/// it returns.
async fn first_request_to_payments(
    shared: &Arc<Shared>,
    session: &mut Session,
    (version, nonce): (&str, &str),
    request: &str,
) -> Arc<crate::subscriptions::Subscription> {
    let waiter = {
        let shared = shared.clone();
        tokio::spawn(async move { shared.discovered(&payments()).await })
    };
    let Request::Subscribe(subscribe) = session.next().await else {
        panic!("subscribe");
    };
    assert_eq!(subscribe.services, vec![pb::ServiceRef::from(&payments())]);
    session.send(update(version, nonce, Some(policy(request))));
    let Request::Ack(ack) = session.next().await else {
        panic!("ack");
    };
    assert_eq!((ack.version.as_str(), ack.nonce.as_str()), (version, nonce));
    waiter.await.expect("the waiting request goes on")
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn hello_subscribe_ack_nack_and_resync_after_a_dropped_stream() {
    let (url, mut sessions) = fake_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_path = dir.path().join("cache.json");
    let shared = Arc::new(Shared::new("shop".into(), Metrics::new()));
    let config = DiscoveryConfig {
        identity: orders_identity(),
        backoff: FAST_BACKOFF,
        checks: LocalChecks {
            outbound: Some("127.0.0.1:4140".parse().expect("addr")),
        },
        resync_hold: HOLD,
        ..plain(url.clone(), Some(cache_path.clone()))
    };
    let (shutdown, tasks) = start(&shared, config).await;

    let mut first = sessions.recv().await.expect("a watch call");
    let Request::Hello(hello) = first.next().await else {
        panic!("hello first");
    };
    assert_eq!(
        (hello.service.as_str(), hello.namespace.as_str()),
        ("orders", "shop")
    );
    assert_eq!((hello.service_port, hello.inbound_port), (8080, 4143));
    assert_eq!(hello.address, "127.0.0.1");
    assert!(hello.proxy_version.starts_with("levee-proxy/"));
    // Its own service is subscribed from the start (for its inbound policy);
    // the proxy is ready once that is answered.
    let orders = ServiceKey {
        name: "orders".into(),
        namespace: "shop".into(),
        port: 8080,
    };
    assert_eq!(hello.subscriptions, vec![pb::ServiceRef::from(&orders)]);
    assert!(!shared.is_ready());
    first.send(pb::ServiceUpdate {
        service: Some(pb::ServiceRef::from(&orders)),
        version: "0-empty".into(),
        nonce: "n0".into(),
        ..pb::ServiceUpdate::default()
    });
    let Request::Ack(ack) = first.next().await else {
        panic!("ack");
    };
    assert_eq!(ack.nonce, "n0");
    until("ready", || shared.is_ready()).await;
    assert_eq!(
        shared.snapshot.load().source,
        format!("control-plane:{url}")
    );
    let metrics = shared.metrics.encode();
    assert!(
        metrics.contains("levee_control_plane_connected 1\n"),
        "{metrics}"
    );

    // The first request to payments subscribes it and waits for the answer.
    first_request_to_payments(&shared, &mut first, ("3-a", "n1"), "2s").await;
    let applied = shared.snapshot.load_full();
    assert!(shared.policy_for(&payments()).is_some());
    assert_eq!(applied.endpoints.get(&payments()).map(|e| e.len()), Some(1));
    assert!(shared.metrics.encode().contains("levee_policy_version 3\n"));

    // An invalid policy: NACK with the field problem; nothing changes.
    let mut broken = policy("2s");
    broken.spec = None;
    first.send(update("4-b", "n2", Some(broken)));
    let Request::Nack(nack) = first.next().await else {
        panic!("nack");
    };
    assert_eq!((nack.version.as_str(), nack.nonce.as_str()), ("4-b", "n2"));
    assert!(nack.reason.contains("spec: missing"), "{}", nack.reason);
    assert_eq!(shared.snapshot.load().version, applied.version);
    assert_eq!(shared.metrics.policy_updates(false), 1);
    // The cache holds the last good state.
    until("the cache", || {
        std::fs::read_to_string(&cache_path).is_ok_and(|t| t.contains("3-a"))
    })
    .await;

    // The server drops the stream: the proxy reconnects and resubscribes.
    first
        .responses
        .send(Err(Status::unavailable("control plane shutting down")))
        .expect("send");
    let mut second = sessions.recv().await.expect("a second watch call");
    let Request::Hello(hello) = second.next().await else {
        panic!("hello again");
    };
    // The stream came up about now (the hold counts from then).
    let reconnected = Instant::now();
    assert_eq!(
        hello.subscriptions,
        vec![
            pb::ServiceRef::from(&orders),
            pb::ServiceRef::from(&payments())
        ]
    );
    // Same content: ACKed, not reinstalled.
    second.send(update("3-a", "n3", Some(policy("2s"))));
    let Request::Ack(ack) = second.next().await else {
        panic!("ack");
    };
    assert_eq!(ack.nonce, "n3");
    assert_eq!(shared.snapshot.load().version, applied.version);
    assert!(shared.is_ready());

    // Right after reconnecting, an update without endpoints (a restarted
    // control plane that has not seen the replicas again) does not take them away.
    let mut emptied = update("3-c", "n4", Some(policy("2s")));
    emptied.endpoints.clear();
    second.send(emptied);
    let Request::Ack(ack) = second.next().await else {
        panic!("ack");
    };
    assert_eq!(ack.version, "3-c");
    until("the update to be installed", || {
        shared.snapshot.load().version > applied.version
    })
    .await;
    let held = shared.snapshot.load();
    assert_eq!(
        held.endpoints.get(&payments()).map(|e| e.to_vec()),
        Some(vec!["127.0.0.1:9001".parse().expect("addr")]),
        "held through the resync"
    );
    let held_version = held.version;

    // The hold ends: what the control plane said stands (no endpoints, so
    // DNS), the policy stays, and the proxy reinstalls without being asked.
    until("the held endpoints to be released", || {
        !shared.snapshot.load().endpoints.contains_key(&payments())
    })
    .await;
    let released = shared.snapshot.load();
    assert!(
        reconnected.elapsed() >= HOLD - Duration::from_millis(250),
        "released after {:?}, before the {HOLD:?} hold was over",
        reconnected.elapsed()
    );
    assert!(released.version > held_version);
    assert!(released.policy_for(&payments()).is_some());
    assert!(
        released.source.starts_with("control-plane:"),
        "{}",
        released.source
    );

    shutdown.cancel();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .expect("the watch task stops on shutdown");
}

#[tokio::test]
async fn an_unreachable_control_plane_falls_back_to_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_path = dir.path().join("cache.json");
    let mut services = Services::default();
    services
        .apply(
            &update("3-a", "n", Some(policy("750ms"))),
            LocalChecks { outbound: None },
        )
        .expect("valid");
    cache::write(
        &cache_path,
        cache::encode(&services, "http://x").expect("encode"),
    )
    .await
    .expect("write");
    // A port nothing listens on.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let shared = Arc::new(Shared::new("shop".into(), Metrics::new()));
    let (shutdown, tasks) = start_plain(
        &shared,
        format!("http://{unused}"),
        Some(cache_path.clone()),
    )
    .await;
    until("ready from the cache", || shared.is_ready()).await;
    let snapshot = shared.snapshot.load();
    assert!(
        snapshot.source.starts_with("policy-cache:"),
        "{}",
        snapshot.source
    );
    assert!(snapshot.policy_for(&payments()).is_some());
    // Known from the cache: a request does not wait.
    tokio::time::timeout(Duration::from_millis(100), shared.discovered(&payments()))
        .await
        .expect("no wait");
    // Dropped while disconnected: forgotten at once, not at the next stream.
    shared.subscriptions.unsubscribe([&payments()]);
    until("payments forgotten offline", || {
        shared.snapshot.load().policy_for(&payments()).is_none()
    })
    .await;
    assert!(shared.is_ready(), "still serving what is left");
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
}

mod addresses;
mod refusals;
mod replicas;
mod unsubscribe;
