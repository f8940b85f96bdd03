use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use levee_proto::policy::parse_documents;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{AdminLimits, serve};
use crate::metrics::{Direction, Metrics, outcome};
use crate::state::{Shared, Snapshot};

const POLICY: &str = r#"
apiVersion: levee.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: payments, namespace: shop}
spec:
  target: {service: payments, port: 8080}
  outbound:
    timeouts: {request: 2s}
    routes:
      - name: create-payment
        match: {pathPrefix: /payments, methods: [POST]}
        timeouts: {request: 5s}
---
apiVersion: levee.dev/v1alpha1
kind: ServiceEndpoints
metadata: {name: payments, namespace: shop}
spec: {service: payments, port: 8080, addresses: ["127.0.0.1:9001", "127.0.0.1:9002"]}
"#;

pub(super) struct Admin {
    pub(super) addr: SocketAddr,
    shared: Arc<Shared>,
    pub(super) shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start() -> Admin {
    start_with(AdminLimits::default()).await
}

pub(super) async fn start_with(limits: AdminLimits) -> Admin {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shared = Arc::new(Shared::new("default".into(), Metrics::new()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, shared.clone(), limits, shutdown.clone()));
    Admin {
        addr,
        shared,
        shutdown,
        task,
    }
}

pub(super) struct Answer {
    pub(super) status: u16,
    head: String,
    body: String,
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut raw))
        .await
        .expect("answer in time")
        .expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

pub(super) async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path).await
}

fn json(answer: &Answer) -> Value {
    assert!(
        answer.head.contains("content-type: application/json"),
        "{}",
        answer.head
    );
    serde_json::from_str(&answer.body).expect("valid JSON")
}

fn load(shared: &Shared) {
    let documents = parse_documents(POLICY).expect("valid policy");
    let snapshot =
        Snapshot::from_documents(documents, &shared.namespace, "file:/etc/levee/policy.yaml")
            .expect("snapshot");
    shared.install(snapshot);
    shared.set_ready(true);
}

#[tokio::test]
async fn live_ready_and_unknown_paths() {
    let admin = start().await;
    let live = get(admin.addr, "/live").await;
    assert_eq!((live.status, live.body.as_str()), (200, "ok\n"));

    let ready = get(admin.addr, "/ready").await;
    assert_eq!(ready.status, 503, "not ready before a config is in place");
    admin.shared.set_ready(true);
    assert_eq!(get(admin.addr, "/ready").await.status, 200);

    assert_eq!(get(admin.addr, "/nope").await.status, 404);
    assert_eq!(get(admin.addr, "/live/x").await.status, 404);
    let post = request(admin.addr, "POST", "/live").await;
    assert_eq!(post.status, 405);
    assert!(post.head.contains("allow: get, head"), "{}", post.head);

    admin.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), admin.task).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "serve returns after shutdown"
    );
}

#[tokio::test]
async fn metrics_are_served_as_openmetrics() {
    let admin = start().await;
    admin
        .shared
        .metrics
        .requests(Direction::Outbound, "payments.shop:8080", "default")
        .record("200", outcome::SUCCESS, Duration::from_millis(1));
    let answer = get(admin.addr, "/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .head
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{}",
        answer.head
    );
    assert!(
        answer.body.contains("levee_policy_version 0\n"),
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains(
            r#"levee_requests_total{direction="outbound",service="payments.shop:8080",route="default",code="200",outcome="success"} 1"#
        ),
        "{}",
        answer.body
    );
    assert!(answer.body.ends_with("# EOF\n"));
    admin.shutdown.cancel();
}

#[tokio::test]
async fn config_shows_the_snapshot_in_force() {
    let admin = start().await;
    let empty = json(&get(admin.addr, "/config").await);
    assert_eq!(empty["version"], 0);
    assert_eq!(empty["loadedAt"], Value::Null);

    load(&admin.shared);
    let config = json(&get(admin.addr, "/config").await);
    assert_eq!(config["version"], 1);
    assert_eq!(config["source"], "file:/etc/levee/policy.yaml");
    let loaded_at = config["loadedAt"].as_str().expect("loadedAt");
    assert!(
        loaded_at.len() == 20 && loaded_at.ends_with('Z'),
        "{loaded_at}"
    );
    let policy = &config["policies"][0];
    assert_eq!(policy["service"], "payments.shop:8080");
    assert_eq!(policy["policy"]["kind"], "ResiliencePolicy");
    assert_eq!(policy["policy"]["metadata"]["name"], "payments");
    let effective = &policy["effective"]["outbound"];
    assert_eq!(effective["default"]["route"], "default");
    assert_eq!(effective["default"]["timeouts"]["request"], "2s");
    assert_eq!(
        effective["default"]["timeouts"]["connect"], "1s",
        "defaults filled in"
    );
    assert_eq!(effective["routes"][0]["route"], "create-payment");
    assert_eq!(effective["routes"][0]["timeouts"]["request"], "5s");
    assert_eq!(
        config["endpoints"]["payments.shop:8080"],
        serde_json::json!(["127.0.0.1:9001", "127.0.0.1:9002"])
    );
    admin.shutdown.cancel();
}

#[tokio::test]
async fn config_shows_the_identity_files_certificate_never_its_key() {
    let admin = start().await;
    let config = json(&get(admin.addr, "/config").await);
    assert!(config.get("identity").is_none(), "no identity: {config}");
    let ca = levee_tests::harness::certs::TestCa::new("levee admin CA");
    let w = ca.workload("spiffe://levee.test/ns/shop/sa/web");
    let credentials = crate::tls::Credentials::from_der(
        vec![w.cert_der.clone()],
        w.key_der.clone(),
        vec![ca.der.clone()],
    )
    .expect("credentials");
    admin
        .shared
        .tls
        .install(Arc::new(credentials))
        .expect("installed");
    let answer = get(admin.addr, "/config").await;
    let identity = &json(&answer)["identity"];
    assert_eq!(identity["state"], "certified");
    assert_eq!(identity["source"], "files");
    assert_eq!(identity["spiffeId"], w.id);
    assert_eq!(identity["issuer"], "CN=levee admin CA");
    assert_eq!(identity["service"], Value::Null);
    let not_after = identity["notAfter"].as_str().expect("notAfter");
    assert!(not_after.ends_with('Z'), "{not_after}");
    assert!(!answer.body.contains("PRIVATE"), "{}", answer.body);
    admin.shutdown.cancel();
}

#[tokio::test]
async fn endpoints_lists_static_and_dns_answers() {
    let admin = start().await;
    load(&admin.shared);
    let localhost = levee_proto::policy::ServiceKey {
        name: "localhost".into(),
        namespace: "default".into(),
        port: 8080,
    };
    admin
        .shared
        .resolve(&localhost)
        .await
        .expect("localhost resolves");

    let body = json(&get(admin.addr, "/endpoints").await);
    let services = &body["services"];
    assert_eq!(services["payments.shop:8080"]["source"], "static");
    assert_eq!(
        services["payments.shop:8080"]["addresses"][1],
        "127.0.0.1:9002"
    );
    let dns = &services["localhost.default:8080"];
    assert_eq!(dns["source"], "dns");
    assert_eq!(dns["host"], "localhost");
    let first = dns["addresses"][0].as_str().expect("an address");
    let address: SocketAddr = first.parse().expect("socket address");
    assert!(
        address.ip().is_loopback() && address.port() == 8080,
        "{address}"
    );
    admin.shutdown.cancel();
}

#[tokio::test]
async fn endpoints_from_the_control_plane_say_so() {
    let admin = start().await;
    for (source, label) in [
        ("control-plane:http://127.0.0.1:8090", "control-plane"),
        (
            "policy-cache:/var/lib/levee/cache.json (control plane http://127.0.0.1:8090 unreachable)",
            "policy-cache",
        ),
        ("file:/etc/levee/policy.yaml", "static"),
    ] {
        let documents = parse_documents(POLICY).expect("valid policy");
        let snapshot =
            Snapshot::from_documents(documents, &admin.shared.namespace, source).expect("snapshot");
        admin.shared.install(snapshot);
        let body = json(&get(admin.addr, "/endpoints").await);
        assert_eq!(
            body["services"]["payments.shop:8080"]["source"], label,
            "{source}"
        );
    }
    admin.shutdown.cancel();
}
