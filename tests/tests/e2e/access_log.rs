//! `--access-log json` end to end: the real `levee-proxy` writes one JSON
//! line per request on stdout, with every field of issue 5 (time, direction,
//! service, route, method, path, status, duration, attempts, endpoint, trace
//! id, `x-levee-error` cause) matching what happened to the request.

use std::time::Duration;

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, empty, eventually, send_http1, yaml},
};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(10);

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

const WEB_POLICY: &str = "  outbound:
    retry:
      maxRetries: 1
      on: [gateway-error]
      backoff: {base: 1ms, max: 2ms}
    routes:
      - name: orders
        match: {pathPrefix: /orders}
";

const LIMITED_POLICY: &str = "  outbound:
    rateLimit: {requestsPerSecond: 1, burst: 1}
";

/// The access-log lines (JSON objects with a `direction`) in `output`.
fn lines(output: &str) -> Vec<Value> {
    output
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("\"direction\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The one line whose `path` is `path`.
fn line_for<'a>(lines: &'a [Value], path: &str) -> &'a Value {
    let found: Vec<_> = lines.iter().filter(|l| l["path"] == path).collect();
    assert_eq!(found.len(), 1, "lines for {path}: {lines:#?}");
    found[0]
}

async fn get(proxy: std::net::SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = Request::get(path).header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let r = send_http1(proxy, req.body(empty()).unwrap()).await.unwrap();
    r.status.as_u16()
}

#[tokio::test]
async fn every_request_gets_a_json_line_with_every_field() {
    let web = FlakyUpstream::start("web").await.unwrap();
    let app = FlakyUpstream::start("app").await.unwrap();
    let policy = yaml::documents(&[
        yaml::endpoints("web", 80, &[web.addr()]),
        yaml::policy("web", 80, WEB_POLICY),
        yaml::endpoints("limited", 80, &[web.addr()]),
        yaml::policy("limited", 80, LIMITED_POLICY),
    ]);
    let proxy = Proxy::builder()
        .policy(policy)
        .app_port(app.addr().port())
        .service("front")
        .arg("--access-log")
        .arg("json")
        .start()
        .await;
    let out = proxy.outbound();
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");

    // Answered at once, on a named route, with the app's trace context.
    let ok = get(
        out,
        "web:80",
        "/orders/7?x=1",
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(ok, 200);
    // The upstream fails both attempts (one retry).
    let failed = get(out, "web:80", "/fail", &[("x-flaky-status", "503")]).await;
    assert_eq!(failed, 503);
    // The second call within the second is refused by the rate limit.
    assert_eq!(get(out, "limited:80", "/first", &[]).await, 200);
    assert_eq!(get(out, "limited:80", "/second", &[]).await, 429);
    // Inbound: a peer calls the local app.
    assert_eq!(get(proxy.inbound(), "front", "/in", &[]).await, 200);

    let lines = eventually(DEADLINE, "five access-log lines", || {
        let output = proxy.process.output();
        async move {
            let lines = lines(&output);
            if lines.len() >= 5 {
                Ok(lines)
            } else {
                Err(output)
            }
        }
    })
    .await;
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let web_addr = web.addr().to_string();

    let l = line_for(&lines, "/orders/7?x=1");
    for field in [
        "time",
        "direction",
        "service",
        "route",
        "method",
        "authority",
        "path",
        "protocol",
        "trace_id",
        "status",
        "code",
        "outcome",
        "duration_ms",
        "attempts",
        "endpoint",
    ] {
        assert!(l.get(field).is_some(), "no {field}: {l}");
    }
    let time = l["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
    assert_eq!(l["direction"], "outbound");
    assert_eq!(l["service"], "web.default:80");
    assert_eq!(l["route"], "orders");
    assert_eq!(l["method"], "GET");
    assert_eq!(l["authority"], "web:80");
    assert_eq!(l["protocol"], "HTTP/1.1");
    assert_eq!(l["trace_id"], TRACE_ID);
    assert_eq!(l["status"], 200);
    assert_eq!(l["code"], "200");
    assert_eq!(l["outcome"], "success");
    assert!(l.get("error").is_none(), "the upstream answered: {l}");
    assert!(l["duration_ms"].as_f64().unwrap() > 0.0, "{l}");
    assert_eq!(l["attempts"], 1);
    assert_eq!(l["endpoint"], web_addr.as_str());

    let l = line_for(&lines, "/fail");
    assert_eq!(l["route"], "default");
    assert_eq!(l["status"], 503);
    assert_eq!(l["outcome"], "failure");
    assert!(l.get("error").is_none(), "the upstream's own 503: {l}");
    assert_eq!(l["attempts"], 2, "one retry: {l}");
    assert_eq!(l["endpoint"], web_addr.as_str());
    assert!(l.get("trace_id").is_none(), "no trace context: {l}");

    let l = line_for(&lines, "/first");
    assert_eq!(
        (l["status"].as_u64(), l["attempts"].as_u64()),
        (Some(200), Some(1))
    );
    let l = line_for(&lines, "/second");
    assert_eq!(l["service"], "limited.default:80");
    assert_eq!(l["status"], 429);
    assert_eq!(l["code"], "429");
    assert_eq!(l["outcome"], "rate-limited");
    assert_eq!(l["error"], "rate-limited", "the x-levee-error cause: {l}");
    assert_eq!(l["attempts"], 0, "never sent upstream: {l}");
    assert!(l.get("endpoint").is_none(), "{l}");

    let l = line_for(&lines, "/in");
    assert_eq!(l["direction"], "inbound");
    assert_eq!(l["service"], "front");
    assert_eq!(l["status"], 200);
    assert_eq!(l["attempts"], 1);
    assert_eq!(l["endpoint"], app.addr().to_string().as_str());
}
