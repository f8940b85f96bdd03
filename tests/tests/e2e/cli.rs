//! The command-line contract (DESIGN.md §7): `--help` documents every flag,
//! and each flag also reads `LEVEE_<FLAG>`.

use std::time::Duration;

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Http1Conn, Proxy, binary, empty, get_http1, yaml},
};

#[tokio::test]
async fn help_describes_every_flag_of_the_contract() {
    let out = tokio::process::Command::new(binary("levee-proxy"))
        .arg("--help")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.status);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--outbound-addr",
        "--inbound-addr",
        "--admin-addr",
        "--app-port",
        "--service",
        "--namespace",
        "--policy-file",
        "--control-plane",
        "--policy-cache",
        "--access-log",
        "--max-connections",
        "--header-read-timeout",
        "--max-header-bytes",
        "--shutdown-grace",
        "--addr-file",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
        let env = format!(
            "LEVEE_{}",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase()
        );
        assert!(help.contains(&env), "--help does not name {env}:\n{help}");
    }
}

#[tokio::test]
async fn flags_fall_back_to_levee_environment_variables() {
    let up = FlakyUpstream::start("cli-1").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .env("LEVEE_MAX_CONNECTIONS", "1")
        .start()
        .await;
    let mut held = Http1Conn::connect(proxy.outbound()).await.unwrap();
    let req = Request::get("/")
        .header("host", "web:80")
        .body(empty())
        .unwrap();
    assert_eq!(held.send(req).await.unwrap().status, 200);
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        get_http1(proxy.outbound(), "web:80", "/"),
    )
    .await
    .expect("an answer, not a hang")
    .unwrap();
    assert_eq!(r.status, 503, "LEVEE_MAX_CONNECTIONS=1 applies: {r:?}");
}
