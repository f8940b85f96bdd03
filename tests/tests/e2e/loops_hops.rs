//! The hop count (`x-levee-hops`) cuts loops no single proxy can see from
//! addresses: two proxies pointed at each other answer 508
//! `loop-detected` after `--max-hops`, and a caller's hop header that is
//! over the bound, or is not a count at all, is refused on both listeners —
//! never a panic, never a hang, with bounded file descriptors.

use std::time::Duration;

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{HttpResponse, Proxy, empty, send_http1, send_http2, yaml},
};

use crate::loops_self::{assert_fds_bounded, assert_serves, fds};

/// Asserts a 508 `loop-detected` for a request over the hop bound.
fn assert_hops_refused(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, 508, "{what}: {r:?}");
    assert_eq!(r.header("x-levee-error"), "loop-detected", "{what}: {r:?}");
    let json = r
        .json()
        .unwrap_or_else(|e| panic!("{what}: JSON body: {e}"));
    let detail = json["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("x-levee-hops"), "{what}: {detail}");
}

fn with_hops(host: &str, values: &[&str]) -> Request<levee_tests::harness::Body> {
    let mut req = Request::get("/echo").header("host", host);
    for v in values {
        req = req.header("x-levee-hops", *v);
    }
    req.body(empty()).expect("request")
}

/// A policy for `web:80` that retries every 5xx twice, with a budget that
/// would allow it: a loop refusal must still not be retried.
fn retrying() -> levee_proto::policy::Document {
    yaml::policy(
        "web",
        80,
        "  outbound:\n    retry:\n      maxRetries: 2\n      on: [5xx]\n      \
         backoff: {base: 1ms, max: 2ms}\n      \
         budget: {percent: 100, minPerSecond: 1000, window: 10s}\n",
    )
}

/// Two proxies whose `web:80` is each other's outbound listener, both
/// retrying 5xx: a call goes A → B → A → … and is cut by the hop bound,
/// then answered all the way back without a single retry. Before the hop
/// count existed it went round until file descriptors ran out; before a
/// loop refusal was exempt from retries, every hop tried it three times.
#[tokio::test]
async fn two_proxies_pointed_at_each_other_cut_the_loop() {
    let up = FlakyUpstream::start("hops-ok").await.expect("upstream");
    // B first, with a placeholder; then A pointing at B; then B at A.
    let b = Proxy::builder()
        .service("b")
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .start()
        .await;
    let a = Proxy::builder()
        .service("a")
        .policy(yaml::documents(&[
            yaml::endpoints("web", 80, &[b.outbound()]),
            retrying(),
            yaml::endpoints("ok", 80, &[up.addr()]),
        ]))
        .start()
        .await;
    let version = b.config_version().await.expect("version");
    b.write_policy(&yaml::documents(&[
        yaml::endpoints("web", 80, &[a.outbound()]),
        retrying(),
    ]));
    b.wait_config_change(&version, Duration::from_secs(10))
        .await;
    for proxy in [&a, &b] {
        let config = proxy.config().await.expect("/config");
        assert_eq!(
            config["policies"].as_array().map(Vec::len),
            Some(1),
            "the retry policy is in force: {config}"
        );
    }

    let r = send_http1(a.outbound(), with_hops("web:80", &[]))
        .await
        .expect("the loop is answered, not hung");
    assert_hops_refused(&r, "A ⇄ B");
    let (a_fds, b_fds) = (fds(&a), fds(&b));
    for round in 0..10 {
        let r = send_http1(a.outbound(), with_hops("web:80", &[]))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_hops_refused(&r, &format!("A ⇄ B round {round}"));
    }
    // 11 calls; each passed 18 listeners (hops 0 to 16 forwarded, 17 refused).
    let (ma, mb) = (
        a.metrics().await.expect("A metrics"),
        b.metrics().await.expect("B metrics"),
    );
    let requests = |m: &levee_tests::harness::Metrics| {
        m.value(
            "levee_requests_total",
            &[("direction", "outbound"), ("service", "web.default:80")],
        )
    };
    assert_eq!(requests(&ma) + requests(&mb), 11.0 * 18.0);
    let refused = |m: &levee_tests::harness::Metrics| {
        m.value("levee_rejected_total", &[("reason", "loop-detected")])
    };
    assert_eq!(refused(&ma) + refused(&mb), 11.0, "one refusal per call");
    let retries = |m: &levee_tests::harness::Metrics| m.value("levee_retries_total", &[]);
    assert_eq!(
        retries(&ma) + retries(&mb),
        0.0,
        "a loop refusal is not retried"
    );
    // Pooled connections are reused: the loops hold no more descriptors.
    assert_fds_bounded(&a, a_fds).await;
    assert_fds_bounded(&b, b_fds).await;
    // A still serves its real service at once.
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        send_http1(a.outbound(), with_hops("ok:80", &[])),
    )
    .await
    .expect("at once")
    .expect("a normal call");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.requests(), 1);
}

/// Hop headers a caller may send, on the outbound and the inbound
/// listener: within the bound they pass; above it, or not a plain count,
/// they are refused.
#[tokio::test]
async fn caller_sent_hop_headers_are_bounded_and_never_trusted_blindly() {
    let up = FlakyUpstream::start("hops-1").await.expect("upstream");
    let proxy = Proxy::builder()
        .fronting(up.addr())
        .arg("--max-hops")
        .arg("4")
        .start()
        .await;
    let refused: [&[&str]; 11] = [
        &["5"],
        &["17"],
        &["4294967295"],
        &["4294967296"],
        &["99999999999999999999999999999999999999999999999999999999999999"],
        &["-1"],
        &["abc"],
        &[""],
        &["0x1"],
        &["1", "1"],
        &["1, 2"],
    ];
    let before = fds(&proxy);
    for (addr, direction) in [(proxy.outbound(), "outbound"), (proxy.inbound(), "inbound")] {
        for values in refused {
            let what = format!("{direction} x-levee-hops {values:?}");
            let r = send_http1(addr, with_hops("web:80", values))
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_hops_refused(&r, &what);
        }
        for (values, sent_on) in [
            (&[][..], "1"),
            (&["0"], "1"),
            (&["4"], "5"),
            (&["004"], "5"),
        ] {
            let what = format!("{direction} x-levee-hops {values:?}");
            let r = send_http1(addr, with_hops("web:80", values))
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(r.status, 200, "{what}: {r:?}");
            let echo = r.json().expect("echo JSON");
            assert_eq!(
                echo["headers"]["x-levee-hops"][0], sent_on,
                "{what}: {echo}"
            );
        }
        // gRPC callers get the gRPC form of the refusal.
        let req = Request::post("http://web:80/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-levee-hops", "garbage")
            .body(empty())
            .expect("request");
        let r = send_http2(addr, req).await.expect("gRPC call");
        assert_eq!(r.status, 200, "{direction}: {r:?}");
        assert_eq!(r.header("grpc-status"), "9", "{direction}: {r:?}");
        assert_eq!(r.header("x-levee-error"), "loop-detected");
    }
    let metrics = proxy.metrics().await.expect("metrics");
    for direction in ["outbound", "inbound"] {
        let labels = [("direction", direction), ("reason", "loop-detected")];
        assert_eq!(
            metrics.value("levee_rejected_total", &labels),
            (refused.len() + 1) as f64,
            "{direction}"
        );
    }
    // The 4 calls per listener within the bound reached the upstream (as
    // `web:80` and as the app), nothing else did.
    assert_eq!(up.requests(), 8);
    assert_fds_bounded(&proxy, before).await;
    assert_serves(&proxy).await;
}
