//! TokenReview against the recorded API server exchanges in
//! tests/fixtures/kubernetes/tokenreview/ (served by a tower-test mock: the
//! real kube client builds and sends the request, the mock answers with the
//! recorded body after checking the request matches the recorded one).

use http::{Request, Response};
use kube::client::Body;
use serde_json::Value;

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../tests/fixtures/kubernetes/tokenreview/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Reviews the token of `case`'s recorded request with `audience`, the mock
/// API server answering with `case`'s recorded response.
async fn review(case: &str, audience: &str) -> Result<ProvenIdentity, Refusal> {
    let recorded: Value =
        serde_json::from_slice(&fixture(&format!("{case}.request.json"))).expect("request JSON");
    let token = recorded["spec"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let response = fixture(&format!("{case}.response.json"));
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(
            request.uri().path(),
            "/apis/authentication.k8s.io/v1/tokenreviews"
        );
        let body = request.into_body().collect_bytes().await.expect("body");
        let sent: Value = serde_json::from_slice(&body).expect("sent JSON");
        send.send_response(
            Response::builder()
                .status(201)
                .header("content-type", "application/json")
                .body(Body::from(response))
                .expect("response"),
        );
        sent
    });
    let client = kube::Client::new(service, "default");
    let reviewer = TokenReviewer::new(client, audience, "cluster.local");
    let result = reviewer.review(&token).await;
    let sent = server.await.expect("mock server");
    assert_eq!(sent["spec"]["token"], recorded["spec"]["token"]);
    assert_eq!(sent["spec"]["audiences"], serde_json::json!([audience]));
    result
}

#[tokio::test]
async fn a_token_for_our_audience_proves_its_service_account() {
    let proven = review("tokenreview-valid-audience", "levee.dev")
        .await
        .expect("authenticated");
    assert_eq!(
        proven.spiffe_id.to_string(),
        "spiffe://cluster.local/ns/shop/sa/payments"
    );
    assert_eq!(proven.service, "payments");
}

#[tokio::test]
async fn a_pod_bound_token_proves_its_service_account() {
    let proven = review("tokenreview-pod-bound-token", "levee.dev")
        .await
        .expect("authenticated");
    assert_eq!(proven.spiffe_id.namespace(), Some("shop"));
    assert_eq!(proven.spiffe_id.service_account(), Some("payments"));
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused_with_the_reason() {
    let refused = review("tokenreview-wrong-audience", "wrong.example")
        .await
        .expect_err("refused");
    let Refusal::BadProof(message) = &refused else {
        panic!("{refused:?}");
    };
    assert!(
        message.contains("is invalid for the target audiences"),
        "{message}"
    );
    assert!(message.contains("wrong.example"), "{message}");
}

#[tokio::test]
async fn garbage_is_refused() {
    let refused = review("tokenreview-garbage-token", "levee.dev")
        .await
        .expect_err("refused");
    assert_eq!(refused.reason(), "invalid_proof");
    assert!(
        refused.to_string().contains("invalid bearer token"),
        "{refused}"
    );
}

#[tokio::test]
async fn an_expired_token_is_refused_as_expired() {
    let refused = review("tokenreview-expired-token", "levee.dev")
        .await
        .expect_err("refused");
    assert_eq!(refused.reason(), "expired_proof");
    assert!(refused.to_string().contains("has expired"), "{refused}");
}

#[tokio::test]
async fn an_empty_token_is_refused_without_asking() {
    let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let reviewer = TokenReviewer::new(
        kube::Client::new(service, "default"),
        "levee.dev",
        "cluster.local",
    );
    let refused = tokio::time::timeout(std::time::Duration::from_secs(5), reviewer.review("  "))
        .await
        .expect("answered without the API server")
        .expect_err("refused");
    assert_eq!(refused.reason(), "invalid_proof");
}
