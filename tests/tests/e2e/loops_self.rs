//! A proxy never forwards to its own outbound or admin listener, whatever
//! spelling of the address the caller's `Host`, a policy's
//! `ServiceEndpoints` or DNS used: such a call gets 508 `loop-detected` at
//! the first hop (the detail names the listener), its file descriptors stay
//! bounded, and the proxy serves a normal call at once afterwards. Its
//! inbound listener is a valid target (the workload's own endpoint), and
//! an `--app-port` that is one of its listeners is refused at startup.

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use levee_tests::harness::mesh::{CONVERGE, apply, call, mesh_proxy};
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{
        ControlPlane, HttpResponse, Proxy, empty, eventually, get_http1, send_http1, send_http2,
        upstream, yaml,
    },
};

/// Extra descriptors a proxy may hold after a burst of refused calls
/// (pooled connections, the log, a timer); a loop would open hundreds.
const FD_SLACK: usize = 16;

/// Asserts a 508 `loop-detected` refused at the first hop, because the
/// target is one of the proxy's own listeners.
pub fn assert_own_listener_refused(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, 508, "{what}: {r:?}");
    assert_eq!(r.header("x-levee-error"), "loop-detected", "{what}: {r:?}");
    let json = r
        .json()
        .unwrap_or_else(|e| panic!("{what}: JSON body: {e}"));
    let detail = json["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("own listener"), "{what}: {detail}");
}

/// The proxy's open file descriptors.
pub fn fds(proxy: &Proxy) -> usize {
    proxy
        .process
        .open_fds()
        .unwrap_or_else(|e| panic!("counting the proxy's fds: {e}"))
}

/// Waits (briefly: closed client connections take a moment to be noticed)
/// until the proxy holds at most `before` + [`FD_SLACK`] descriptors.
pub async fn assert_fds_bounded(proxy: &Proxy, before: usize) {
    eventually(
        Duration::from_secs(5),
        "the proxy's fds to stay bounded",
        || async {
            match fds(proxy) {
                now if now <= before + FD_SLACK => Ok(()),
                now => Err(format!("{before} fds before, {now} now")),
            }
        },
    )
    .await;
}

/// A call to `web:80` (the flaky upstream) succeeds at once.
pub async fn assert_serves(proxy: &Proxy) {
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        get_http1(proxy.outbound(), "web:80", "/"),
    )
    .await
    .expect("a normal call answers at once after the refusals")
    .expect("a normal call");
    assert_eq!(r.status, 200, "{r:?}");
}

fn spell(hosts: &[&str], port: u16) -> Vec<String> {
    hosts.iter().map(|h| format!("{h}:{port}")).collect()
}

/// A proxy whose inbound and admin listeners are bound to wildcards (as in
/// a pod), in front of a flaky upstream both as `web:80` and as its app.
async fn wildcard_proxy() -> (FlakyUpstream, Proxy) {
    let up = FlakyUpstream::start("loop-1").await.expect("upstream");
    let proxy = Proxy::builder()
        .listen("127.0.0.1:0", "0.0.0.0:0", "[::]:0")
        .fronting(up.addr())
        .start()
        .await;
    (up, proxy)
}

#[tokio::test]
async fn host_naming_the_outbound_or_admin_listener_in_any_spelling_gets_508() {
    let (up, proxy) = wildcard_proxy().await;
    let (outbound, admin) = (proxy.outbound().port(), proxy.admin().port());
    // The outbound listener is bound to 127.0.0.1 only; these all resolve
    // (as IP literals or through the system resolver) to an address that
    // reaches it.
    let mut targets = spell(
        &[
            "127.0.0.1",
            "localhost",
            "LocalHost",
            "127.1",
            "127.0.1",
            "2130706433",
            "0x7f000001",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "0.0.0.0",
            "0",
            "[::]",
            "[0:0:0:0:0:0:0:0]",
        ],
        outbound,
    );
    // The admin listener is bound to `::`: every local address reaches it.
    targets.extend(spell(
        &[
            "127.0.0.1",
            "127.0.0.2",
            "127.255.255.254",
            "localhost",
            "127.1",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "0.0.0.0",
            "[::]",
        ],
        admin,
    ));
    let before = fds(&proxy);
    for target in &targets {
        let r = get_http1(proxy.outbound(), target, "/")
            .await
            .unwrap_or_else(|e| panic!("Host {target}: {e}"));
        assert_own_listener_refused(&r, &format!("Host {target}"));
        // The HTTP_PROXY spelling: absolute form.
        let req = Request::get(format!("http://{target}/abs"))
            .header("host", target.as_str())
            .body(empty())
            .expect("request");
        let r = send_http1(proxy.outbound(), req)
            .await
            .unwrap_or_else(|e| panic!("absolute {target}: {e}"));
        assert_own_listener_refused(&r, &format!("absolute-form {target}"));
        // HTTP/2 `:authority`.
        let req = Request::get(format!("http://{target}/h2"))
            .body(empty())
            .expect("request");
        let r = send_http2(proxy.outbound(), req)
            .await
            .unwrap_or_else(|e| panic!(":authority {target}: {e}"));
        assert_own_listener_refused(&r, &format!(":authority {target}"));
    }
    // A `CONNECT` tunnel to the proxy itself (the app using it as an
    // HTTPS proxy).
    for target in spell(&["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"], outbound) {
        let req = Request::connect(target.as_str())
            .header("host", target.as_str())
            .body(empty())
            .expect("request");
        let r = send_http1(proxy.outbound(), req)
            .await
            .unwrap_or_else(|e| panic!("CONNECT {target}: {e}"));
        assert_own_listener_refused(&r, &format!("CONNECT {target}"));
    }
    // gRPC callers get the gRPC form of the same refusal.
    let target = format!("localhost:{outbound}");
    let req = Request::post(format!("http://{target}/pkg.Svc/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(empty())
        .expect("request");
    let r = send_http2(proxy.outbound(), req).await.expect("gRPC call");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("grpc-status"), "9", "FAILED_PRECONDITION: {r:?}");
    assert_eq!(r.header("x-levee-error"), "loop-detected");

    assert_fds_bounded(&proxy, before).await;
    let metrics = proxy.metrics().await.expect("metrics");
    let refused = metrics.value(
        "levee_rejected_total",
        &[("direction", "outbound"), ("reason", "loop-detected")],
    );
    assert_eq!(refused, (targets.len() * 3 + 3 + 1) as f64);
    assert_eq!(up.requests(), 0, "nothing reached the upstream");
    assert_serves(&proxy).await;
}

/// The inbound listener is the workload's own endpoint: a call to it is
/// forwarded once, to the app, never around again.
#[tokio::test]
async fn host_naming_the_inbound_listener_reaches_the_app_once() {
    let (up, proxy) = wildcard_proxy().await;
    let inbound = proxy.inbound().port();
    for target in spell(
        &["127.0.0.1", "localhost", "127.0.0.2", "[::ffff:127.0.0.1]"],
        inbound,
    ) {
        let r = get_http1(proxy.outbound(), &target, "/echo")
            .await
            .unwrap_or_else(|e| panic!("Host {target}: {e}"));
        assert_eq!(r.status, 200, "Host {target}: {r:?}");
        let echo = r.json().expect("echo JSON");
        assert_eq!(
            echo["headers"]["x-levee-hops"][0], "2",
            "outbound and inbound each counted a hop: {echo}"
        );
    }
    assert_eq!(up.requests(), 4, "each call reached the app once");
    let metrics = proxy.metrics().await.expect("metrics");
    assert_eq!(
        metrics.value("levee_requests_total", &[("direction", "inbound")]),
        4.0,
        "each call passed the inbound listener once"
    );
}

/// `ServiceEndpoints` that name the proxy's own listeners, in several
/// spellings: every pick is refused before a connection is made.
#[tokio::test]
async fn service_endpoints_naming_the_proxy_itself_get_508() {
    let (up, proxy) = wildcard_proxy().await;
    let (outbound, admin) = (proxy.outbound().port(), proxy.admin().port());
    let own = |text: String| -> SocketAddr { text.parse().expect("address") };
    let selves = [
        own(format!("127.0.0.1:{outbound}")),
        own(format!("[::ffff:127.0.0.1]:{outbound}")),
        own(format!("127.0.0.3:{admin}")),
        own(format!("[::1]:{admin}")),
    ];
    let version = proxy.config_version().await.expect("version");
    proxy.write_policy(&yaml::documents(&[
        yaml::endpoints("web", 80, &[up.addr()]),
        yaml::endpoints("itself", 80, &selves),
        yaml::endpoints("admin-side", 80, &[selves[3]]),
    ]));
    proxy
        .wait_config_change(&version, Duration::from_secs(10))
        .await;
    let before = fds(&proxy);
    for round in 0..20 {
        for host in ["itself:80", "admin-side:80"] {
            let r = get_http1(proxy.outbound(), host, "/")
                .await
                .unwrap_or_else(|e| panic!("{host} #{round}: {e}"));
            assert_own_listener_refused(&r, &format!("{host} #{round}"));
        }
    }
    assert_fds_bounded(&proxy, before).await;
    assert_eq!(up.requests(), 0);
    assert_serves(&proxy).await;
}

/// Endpoints pushed by the control plane that reach the proxy's admin
/// listener (valid addresses for the control plane; a loop for this proxy)
/// are refused at connect time.
#[tokio::test]
async fn control_plane_endpoints_naming_the_proxy_itself_get_508() {
    let cp = ControlPlane::builder().start().await;
    let up = FlakyUpstream::start("loop-cp").await.expect("upstream");
    let caller = mesh_proxy(&cp, "client", 1, 80).start().await;
    apply(&cp, &yaml::endpoints("web", 80, &[up.addr()])).await;
    apply(&cp, &yaml::endpoints("ledger", 7000, &[caller.admin()])).await;
    let r = eventually(CONVERGE, "ledger's endpoints to arrive", || async {
        let r = call(&caller, "ledger:7000", &[]).await?;
        match r.status.as_u16() {
            503 => Err(format!("not yet: {r:?}")),
            _ => Ok(r),
        }
    })
    .await;
    assert_own_listener_refused(&r, "control-plane endpoint");
    let before = fds(&caller);
    for round in 0..20 {
        let r = call(&caller, "ledger:7000", &[]).await.expect("call");
        assert_own_listener_refused(&r, &format!("round {round}"));
    }
    assert_fds_bounded(&caller, before).await;
    let r = call(&caller, "web:80", &[]).await.expect("a normal call");
    assert_eq!(r.status, 200, "{r:?}");
}

/// A free port on 127.0.0.1 (bound, then released).
async fn free_port() -> u16 {
    let (listener, addr) = upstream::bind().await;
    drop(listener);
    addr.port()
}

#[tokio::test]
async fn an_app_port_that_is_one_of_the_listeners_is_refused_at_startup() {
    let port = free_port().await;
    let cases = [
        ("127.0.0.1:0".to_owned(), format!("127.0.0.1:{port}")),
        ("127.0.0.1:0".to_owned(), format!("0.0.0.0:{port}")),
        (format!("127.0.0.1:{port}"), "127.0.0.1:0".to_owned()),
    ];
    for (outbound, inbound) in cases {
        let (status, output) = Proxy::builder()
            .listen(&outbound, &inbound, "127.0.0.1:0")
            .app_port(port)
            .start_expecting_exit(Duration::from_secs(10))
            .await;
        assert!(!status.success(), "{outbound} {inbound}: {output}");
        assert!(
            output.contains(&format!("--app-port {port}")) && output.contains("would loop"),
            "{outbound} {inbound}: {output}"
        );
    }
}
