//! Static mode (`--policy-file`): an invalid file stops the start with the
//! field path; a valid one shows in `/config`; an invalid edit is refused
//! (log + nack metric) while the last good policy keeps serving; a valid
//! edit is picked up; SIGHUP re-reads the file.

use std::time::Duration;

use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, eventually, get_http1, yaml},
};

const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

fn valid(up: &FlakyUpstream) -> String {
    yaml::documents(&[
        yaml::policy("web", 80, "  outbound:\n    timeouts: {request: 2s}\n"),
        yaml::endpoints("web", 80, &[up.addr()]),
    ])
}

/// A policy whose `spec.outbound.timeouts.request` is not a duration (no
/// typed document can say that: the valid file's text, edited).
fn invalid(up: &FlakyUpstream) -> String {
    let valid = valid(up);
    let invalid = valid.replace("request: 2s", "request: soon");
    assert_ne!(
        valid, invalid,
        "the request timeout is not where expected:\n{valid}"
    );
    invalid
}

async fn nacks(proxy: &Proxy) -> f64 {
    let m = proxy.metrics().await.unwrap();
    m.value("levee_policy_updates_total", &[("result", "nack")])
}

async fn wait_nacks(proxy: &Proxy, want: f64) {
    eventually(RELOAD_DEADLINE, &format!("{want} policy nacks"), || async {
        let m = proxy.metrics().await.map_err(|e| e.to_string())?;
        match m.value("levee_policy_updates_total", &[("result", "nack")]) {
            n if n == want => Ok(()),
            n => Err(format!("{n} nacks")),
        }
    })
    .await;
}

async fn instance(proxy: &Proxy) -> String {
    let r = get_http1(proxy.outbound(), "web:80", "/").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    r.header("x-flaky-instance").to_owned()
}

#[tokio::test]
async fn invalid_file_at_start_exits_with_the_field_path() {
    let up = FlakyUpstream::start("a").await.unwrap();
    let (status, output) = Proxy::builder()
        .policy(invalid(&up))
        .start_expecting_exit(Duration::from_secs(20))
        .await;
    assert!(!status.success(), "exit status {status}; output:\n{output}");
    assert!(
        output.contains("spec.outbound.timeouts.request"),
        "the error names the field path; output:\n{output}"
    );
}

#[tokio::test]
async fn valid_file_shows_in_config() {
    let up = FlakyUpstream::start("a").await.unwrap();
    let proxy = Proxy::builder().policy(valid(&up)).start().await;
    let config = proxy.config().await.unwrap();
    assert!(config["version"].is_number(), "{config}");
    let policies = config["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{config}");
    assert_eq!(policies[0]["service"], "web.default:80", "{config}");
    assert_eq!(
        config["endpoints"]["web.default:80"][0],
        up.addr().to_string(),
        "{config}"
    );
    assert!(
        config.to_string().contains("2s"),
        "the 2s request timeout shows: {config}"
    );
    assert_eq!(instance(&proxy).await, "a");
}

#[tokio::test]
async fn invalid_edit_is_refused_and_the_last_good_policy_keeps_serving() {
    let up = FlakyUpstream::start("a").await.unwrap();
    let proxy = Proxy::builder().policy(valid(&up)).start().await;
    let before = proxy.config().await.unwrap();
    assert_eq!(nacks(&proxy).await, 0.0);

    proxy.write_policy(&invalid(&up));
    wait_nacks(&proxy, 1.0).await;
    let after = proxy.config().await.unwrap();
    assert_eq!(after["version"], before["version"], "version kept");
    assert_eq!(after["policies"], before["policies"], "policy kept");
    assert_eq!(instance(&proxy).await, "a", "traffic still flows");
    let log = proxy.process.output();
    assert!(
        log.contains("spec.outbound.timeouts.request"),
        "the refusal is logged with the field path:\n{log}"
    );
}

#[tokio::test]
async fn valid_edit_is_picked_up() {
    let a = FlakyUpstream::start("a").await.unwrap();
    let b = FlakyUpstream::start("b").await.unwrap();
    let proxy = Proxy::builder().policy(valid(&a)).start().await;
    assert_eq!(instance(&proxy).await, "a");
    let old = proxy.config_version().await.unwrap();

    proxy.write_policy(&valid(&b));
    let config = proxy.wait_config_change(&old, RELOAD_DEADLINE).await;
    assert_eq!(
        config["endpoints"]["web.default:80"][0],
        b.addr().to_string(),
        "{config}"
    );
    assert_eq!(instance(&proxy).await, "b", "new endpoints take traffic");
    let m = proxy.metrics().await.unwrap();
    assert_eq!(
        m.value("levee_policy_updates_total", &[("result", "nack")]),
        0.0
    );
    assert!(
        m.value("levee_policy_updates_total", &[("result", "ack")]) >= 2.0,
        "{}",
        m.text
    );
}

#[tokio::test]
async fn sighup_rereads_the_file() {
    let a = FlakyUpstream::start("a").await.unwrap();
    let b = FlakyUpstream::start("b").await.unwrap();
    let mut proxy = Proxy::builder().policy(valid(&a)).start().await;

    // Polling refuses an invalid file once; only SIGHUP re-reads an unchanged file.
    proxy.write_policy(&invalid(&a));
    wait_nacks(&proxy, 1.0).await;
    proxy.process.hangup().unwrap();
    wait_nacks(&proxy, 2.0).await;

    let old = proxy.config_version().await.unwrap();
    proxy.write_policy(&valid(&b));
    proxy.process.hangup().unwrap();
    proxy.wait_config_change(&old, RELOAD_DEADLINE).await;
    assert_eq!(instance(&proxy).await, "b");
    assert_eq!(
        proxy.process.try_exit(),
        None,
        "SIGHUP does not stop the proxy"
    );
}
