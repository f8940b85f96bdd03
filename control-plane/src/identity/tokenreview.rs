//! Projected service-account tokens: the proof a proxy inside Kubernetes
//! presents. [`ServiceAccountReviewer`] is the seam; [`TokenReviewer`] asks
//! the API server (`POST /apis/authentication.k8s.io/v1/tokenreviews`) with
//! the audience Levee expects (`levee.dev` by default) and maps
//! `system:serviceaccount:<ns>:<sa>` to the identity `ns/<ns>/sa/<sa>`,
//! service `<sa>` (a workload's service account names its service, as in
//! Linkerd and Istio).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use levee_proto::policy::SpiffeId;

use super::Refusal;
use super::ca::ProvenIdentity;

/// The audience projected tokens must be minted for, unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "levee.dev";

/// Checks a service-account token and says whom it names.
#[tonic::async_trait]
pub trait ServiceAccountReviewer: Send + Sync + std::fmt::Debug {
    /// The identity `token` proves, or why it proves none.
    async fn review(&self, token: &str) -> Result<ProvenIdentity, Refusal>;
}

/// [`ServiceAccountReviewer`] through the Kubernetes TokenReview API.
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
    trust_domain: String,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .field("trust_domain", &self.trust_domain)
            .finish()
    }
}

impl TokenReviewer {
    /// Reviews with `client`, requiring `audience`; identities in `trust_domain`.
    pub fn new(client: kube::Client, audience: &str, trust_domain: &str) -> Self {
        TokenReviewer {
            client,
            audience: audience.to_owned(),
            trust_domain: trust_domain.to_owned(),
        }
    }
}

#[tonic::async_trait]
impl ServiceAccountReviewer for TokenReviewer {
    async fn review(&self, token: &str) -> Result<ProvenIdentity, Refusal> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Refusal::BadProof(
                "the service-account token is empty".into(),
            ));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                audiences: Some(vec![self.audience.clone()]),
                token: token.to_owned(),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answered = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Refusal::Unavailable(format!("TokenReview failed: {e}")))?;
        let status = answered.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let error = status
                .error
                .unwrap_or_else(|| "not authenticated".to_owned());
            return Err(classify(&error));
        }
        // The API server checked the audience; make sure it checked ours.
        if let Some(audiences) = &status.audiences
            && !audiences.contains(&self.audience)
        {
            return Err(Refusal::BadProof(format!(
                "the token is valid for {audiences:?}, not for {:?}",
                self.audience
            )));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        let (namespace, account) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| {
                Refusal::BadProof(format!(
                    "the token authenticates {username:?}, not a service account"
                ))
            })?;
        let spiffe_id = SpiffeId::workload(&self.trust_domain, namespace, account)
            .map_err(Refusal::BadProof)?;
        Ok(ProvenIdentity {
            service: account.to_owned(),
            spiffe_id,
        })
    }
}

/// The API server's error text as a refusal: expiry is worth telling apart.
fn classify(error: &str) -> Refusal {
    let message = format!("TokenReview refused the token: {error}");
    if error.contains("expired") {
        Refusal::ExpiredProof(message)
    } else {
        Refusal::BadProof(message)
    }
}

#[cfg(test)]
mod tests;
