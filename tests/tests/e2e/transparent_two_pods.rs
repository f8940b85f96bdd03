//! Transparent mode across two "pods": a server namespace (a `levee-flaky`
//! app and an HTTP app on loopback, their sidecar, `init-iptables`
//! applied) and a client namespace (its sidecar with a policy file naming
//! the server's service, `init-iptables` applied) joined by a veth pair.
//! An unmodified client (`curl`, run in the client namespace) calls the
//! server pod's IP:port with a `Host` naming the service: the client
//! sidecar enforces the policy (retries hide the app's 503s; a breaker
//! ejects a failing endpoint), the server sidecar sees every attempt
//! inbound, and the apps run with no Levee flag or variable at all.

use std::{net::SocketAddr, path::Path, time::Duration};

use levee_proto::policy::Document;
use levee_tests::harness::{
    Metrics, Process, binary, eventually,
    netns::{B_V4, Netns, NetnsPair, NetnsProxy},
    yaml,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const PROXY_UID: u32 = 2102;
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);
/// The service the client calls, as the client sidecar's counters name it.
const SERVICE: &str = "web.default:9080";

/// `levee-flaky` inside `ns` on `127.0.0.1:port` (only the sidecar reaches
/// it), with an empty environment and no flag about Levee: the app does
/// not know it has a sidecar. Returns once it answers.
pub(crate) async fn flaky_app(
    ns: &Netns,
    port: u16,
    id: &str,
    fail_rate: &str,
    log: &Path,
) -> Process {
    let mut cmd = ns.command(binary("levee-flaky"));
    cmd.env_clear()
        .env("RUST_LOG", "warn")
        .args(["--addr", &format!("127.0.0.1:{port}"), "--id", id])
        .args(["--status", "503", "--fail-rate", fail_rate]);
    let process = Process::spawn("levee-flaky", cmd, log).expect("spawn levee-flaky");
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    eventually(DEADLINE, "the flaky app answers", || async move {
        ns.connect(target).map(drop).map_err(|e| e.to_string())
    })
    .await;
    process
}

/// An HTTP/1.1 app inside `ns` on `127.0.0.1:port`: answers each request
/// with its head as the body.
fn echo_app(ns: &Netns, port: u16) {
    let listener = ns.listen(SocketAddr::from(([127, 0, 0, 1], port)));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    head.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.write_all(&head).await;
            });
        }
    });
}

/// `curl` inside `ns`: a plain GET of `http://target/` with `host`. Its
/// status code and body.
pub(crate) async fn curl(ns: &Netns, target: SocketAddr, host: &str) -> (String, String) {
    let url = format!("http://{target}/hello");
    let host = format!("host: {host}");
    let out = ns
        .output(
            "curl",
            &[
                "-sS",
                "--max-time",
                "8",
                "-H",
                &host,
                "-w",
                "\n%{http_code}",
                &url,
            ],
        )
        .await;
    assert!(
        out.status.success(),
        "curl {url} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match stdout.rsplit_once('\n') {
        Some((body, code)) => (code.to_owned(), body.to_owned()),
        None => (stdout, String::new()),
    }
}

/// The sidecar's `/metrics` in `ns`, over loopback (not captured).
pub(crate) async fn metrics(ns: &Netns) -> Metrics {
    let mut conn = ns
        .connect(SocketAddr::from(([127, 0, 0, 1], 4191)))
        .expect("connect to the admin port");
    conn.write_all(b"GET /metrics HTTP/1.0\r\nhost: admin\r\n\r\n")
        .await
        .expect("send");
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut got))
        .await
        .expect("metrics in time")
        .expect("read");
    let text = String::from_utf8_lossy(&got);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Metrics::parse(body).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

pub(crate) async fn init_iptables(ns: &Netns) {
    let init = ns
        .output(&binary("levee-proxy").to_string_lossy(), &["init-iptables"])
        .await;
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
}

/// The client sidecar in `ns`, with `docs` as its policy file (written in
/// `dir`, readable by the proxy uid).
async fn client_sidecar(ns: &Netns, dir: &Path, docs: &[Document]) -> NetnsProxy {
    let path = dir.join("policy.yaml");
    std::fs::write(&path, yaml::documents(docs)).expect("write the policy");
    for (p, mode) in [(dir, 0o755), (path.as_path(), 0o644)] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
    }
    let path = path.to_string_lossy();
    ns.start_proxy(PROXY_UID, &["--policy-file", path.as_ref()])
        .await
}

/// Client calls sent in the retry test.
const CALLS: usize = 20;

#[tokio::test]
async fn the_client_sidecar_retries_an_unmodified_clients_calls_to_the_server_pod() {
    let NetnsPair {
        a: client,
        b: server,
    } = NetnsPair::create();
    let dir = tempfile::tempdir().expect("temp dir");

    // Server pod: apps on loopback, sidecar, interception.
    let _flaky = flaky_app(&server, 9080, "web-1", "0.3", &dir.path().join("flaky.log")).await;
    echo_app(&server, 9081);
    init_iptables(&server).await;
    let _server_sidecar = server.start_proxy(PROXY_UID, &[]).await;

    // Client pod: interception, sidecar with the service's endpoints and a
    // retry on 503 (maxRetries 10: all eleven attempts failing at 30% is a
    // one-in-a-half-million event per call).
    init_iptables(&client).await;
    let policy_dir = tempfile::tempdir().expect("temp dir");
    let _client_sidecar = client_sidecar(
        &client,
        policy_dir.path(),
        &[
            yaml::endpoints("web", 9080, &[SocketAddr::new(B_V4, 9080)]),
            yaml::policy(
                "web",
                9080,
                "  outbound:\n    retry:\n      maxRetries: 10\n      on: [\"503\"]\n      \
                 backoff: {base: 1ms, max: 5ms}\n      \
                 budget: {percent: 100, minPerSecond: 1000, window: 10s}\n",
            ),
            yaml::endpoints("echo", 9081, &[SocketAddr::new(B_V4, 9081)]),
        ],
    )
    .await;

    let target = SocketAddr::new(B_V4, 9080);
    for i in 0..CALLS {
        let (code, body) = curl(&client, target, "web:9080").await;
        assert_eq!(code, "200", "call {i}: {body}");
    }

    // The HTTP app sees the client's own request, nothing of Levee's
    // configuration, having been reached through both sidecars.
    let (code, head) = curl(&client, SocketAddr::new(B_V4, 9081), "echo:9081").await;
    assert_eq!(code, "200", "{head}");
    assert!(head.starts_with("GET /hello HTTP/1.1"), "{head}");
    assert!(head.contains("host: echo:9081"), "{head}");
    assert!(
        head.contains("x-levee-hops: 2"),
        "the request did not cross both sidecars: {head}"
    );

    let c = metrics(&client).await;
    let served = c.value(
        "levee_requests_total",
        &[
            ("direction", "outbound"),
            ("service", SERVICE),
            ("code", "200"),
        ],
    );
    assert_eq!(served, CALLS as f64, "{}", c.text);
    let retries = c.sum("levee_retries_total", &[("service", SERVICE)]);
    assert!(
        retries.is_some_and(|r| r > 0.0),
        "no retry at 30% failures: {}",
        c.text
    );
    let retries = retries.unwrap_or_default();

    // Every attempt, first tries and retries alike, arrived inbound.
    let s = metrics(&server).await;
    let inbound = s
        .sum("levee_requests_total", &[("direction", "inbound")])
        .unwrap_or_default();
    assert_eq!(
        inbound,
        CALLS as f64 + retries + 1.0,
        "calls + retries + the echo call: {}",
        s.text
    );
    let inbound_503 = s
        .sum(
            "levee_requests_total",
            &[("direction", "inbound"), ("code", "503")],
        )
        .unwrap_or_default();
    assert_eq!(inbound_503, retries, "{}", s.text);
}

/// The `requests` count of the `levee-flaky` app on `127.0.0.1:port` in
/// `ns`, read on loopback (not captured, not through the sidecar).
async fn app_requests(ns: &Netns, port: u16) -> u64 {
    let mut conn = ns
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("connect to the app");
    conn.write_all(b"GET /__flaky/stats HTTP/1.0\r\nhost: stats\r\n\r\n")
        .await
        .expect("send");
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut got))
        .await
        .expect("stats in time")
        .expect("read");
    let text = String::from_utf8_lossy(&got);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let stats: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    stats["requests"]
        .as_u64()
        .unwrap_or_else(|| panic!("no requests count: {text}"))
}

#[tokio::test]
async fn the_client_sidecars_breaker_ejects_a_hard_failing_server_endpoint() {
    let NetnsPair {
        a: client,
        b: server,
    } = NetnsPair::create();
    let dir = tempfile::tempdir().expect("temp dir");
    let _bad = flaky_app(&server, 9080, "bad", "1", &dir.path().join("bad.log")).await;
    let _good = flaky_app(&server, 9082, "good", "0", &dir.path().join("good.log")).await;
    init_iptables(&server).await;
    let _server_sidecar = server.start_proxy(PROXY_UID, &[]).await;

    init_iptables(&client).await;
    let policy_dir = tempfile::tempdir().expect("temp dir");
    let _client_sidecar = client_sidecar(
        &client,
        policy_dir.path(),
        &[
            yaml::endpoints(
                "web",
                9080,
                &[SocketAddr::new(B_V4, 9080), SocketAddr::new(B_V4, 9082)],
            ),
            yaml::policy(
                "web",
                9080,
                "  outbound:\n    retry:\n      maxRetries: 6\n      on: [\"503\"]\n      \
                 backoff: {base: 1ms, max: 5ms}\n      \
                 budget: {percent: 100, minPerSecond: 1000, window: 10s}\n    \
                 circuitBreaker:\n      consecutiveFailures: 3\n      \
                 open: {base: 60s, max: 60s}\n",
            ),
        ],
    )
    .await;

    // The client dials the bad endpoint's address; the sidecar balances
    // over the service's endpoints, retries, and ejects the bad one.
    let target = SocketAddr::new(B_V4, 9080);
    for i in 0..CALLS {
        let (code, body) = curl(&client, target, "web:9080").await;
        assert_eq!(code, "200", "call {i}: {body}");
    }
    let c = metrics(&client).await;
    let ejected = c.sum(
        "levee_endpoints",
        &[("service", SERVICE), ("state", "ejected")],
    );
    assert_eq!(ejected, Some(1.0), "{}", c.text);
    let bad_circuit = c.sum(
        "levee_circuit_state",
        &[("service", SERVICE), ("endpoint", "10.213.0.2:9080")],
    );
    assert_eq!(
        bad_circuit,
        Some(1.0),
        "the bad endpoint's breaker: {}",
        c.text
    );

    // Ejected: further calls never reach the bad app.
    let bad_before = app_requests(&server, 9080).await;
    assert!(bad_before >= 3, "the bad app saw {bad_before} requests");
    for i in 0..CALLS {
        let (code, body) = curl(&client, target, "web:9080").await;
        assert_eq!(code, "200", "call {i} after ejection: {body}");
    }
    assert_eq!(app_requests(&server, 9080).await, bad_before);
    assert!(app_requests(&server, 9082).await >= 2 * CALLS as u64);
}
