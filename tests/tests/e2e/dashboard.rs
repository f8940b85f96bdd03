//! `deploy/grafana/levee-dashboard.json` is a well-formed Grafana dashboard
//! whose queries only use what Levee exposes: every metric name in a panel's
//! `expr` is one a real `levee-proxy` or `levee-control-plane` serves on
//! `/metrics` (scraped after a scenario that makes every family appear), every
//! label a selector filters on exists on that metric, and every family the
//! two binaries expose is on the dashboard.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use http::Request;
use levee_tests::{
    flaky::{Delay, Faults, FlakyUpstream},
    harness::{ControlPlane, Metrics, Proxy, binary, empty, eventually, send_http1, yaml},
};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);

fn dashboard() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/levee-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every non-row panel (rows' nested panels included).
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            if p["type"] == "row" {
                walk(&p["panels"], out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The metric names in a PromQL expression, each with the label names its
/// selector (`{...}`) filters on.
fn selectors(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(found) = expr[i..].find("levee_") {
        let start = i + found;
        if start > 0 && ident(bytes[start - 1]) {
            i = start + 1;
            continue;
        }
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        let name = expr[start..end].to_owned();
        let mut labels = BTreeSet::new();
        if bytes.get(end) == Some(&b'{') {
            let close = expr[end..].find('}').map_or(bytes.len(), |c| end + c);
            for matcher in split_matchers(&expr[end + 1..close]) {
                let key: String = matcher
                    .chars()
                    .take_while(|c| *c == '_' || c.is_ascii_alphanumeric())
                    .collect();
                labels.insert(key);
            }
            end = close;
        }
        out.push((name, labels));
        i = end.max(start + 1);
    }
    out
}

/// `a="x",b=~"y|z"` → its matchers (commas inside quotes kept).
fn split_matchers(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut from) = (false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(s[from..i].trim());
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[from..].trim());
    out.retain(|m| !m.is_empty());
    out
}

/// Sample names and the label names seen on each.
fn exposed(pages: &[&Metrics]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for page in pages {
        for s in &page.samples {
            out.entry(s.name.clone())
                .or_default()
                .extend(s.labels.keys().cloned());
        }
    }
    out
}

/// The families of a page (`# TYPE` lines), as the sample name a query uses:
/// `_total` for counters, `_bucket` for histograms.
fn families(page: &Metrics) -> BTreeSet<String> {
    page.text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            let (name, kind) = (words.next()?, words.next()?);
            Some(match kind {
                "counter" => format!("{name}_total"),
                "histogram" => format!("{name}_bucket"),
                _ => name.to_owned(),
            })
        })
        .collect()
}

#[test]
fn selector_parsing() {
    let expr = r#"sum by (service) (rate(levee_requests_total{direction="outbound",service=~"a,b"}[5m]))
  / sum(levee_policy_version) + levee_endpoints{state!="x"}"#;
    let got = selectors(expr);
    let names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "levee_requests_total",
            "levee_policy_version",
            "levee_endpoints"
        ]
    );
    assert_eq!(
        got[0].1,
        BTreeSet::from(["direction".to_owned(), "service".to_owned()])
    );
    assert!(got[1].1.is_empty());
    assert_eq!(got[2].1, BTreeSet::from(["state".to_owned()]));
}

#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    assert!(
        d["title"].is_string() && d["uid"].is_string(),
        "title and uid"
    );
    let panels = panels(&d);
    assert!(panels.len() >= 20, "only {} panels", panels.len());
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"]
            .as_str()
            .unwrap_or_else(|| panic!("untitled: {p}"));
        assert!(
            ids.insert(p["id"].as_u64().expect("numeric id")),
            "duplicate id: {title}"
        );
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        let w = p["gridPos"]["w"].as_u64().unwrap_or(0) + p["gridPos"]["x"].as_u64().unwrap_or(0);
        assert!(w <= 24, "{title} overflows the grid");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !selectors(expr).is_empty(),
                "{title}: no Levee metric in {expr:?}"
            );
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{title}: {expr}"
            );
            assert_eq!(
                expr.matches('{').count(),
                expr.matches('}').count(),
                "{title}: {expr}"
            );
        }
    }
}

async fn get(proxy: SocketAddr, host: &str) -> u16 {
    let req = Request::get("/")
        .header("host", host)
        .body(empty())
        .unwrap();
    send_http1(proxy, req).await.unwrap().status.as_u16()
}

/// A proxy that has been through retries, a denied retry, an open breaker,
/// a rejection, a timeout: every proxy family is on its `/metrics`.
async fn busy_proxy_metrics() -> Metrics {
    let fail = FlakyUpstream::builder()
        .id("fail")
        .faults(Faults {
            status: Some(503),
            ..Faults::default()
        })
        .start()
        .await
        .unwrap();
    let slow = FlakyUpstream::builder()
        .id("slow")
        .faults(Faults {
            delay: Some(Delay::Fixed(Duration::from_millis(500))),
            ..Faults::default()
        })
        .start()
        .await
        .unwrap();
    let policy = yaml::documents(&[
        yaml::endpoints("retried", 80, &[fail.addr()]),
        yaml::policy(
            "retried",
            80,
            "  outbound:\n    retry:\n      maxRetries: 2\n      on: [gateway-error]\n      \
             backoff: {base: 1ms, max: 2ms}\n      budget: {percent: 0, minPerSecond: 1}\n",
        ),
        yaml::endpoints("broken", 80, &[fail.addr()]),
        yaml::policy(
            "broken",
            80,
            "  outbound:\n    circuitBreaker: {consecutiveFailures: 1, open: {base: 60s, max: 60s}}\n",
        ),
        yaml::endpoints("slow", 80, &[slow.addr()]),
        yaml::policy("slow", 80, "  outbound:\n    timeouts: {request: 50ms}\n"),
    ]);
    let proxy = Proxy::builder().policy(policy).start().await;
    let out = proxy.outbound();
    let wanted = [
        "levee_retries_total",
        "levee_retry_budget_exhausted_total",
        "levee_circuit_transitions_total",
        "levee_rejected_total",
        "levee_timeouts_total",
    ];
    eventually(DEADLINE, "every proxy family", || async {
        assert_eq!(get(out, "retried:80").await, 503);
        get(out, "broken:80").await;
        assert_eq!(get(out, "slow:80").await, 504);
        let m = proxy.metrics().await.map_err(|e| e.to_string())?;
        let missing: Vec<_> = wanted.iter().filter(|n| m.sum(n, &[]).is_none()).collect();
        if missing.is_empty() {
            Ok(m)
        } else {
            Err(format!("missing {missing:?}"))
        }
    })
    .await
}

/// A control plane with a connected proxy, a store read and a refused admin
/// call: every control-plane family is on its `/metrics`.
async fn busy_control_plane_metrics() -> Metrics {
    let cp = ControlPlane::builder().admin_token("secret").start().await;
    let app = FlakyUpstream::start("app").await.unwrap();
    let _proxy = Proxy::builder()
        .control_plane(&cp.grpc_url())
        .service("front")
        .app_port(app.addr().port())
        .start()
        .await;
    let listed = cp.leveectl(&["get", "policies"]).await.unwrap();
    assert!(listed.status.success(), "{listed:?}");
    // No token: refused, and counted.
    let refused = tokio::process::Command::new(binary("leveectl"))
        .args(["--server", &cp.grpc_url(), "get", "policies"])
        .env_remove("LEVEE_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(
        !refused.status.success(),
        "an admin call without the token passed"
    );
    eventually(DEADLINE, "every control-plane family", || async {
        let m = cp.metrics().await.map_err(|e| e.to_string())?;
        let acked = m
            .sum("levee_cp_updates_total", &[("result", "ack")])
            .is_some();
        let refused = m
            .sum("levee_cp_admin_requests_rejected_total", &[])
            .is_some();
        if acked && refused { Ok(m) } else { Err(m.text) }
    })
    .await
}

#[tokio::test]
async fn every_query_uses_exposed_metrics_and_every_metric_is_shown() {
    let (proxy, cp) = tokio::join!(busy_proxy_metrics(), busy_control_plane_metrics());
    let exposed = exposed(&[&proxy, &cp]);

    let d = dashboard();
    let mut used = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or_default();
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            for (name, labels) in selectors(expr) {
                let Some(seen) = exposed.get(&name) else {
                    panic!(
                        "{title}: {name} is not exposed; exposed: {:#?}",
                        exposed.keys()
                    );
                };
                for label in &labels {
                    assert!(
                        seen.contains(label),
                        "{title}: {name} has no label {label} ({seen:?})"
                    );
                }
                used.insert(name);
            }
        }
    }
    let shown_family = |f: &String| used.contains(f);
    let missing: Vec<_> = families(&proxy)
        .union(&families(&cp))
        .filter(|f| !shown_family(f))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "families not on the dashboard: {missing:?}"
    );
}
