//! A mesh for the control-plane-mode tests: real `levee-proxy` processes
//! watching a real `levee-control-plane`, policy applied with `leveectl`,
//! and polling of `/config` and `/metrics` with deadlines.

use std::{net::SocketAddr, path::Path, process::Output, time::Duration};

use super::{
    ControlPlane, HttpResponse, Proxy, ProxyBuilder, empty, eventually, send_http1,
    yaml::PolicyFile,
};

/// How long a change may take to reach every proxy (generous for debug
/// builds on a busy 2-core machine; convergence is normally milliseconds).
pub const CONVERGE: Duration = Duration::from_secs(15);

/// The service port the `payments` replicas register under.
pub const PAYMENTS_PORT: u16 = 8080;

/// The `payments` service as metrics and `/endpoints` label it.
pub const PAYMENTS: &str = "payments.default:8080";

/// What a caller puts in `Host` to reach `payments`.
pub const PAYMENTS_AUTHORITY: &str = "payments:8080";

/// A proxy in control-plane mode fronting `service` (its app on `app_port`),
/// registered under `service_port`.
pub fn mesh_proxy(
    cp: &ControlPlane,
    service: &str,
    app_port: u16,
    service_port: u16,
) -> ProxyBuilder {
    Proxy::builder()
        .service(service)
        .app_port(app_port)
        .arg("--service-port")
        .arg(service_port.to_string())
        .control_plane(&cp.grpc_url())
}

/// `leveectl apply -f` with `yaml`; panics with its output unless it succeeds.
pub async fn apply(cp: &ControlPlane, yaml: impl PolicyFile) -> String {
    let file = tempfile::Builder::new()
        .prefix("levee-apply-")
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    std::fs::write(file.path(), yaml.into_yaml()).expect("writing the policy");
    let path = file.path().to_str().expect("utf-8 path");
    let out = cp.leveectl(&["apply", "-f", path]).await.expect("leveectl");
    assert_success(&out, "leveectl apply");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `leveectl status [-o json]`'s stdout; panics unless it succeeds.
pub async fn status(cp: &ControlPlane, json: bool) -> String {
    let args: &[&str] = if json {
        &["status", "-o", "json"]
    } else {
        &["status"]
    };
    let out = cp.leveectl(args).await.expect("leveectl status");
    assert_success(&out, "leveectl status");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET /` through `proxy`'s outbound listener to `authority`, with extra headers.
pub async fn call(
    proxy: &Proxy,
    authority: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    let mut req = http::Request::get("/").header(http::header::HOST, authority);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(empty()).map_err(|e| e.to_string())?;
    send_http1(proxy.outbound(), req)
        .await
        .map_err(|e| e.to_string())
}

/// The policy entry of `/config` for `service` (e.g. `payments.default:8080`).
pub fn policy_of<'a>(
    config: &'a serde_json::Value,
    service: &str,
) -> Option<&'a serde_json::Value> {
    config["policies"]
        .as_array()?
        .iter()
        .find(|p| p["service"] == service)
}

/// The endpoints `/config` lists for `service`, sorted.
pub fn endpoints_of(config: &serde_json::Value, service: &str) -> Vec<String> {
    let mut addrs: Vec<String> = config["endpoints"][service]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    addrs.sort();
    addrs
}

/// Waits until `check` holds for `proxy`'s `/config`; returns that config.
pub async fn wait_config(
    proxy: &Proxy,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually(CONVERGE, what, || async {
        let config = proxy.config().await.map_err(|e| e.to_string())?;
        if check(&config) {
            Ok(config)
        } else {
            Err(config.to_string())
        }
    })
    .await
}

/// Waits until `proxy`'s `/config` lists exactly `want` as `service`'s endpoints.
pub async fn wait_endpoints(proxy: &Proxy, service: &str, want: &[SocketAddr]) {
    let mut want: Vec<String> = want.iter().map(ToString::to_string).collect();
    want.sort();
    wait_config(proxy, &format!("{service} endpoints {want:?}"), |c| {
        endpoints_of(c, service) == want
    })
    .await;
}

/// One sample of `proxy`'s metrics (0 when absent).
pub async fn metric(proxy: &Proxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    proxy
        .metrics()
        .await
        .map(|m| m.value(name, labels))
        .unwrap_or_else(|e| panic!("scraping metrics: {e}"))
}

/// Waits until `name{labels}` of `proxy` equals `want`.
pub async fn wait_metric(proxy: &Proxy, name: &str, labels: &[(&str, &str)], want: f64) {
    eventually(CONVERGE, &format!("{name} == {want}"), || async {
        let m = proxy.metrics().await.map_err(|e| e.to_string())?;
        match m.value(name, labels) {
            v if v == want => Ok(()),
            v => Err(format!("{name} is {v}")),
        }
    })
    .await;
}

/// The text of a file, or "" while it does not exist.
pub fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
