//! The real `levee-control-plane` serving its admission webhooks over HTTPS
//! on 127.0.0.1 with its own CA (written by `--webhook-ca-file`, the only CA
//! the client trusts), fed every AdmissionReview a real kube-apiserver sent
//! (tests/fixtures/kubernetes/admission/): the answers are what the API
//! server accepts and the patches give the golden pods; hostile requests get
//! their errors and the server keeps serving.

use http::StatusCode;
use levee_tests::harness::ControlPlane;
use levee_tests::harness::admission::{
    POD_CASES, POLICY_CASES, PROXY_CONTROL_PLANE, PROXY_IMAGE, PodOutcome, assert_golden, fixture,
    patched_pod, post_https,
};
use serde_json::Value;

struct Webhooks {
    cp: ControlPlane,
    ca: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Webhooks {
    async fn start() -> Webhooks {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("webhook-ca.pem");
        let cp = ControlPlane::builder()
            .arg("--webhook-addr")
            .arg("127.0.0.1:0")
            .arg("--webhook-cert-names")
            .arg("127.0.0.1")
            .arg("--webhook-ca-file")
            .arg(&ca_file)
            .arg("--webhook-max-body-bytes")
            .arg("262144")
            .arg("--proxy-image")
            .arg(PROXY_IMAGE)
            .arg("--proxy-control-plane")
            .arg(PROXY_CONTROL_PLANE)
            .start()
            .await;
        // Written before the addresses, so it is there once the CP is ready.
        let ca = std::fs::read(&ca_file).expect("--webhook-ca-file is written at start");
        Webhooks { cp, ca, _dir: dir }
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let addr = self
            .cp
            .addrs
            .webhook
            .expect("the addr file names the webhook");
        let resp = post_https(addr, "127.0.0.1", &self.ca, path, body)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        (resp.status, resp.body.to_vec())
    }
}

#[tokio::test]
async fn every_recorded_review_is_answered_as_the_api_server_accepts() {
    let hooks = Webhooks::start().await;
    for (case, outcome) in POD_CASES {
        let body = fixture(&format!("{case}.review-request.json"));
        let (status, answer) = hooks.post("/mutate-pods?timeout=5s", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{case}: {}",
            String::from_utf8_lossy(&answer)
        );
        match outcome {
            PodOutcome::AsRecorded => {
                let recorded = fixture(&format!("{case}.review-response.json"));
                assert_eq!(
                    String::from_utf8_lossy(&answer),
                    String::from_utf8_lossy(&recorded).trim_end(),
                    "{case}"
                );
            }
            PodOutcome::Injected => {
                let request: Value = serde_json::from_slice(&body).unwrap();
                let response: Value = serde_json::from_slice(&answer).unwrap();
                let (patch, pod) =
                    patched_pod(&request, &response).unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_golden(&format!("{case}.patch.json"), &patch);
                assert_golden(&format!("{case}.pod.json"), &pod);
            }
        }
    }
    for case in POLICY_CASES {
        let body = fixture(&format!("{case}.review-request.json"));
        let (status, answer) = hooks
            .post("/validate-resiliencepolicy?timeout=5s", body)
            .await;
        assert_eq!(status, StatusCode::OK, "{case}");
        let response: Value = serde_json::from_slice(&answer).unwrap();
        // Every recorded policy is denied: the denied one for maxRetries, the
        // others for the `"true"` key kubectl made of `on:`.
        assert_eq!(response["response"]["allowed"], false, "{case}: {response}");
        assert_eq!(response["response"]["status"]["code"], 422, "{case}");
        assert_eq!(
            response["response"]["status"]["reason"], "Invalid",
            "{case}"
        );
    }
    let denied = hooks
        .post(
            "/validate-resiliencepolicy",
            fixture("resiliencepolicy-create-denied.review-request.json"),
        )
        .await;
    let denied: Value = serde_json::from_slice(&denied.1).unwrap();
    assert_eq!(
        denied["response"]["status"]["message"],
        "spec.outbound.retry.maxRetries: 11 is more than the maximum of 10"
    );
}

#[tokio::test]
async fn hostile_requests_get_their_error_and_the_server_keeps_serving() {
    let hooks = Webhooks::start().await;
    let valid = fixture("pod-inject-disabled.review-request.json");
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("/nope", valid.clone(), StatusCode::NOT_FOUND, "not found"),
        (
            "/mutate-pods",
            b"{".to_vec(),
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            "/mutate-pods",
            b"[1,2,3]".to_vec(),
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            "/mutate-pods",
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":null}"#
                .to_vec(),
            StatusCode::BAD_REQUEST,
            "not supported",
        ),
        (
            "/validate-resiliencepolicy",
            vec![b' '; 300_000],
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than",
        ),
        (
            "/mutate-pods?timeout=never",
            valid.clone(),
            StatusCode::BAD_REQUEST,
            "timeout",
        ),
    ];
    for (path, body, status, says) in cases {
        let (got, answer) = hooks.post(path, body).await;
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(got, status, "{path}: {text}");
        assert!(text.contains(says), "{path}: {text}");
    }
    let (status, answer) = hooks.post("/mutate-pods?timeout=5s", valid).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&answer),
        String::from_utf8_lossy(&fixture("pod-inject-disabled.review-response.json")).trim_end()
    );
}
