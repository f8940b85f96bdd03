//! The admission webhooks' test material, shared by the control plane's
//! in-process golden tests and the e2e test of the real binary:
//!
//! - the AdmissionReview requests and responses recorded from a real
//!   kube-apiserver (`tests/fixtures/kubernetes/admission/`);
//! - the golden files (`control-plane/tests/golden/webhook/`): for each
//!   injected pod, the decoded JSONPatch and the pod with it applied.
//!   `LEVEE_BLESS=1` rewrites them from the current output (then review the
//!   diff);
//! - [`patched_pod`]: checks a response's envelope and applies its patch
//!   (json-patch, RFC 6902);
//! - [`post_https`]: one POST to a webhook over HTTPS trusting a given CA.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::ByteString;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use super::{BoxError, HttpResponse, REQUEST_DEADLINE};

/// What the injector should do with a recorded pod request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodOutcome {
    /// A base64 JSONPatch; its result is the golden `<case>.pod.json`.
    Injected,
    /// Exactly the recorded response (no patch).
    AsRecorded,
}

/// Every recorded pod review, and what the injector answers.
pub const POD_CASES: [(&str, PodOutcome); 6] = [
    ("pod-inject", PodOutcome::Injected),
    ("pod-inject-dryrun", PodOutcome::Injected),
    ("pod-from-deployment", PodOutcome::Injected),
    // The recorded answer was the broken raw-array patch; ours is base64.
    ("pod-raw-array-patch", PodOutcome::Injected),
    ("pod-inject-disabled", PodOutcome::AsRecorded),
    ("pod-hostnetwork-warning", PodOutcome::AsRecorded),
];

/// Every recorded ResiliencePolicy review. The recorded answers came from
/// a webhook that did not validate; the policies were applied with kubectl,
/// whose YAML 1.1 turned `retry.on:` into the key `"true"` (see
/// `levee_control_plane::webhook::validate::YAML_ON_HINT`).
pub const POLICY_CASES: [&str; 4] = [
    "resiliencepolicy-create",
    "resiliencepolicy-update-put",
    "resiliencepolicy-update-patch",
    "resiliencepolicy-create-denied",
];

/// The flags the golden files were made with (the image the recording used).
pub const PROXY_IMAGE: &str = "example.invalid/levee/levee-proxy:0.1.0";
pub const PROXY_CONTROL_PLANE: &str = "https://levee-control-plane.levee-system.svc:8090";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A recorded file of `tests/fixtures/kubernetes/admission/`, as bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = repo()
        .join("tests/fixtures/kubernetes/admission")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares `actual` with the golden file `name` (pretty JSON), or writes it
/// when `LEVEE_BLESS=1`.
pub fn assert_golden(name: &str, actual: &Value) {
    let path = repo().join("control-plane/tests/golden/webhook").join(name);
    let text = format!(
        "{}\n",
        serde_json::to_string_pretty(actual).unwrap_or_default()
    );
    if std::env::var_os("LEVEE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (LEVEE_BLESS=1 writes it)", path.display()));
    assert_eq!(
        text,
        expected,
        "{} differs (LEVEE_BLESS=1 rewrites it; then review the diff)",
        path.display()
    );
}

/// The decoded patch and the patched pod of an injecting `response` to
/// `request`, after checking the envelope as the API server reads it:
/// admission.k8s.io/v1 AdmissionReview, the request's uid, allowed, no
/// warning, `patchType: JSONPatch` and `patch` a base64 *string*.
pub fn patched_pod(request: &Value, response: &Value) -> Result<(Value, Value), String> {
    if response["apiVersion"] != "admission.k8s.io/v1" || response["kind"] != "AdmissionReview" {
        return Err(format!(
            "not an admission.k8s.io/v1 AdmissionReview: {response}"
        ));
    }
    let answer = &response["response"];
    if answer["uid"] != request["request"]["uid"] {
        return Err(format!("uid {} is not the request's", answer["uid"]));
    }
    if answer["allowed"] != true || answer["patchType"] != "JSONPatch" {
        return Err(format!("not an allowed JSONPatch: {answer}"));
    }
    if !answer["warnings"].is_null() {
        return Err(format!("unexpected warnings: {}", answer["warnings"]));
    }
    if !answer["patch"].is_string() {
        return Err(format!("patch is not a base64 string: {}", answer["patch"]));
    }
    let bytes: ByteString =
        serde_json::from_value(answer["patch"].clone()).map_err(|e| format!("patch: {e}"))?;
    let patch_json: Value =
        serde_json::from_slice(&bytes.0).map_err(|e| format!("decoded patch: {e}"))?;
    let patch: json_patch::Patch =
        serde_json::from_value(patch_json.clone()).map_err(|e| format!("not a JSONPatch: {e}"))?;
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).map_err(|e| format!("the patch does not apply: {e}"))?;
    Ok((patch_json, pod))
}

/// POSTs `body` as JSON to `https://localhost-ish/<path_and_query>` at
/// `addr`, trusting only `ca_pem`, verifying the name `server_name`.
pub async fn post_https(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &[u8],
    path_and_query: &str,
    body: Vec<u8>,
) -> Result<HttpResponse, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned())?;
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let req = Request::post(path_and_query)
            .header(header::HOST, server_name)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "kube-apiserver-admission")
            .body(Full::new(bytes::Bytes::from(body)))?;
        let resp = sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, BoxError>(HttpResponse {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
            trailers: None,
        })
    };
    tokio::time::timeout(REQUEST_DEADLINE, work)
        .await
        .map_err(|_| format!("no answer within {REQUEST_DEADLINE:?}"))?
}
