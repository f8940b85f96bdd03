//! `--webhook-cert`/`--webhook-key` (e.g. cert-manager's Secret): the server
//! presents exactly that certificate, and a key that does not belong to it
//! stops the start with a message naming both files.

use std::time::SystemTime;

use http::StatusCode;
use levee_control_plane::webhook::certs::issuer::Authority;
use levee_tests::harness::admission::{fixture, post_https};

use crate::common::TestControlPlane;

#[tokio::test]
async fn the_given_certificate_is_served_and_a_mismatched_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = Authority::new(now).unwrap();
    let issued = ca.issue(&["127.0.0.1".to_owned()], now).unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());

    let webhook_flags = [
        "--webhook-addr",
        "127.0.0.1:0",
        "--webhook-cert",
        cert_arg,
        "--webhook-key",
        key_arg,
    ];
    let cp = TestControlPlane::start(&dir.path().join("data"), &webhook_flags).await;
    let addr = cp.addrs.webhook.expect("webhooks on");
    let body = fixture("pod-inject-disabled.review-request.json");
    let resp = post_https(
        addr,
        "127.0.0.1",
        ca.pem.as_bytes(),
        "/mutate-pods",
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    // Another CA is not trusted: the certificate really is the file's.
    let stranger = Authority::new(now).unwrap();
    let refused = post_https(
        addr,
        "127.0.0.1",
        stranger.pem.as_bytes(),
        "/mutate-pods",
        body,
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");

    let other_key = ca.issue(&["127.0.0.1".to_owned()], now).unwrap().key_pem;
    std::fs::write(&key, other_key).unwrap();
    let config = TestControlPlane::config(&dir.path().join("data2"), &webhook_flags);
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let error = levee_control_plane::start(config, stop_rx)
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(
        message.contains("tls.crt")
            && message.contains("the key does not belong to the certificate"),
        "{message}"
    );
}
