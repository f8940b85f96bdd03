//! The AdmissionReview envelope: reading a request with kube's admission
//! types, and writing the response the API server accepts.
//!
//! kube's `AdmissionResponse` serializes its patch as `Vec<u8>`, a JSON array
//! of numbers; the API server's decoder wants `patch` as a base64 string (a
//! JSON array of patch operations instead fails the whole request with HTTP
//! 500: tests/fixtures/kubernetes/README.md, "Surprises" 1). So the response
//! is built as kube's `AdmissionResponse` and written once, here, through
//! [`Review`], whose `patch` is a base64 [`ByteString`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use kube::core::Resource;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `apiVersion` of the only AdmissionReview version served (the webhook
/// configurations ask for `admissionReviewVersions: [v1]`).
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// `kind` of the envelope.
pub const KIND: &str = "AdmissionReview";

/// Why a body is not an AdmissionReview this webhook can answer. Answered
/// with HTTP 400 and the message: the API server then applies the
/// webhook's failurePolicy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    /// Not JSON, or not the AdmissionReview shape (serde's message).
    #[error("the body is not an AdmissionReview: {0}")]
    Malformed(String),
    /// An AdmissionReview of another version.
    #[error("AdmissionReview apiVersion {0:?} is not supported (use {API_VERSION})")]
    Version(String),
    /// An AdmissionReview without `request` (a response sent back, say).
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// Reads an AdmissionReview request whose object is a `T`.
pub fn parse<T>(body: &[u8]) -> Result<AdmissionRequest<T>, ReviewError>
where
    T: Resource + DeserializeOwned,
{
    let review: AdmissionReview<T> =
        serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    if review.types.api_version != API_VERSION || review.types.kind != KIND {
        return Err(ReviewError::Version(format!(
            "{}/{}",
            review.types.api_version, review.types.kind
        )));
    }
    review.try_into().map_err(|_| ReviewError::NoRequest)
}

/// The response envelope as written on the wire.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    api_version: &'static str,
    kind: &'static str,
    response: ReviewResponse,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewResponse {
    uid: String,
    allowed: bool,
    /// Only on a denial (the API server ignores it when allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<DenyStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// base64 on the wire, as the API server's Go `[]byte` wants it.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<ByteString>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<Vec<String>>,
}

/// `response.status` of a denial: what the client gets as its error.
#[derive(Debug, Serialize)]
struct DenyStatus {
    code: u16,
    reason: String,
    message: String,
}

impl Review {
    /// The wire form of `response` (a JSONPatch when it carries a patch).
    pub fn from_response(response: AdmissionResponse) -> Review {
        let status = (!response.allowed).then(|| DenyStatus {
            code: response.result.code,
            reason: response.result.reason.clone(),
            message: response.result.message.clone(),
        });
        let patch = response.patch.map(ByteString);
        Review {
            api_version: API_VERSION,
            kind: KIND,
            response: ReviewResponse {
                uid: response.uid,
                allowed: response.allowed,
                status,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                audit_annotations: response.audit_annotations.into_iter().collect(),
                warnings: response.warnings,
            },
        }
    }

    /// Compact JSON, as the API server reads it.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, bools, numbers and maps of strings: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use kube::core::DynamicObject;

    use super::*;

    #[test]
    fn a_patch_is_base64_with_its_type_and_an_allowed_response_has_no_status() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"shop","operation":"CREATE","userInfo":{},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"x-"}},"oldObject":null,"dryRun":false}}"#;
        let request = parse::<Pod>(body).expect("a valid review");
        let mut response = AdmissionResponse::from(&request);
        response.patch = Some(br#"[{"op":"add","path":"/a","value":1}]"#.to_vec());
        let json = String::from_utf8(Review::from_response(response).to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":true,"patchType":"JSONPatch","patch":"W3sib3AiOiJhZGQiLCJwYXRoIjoiL2EiLCJ2YWx1ZSI6MX1d"}}"#
        );
    }

    #[test]
    fn hostile_bodies_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{}",
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
            b"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\",\"request\":null}",
            b"\xff\xfe",
            b"{\"request\":{\"uid\":7}}",
        ] {
            assert!(parse::<DynamicObject>(body).is_err(), "{body:?}");
        }
        assert_eq!(
            parse::<DynamicObject>(
                b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}"
            )
            .err(),
            Some(ReviewError::NoRequest)
        );
    }
}
