//! The caBundle upkeep against kube's mock transport: the exact requests
//! (method, path, content type, body) it sends, and what it does with the
//! answers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::ByteString;
use kube::client::Body;
use levee_control_plane::webhook::certs::ca_bundle::{self, MUTATING, VALIDATING};
use levee_control_plane::webhook::certs::issuer::Authority;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

type Mock = Handle<Request<Body>, Response<Body>>;

const MUTATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/levee-sidecar-injector";
const VALIDATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/levee-policy-validator";

fn configuration(kind: &str, name: &str, webhook: &str, bundle: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "resourceVersion": "42", "uid": "8d1c6f0e-0000-4000-8000-000000000001"},
        "webhooks": [{
            "name": webhook,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "clientConfig": {
                "service": {"namespace": "levee-system", "name": "levee-control-plane", "path": "/mutate-pods", "port": 443},
                "caBundle": ByteString(bundle.as_bytes().to_vec()),
            },
        }],
    })
}

fn reply(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string().into_bytes()))
        .unwrap()
}

/// The next request, with its body read.
async fn next(
    mock: &mut Mock,
) -> (
    http::request::Parts,
    Value,
    mock::SendResponse<Response<Body>>,
) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(10), mock.next_request())
        .await
        .expect("a request within 10 s")
        .expect("a request");
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (parts, body, send)
}

fn unix(time: SystemTime) -> i64 {
    i64::try_from(time.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

#[tokio::test]
async fn our_ca_joins_the_other_replicas_unexpired_ones_in_one_patch_per_configuration() {
    let now = SystemTime::now();
    let ours = Authority::new(now).unwrap().pem;
    let other = Authority::new(now - Duration::from_secs(24 * 3600))
        .unwrap()
        .pem;
    let expired = Authority::new(now - Duration::from_secs(400 * 24 * 3600))
        .unwrap()
        .pem;
    let (service, mut mock) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "levee-system");
    let expected_bundle = format!("{}\n{}\n", ours.trim(), other.trim());
    let task = tokio::spawn(async move { ca_bundle::reconcile(&client, &ours, unix(now)).await });

    // Mutating: a bundle with another replica's CA and an expired one.
    let (parts, _, send) = next(&mut mock).await;
    assert_eq!(
        (parts.method, parts.uri.path()),
        (Method::GET, MUTATING_PATH)
    );
    send.send_response(reply(
        StatusCode::OK,
        &configuration(
            "MutatingWebhookConfiguration",
            MUTATING,
            "inject.levee.dev",
            &format!("{expired}{other}"),
        ),
    ));
    let (parts, body, send) = next(&mut mock).await;
    assert_eq!(parts.method, Method::PATCH);
    assert_eq!(parts.uri.to_string(), format!("{MUTATING_PATH}?"));
    assert_eq!(
        parts.headers.get("content-type").unwrap(),
        "application/strategic-merge-patch+json"
    );
    let sent_bundle: ByteString =
        serde_json::from_value(body["webhooks"][0]["clientConfig"]["caBundle"].clone()).unwrap();
    let sent_bundle = String::from_utf8(sent_bundle.0).unwrap();
    assert_eq!(
        sent_bundle, expected_bundle,
        "ours first, then the other replica's; the expired CA is gone"
    );
    let ours_alone = format!(
        "{}\n",
        sent_bundle
            .split_inclusive("-----END CERTIFICATE-----")
            .next()
            .unwrap()
    );
    assert_eq!(
        body,
        json!({
            "metadata": {"resourceVersion": "42"},
            "webhooks": [{"name": "inject.levee.dev", "clientConfig": {"caBundle": ByteString(sent_bundle.clone().into_bytes())}}],
        })
    );
    send.send_response(reply(
        StatusCode::OK,
        &configuration(
            "MutatingWebhookConfiguration",
            MUTATING,
            "inject.levee.dev",
            &sent_bundle,
        ),
    ));

    // Validating: already exactly right, so no patch.
    let (parts, _, send) = next(&mut mock).await;
    assert_eq!(
        (parts.method, parts.uri.path()),
        (Method::GET, VALIDATING_PATH)
    );
    send.send_response(reply(
        StatusCode::OK,
        &configuration(
            "ValidatingWebhookConfiguration",
            VALIDATING,
            "validate.levee.dev",
            &ours_alone,
        ),
    ));
    let patched = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(patched, 1, "only the mutating configuration changed");
}

#[tokio::test]
async fn a_conflicting_write_is_an_error_for_the_next_round_not_an_overwrite() {
    let now = SystemTime::now();
    let ours = Authority::new(now).unwrap().pem;
    let (service, mut mock) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "levee-system");
    let task = tokio::spawn(async move { ca_bundle::reconcile(&client, &ours, unix(now)).await });
    let (_, _, send) = next(&mut mock).await;
    send.send_response(reply(
        StatusCode::OK,
        &configuration(
            "MutatingWebhookConfiguration",
            MUTATING,
            "inject.levee.dev",
            "",
        ),
    ));
    let (parts, _, send) = next(&mut mock).await;
    assert_eq!(parts.method, Method::PATCH);
    // The API server's answer to a stale resourceVersion (lease/04 in the fixtures).
    send.send_response(reply(
        StatusCode::CONFLICT,
        &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"Operation cannot be fulfilled on mutatingwebhookconfigurations.admissionregistration.k8s.io \"levee-sidecar-injector\": the object has been modified; please apply your changes to the latest version and try again",
            "reason":"Conflict","details":{"name":"levee-sidecar-injector","group":"admissionregistration.k8s.io","kind":"mutatingwebhookconfigurations"},"code":409}),
    ));
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409),
        other => panic!("expected the 409, got {other:?}"),
    }
}
