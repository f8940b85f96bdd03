//! Discovery by address across two "pods": the client namespace runs
//! `levee-control-plane` (on its loopback) and a sidecar in control-plane
//! mode; the server namespace runs a `levee-flaky` app and an HTTP app
//! behind its own sidecar. A `ServiceEndpoints` document names the
//! server's endpoint and a virtual IP (routable from the client namespace,
//! owned by no interface: only the client's iptables rules ever see it).
//! An unmodified `curl` calling the virtual IP — or the endpoint's own
//! address — gets the service's policy (retries counted under the
//! service's label); an address no service owns is passed through.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use levee_proto::policy::Document;
use levee_tests::harness::{
    Process, binary, eventually,
    netns::{B_V4, Netns, NetnsPair},
    pods::PROXY_UID,
    yaml,
};

const DEADLINE: Duration = Duration::from_secs(10);

/// `curl` inside `ns`: a GET of `http://target/hello` with `host`; its
/// status code and body.
async fn curl(ns: &Netns, target: SocketAddr, host: &str) -> (String, String) {
    let url = format!("http://{target}/hello");
    let out = ns.curl(&["-H", &format!("host: {host}"), &url]).await;
    assert!(out.exit.success(), "curl {url} failed: {}", out.stderr);
    (out.status.to_string(), out.body)
}

/// The service's virtual IP: inside the veth's /24 (so the client
/// namespace has a route), on no interface.
const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 213, 0, 100));
const SERVICE: &str = "web.default:9080";
const GRPC: &str = "127.0.0.1:18090";

/// `levee-control-plane` inside `ns`, on its loopback; returns once it
/// accepts connections.
async fn control_plane(ns: &Netns, dir: &Path) -> Process {
    let mut cmd = ns.command(binary("levee-control-plane"));
    cmd.env_clear()
        .env("RUST_LOG", "info")
        .args(["--grpc-addr", GRPC, "--http-addr", "127.0.0.1:18091"])
        .arg("--insecure-plaintext")
        .arg("--data-dir")
        .arg(dir.join("data"));
    let process = Process::spawn("levee-control-plane", cmd, &dir.join("control-plane.log"))
        .expect("spawn levee-control-plane");
    let grpc: SocketAddr = GRPC.parse().expect("addr");
    eventually(DEADLINE, "the control plane listens", || async move {
        ns.connect(grpc).map(drop).map_err(|e| e.to_string())
    })
    .await;
    process
}

/// `leveectl apply -f` inside `ns`.
async fn apply(ns: &Netns, dir: &Path, docs: &[Document]) {
    let path = dir.join("apply.yaml");
    std::fs::write(&path, yaml::documents(docs)).expect("write the documents");
    let leveectl = binary("leveectl");
    let out = ns
        .output(
            &leveectl.to_string_lossy(),
            &[
                "--server",
                &format!("http://{GRPC}"),
                "apply",
                "-f",
                &path.to_string_lossy(),
            ],
        )
        .await;
    assert!(
        out.status.success(),
        "leveectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn calls_to_a_virtual_ip_or_an_endpoint_get_the_services_policy() {
    let NetnsPair {
        a: client,
        b: server,
    } = NetnsPair::create();
    let dir = tempfile::tempdir().expect("temp dir");

    // Server pod: a flaky app (30% 503s), an app no document names, the sidecar.
    let flaky_args = ["--id", "web-1", "--status", "503", "--fail-rate", "0.3"];
    let _flaky = server
        .flaky_app(9080, &flaky_args, &dir.path().join("flaky.log"))
        .await;
    let other_args = ["--id", "other", "--status", "503", "--fail-rate", "0"];
    let _other = server
        .flaky_app(9081, &other_args, &dir.path().join("other.log"))
        .await;
    server.init_iptables(&[]).await;
    let _server_sidecar = server.start_proxy(PROXY_UID, &[]).await;

    // Client pod: the control plane, the service's endpoint, virtual IP and
    // retry policy applied to it, interception, the sidecar.
    let _cp = control_plane(&client, dir.path()).await;
    let mut endpoints = yaml::endpoints("web", 9080, &[SocketAddr::new(B_V4, 9080)]);
    if let Document::Endpoints(e) = &mut endpoints {
        e.spec.virtual_ips = vec![VIP];
    }
    let retry = yaml::policy(
        "web",
        9080,
        "  outbound:\n    retry:\n      maxRetries: 10\n      on: [\"503\"]\n      \
         backoff: {base: 1ms, max: 5ms}\n      \
         budget: {percent: 100, minPerSecond: 1000, window: 10s}\n",
    );
    apply(&client, dir.path(), &[endpoints, retry]).await;
    client.init_iptables(&[]).await;
    let _client_sidecar = client
        .start_proxy(
            PROXY_UID,
            &[
                "--control-plane",
                &format!("http://{GRPC}"),
                "--insecure-plaintext",
            ],
        )
        .await;
    eventually(DEADLINE, "the client sidecar's stream is up", || async {
        let m = client.admin_metrics().await;
        match m.sum("levee_control_plane_connected", &[]) {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // curl's own Host (the address it dials) names no service: the
    // address decides.
    const CALLS: usize = 20;
    let vip = SocketAddr::new(VIP, 9080);
    for i in 0..CALLS {
        let (code, body) = curl(&client, vip, &vip.to_string()).await;
        assert_eq!(code, "200", "call {i} to the virtual IP: {body}");
    }
    let endpoint = SocketAddr::new(B_V4, 9080);
    for i in 0..CALLS {
        let (code, body) = curl(&client, endpoint, &endpoint.to_string()).await;
        assert_eq!(code, "200", "call {i} to the endpoint: {body}");
    }
    let unknown = SocketAddr::new(B_V4, 9081);
    let (code, body) = curl(&client, unknown, &unknown.to_string()).await;
    assert_eq!(code, "200", "the unknown address: {body}");

    let c = client.admin_metrics().await;
    let served = c.value(
        "levee_requests_total",
        &[
            ("direction", "outbound"),
            ("service", SERVICE),
            ("code", "200"),
        ],
    );
    assert_eq!(served, (2 * CALLS) as f64, "{}", c.text);
    let retries = c.sum("levee_retries_total", &[("service", SERVICE)]);
    assert!(
        retries.is_some_and(|r| r > 0.0),
        "no retry at 30% failures: {}",
        c.text
    );
    let passthrough = c.value(
        "levee_requests_total",
        &[
            ("direction", "outbound"),
            ("service", "passthrough:10.213.0.2:9081"),
            ("code", "200"),
        ],
    );
    assert_eq!(passthrough, 1.0, "{}", c.text);
}
