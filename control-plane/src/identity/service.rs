//! The gRPC side: `Identity.Certify` (proxies) and `JoinTokens` (operators,
//! behind the admin API's authentication). Wire contract:
//! proto/levee/v1/identity.proto.

use std::sync::Arc;
use std::time::Duration;

use levee_proto::v1::{
    self, identity_server::Identity, join_tokens_server::JoinTokens as JoinTokensApi,
};
use tonic::{Request, Response, Status};

use super::Refusal;
use super::ca::{Ca, ProvenIdentity};
use super::tokenreview::ServiceAccountReviewer;
use super::tokens::{DEFAULT_TOKEN_TTL, JoinTokens, TokenRecord};
use crate::metrics::{CertRefusedLabels, Metrics};

/// `Identity.Certify`.
#[derive(Clone, Debug)]
pub struct IdentityService {
    ca: Arc<Ca>,
    /// `None` in Kubernetes mode (join tokens live in the redb store).
    tokens: Option<JoinTokens>,
    /// `None`: service-account tokens are not accepted (no `--token-review`).
    reviewer: Option<Arc<dyn ServiceAccountReviewer>>,
    metrics: Metrics,
}

impl IdentityService {
    /// A service issuing from `ca`, with join tokens and optionally TokenReview.
    pub fn new(
        ca: Arc<Ca>,
        tokens: Option<JoinTokens>,
        reviewer: Option<Arc<dyn ServiceAccountReviewer>>,
        metrics: Metrics,
    ) -> Self {
        IdentityService {
            ca,
            tokens,
            reviewer,
            metrics,
        }
    }

    /// The whole decision: prove, check the CSR, sign.
    pub async fn certify_request(
        &self,
        request: &v1::CertifyRequest,
    ) -> Result<v1::CertifyResponse, Refusal> {
        use v1::certify_request::Proof;
        let proven = match &request.proof {
            Some(Proof::JoinToken(token)) => match &self.tokens {
                Some(tokens) => tokens.verify(token)?,
                None => {
                    return Err(Refusal::ProofDisabled(
                        "join tokens are not accepted in --kubernetes mode: prove the identity with the pod's service-account token"
                            .into(),
                    ));
                }
            },
            Some(Proof::ServiceAccountToken(token)) => match &self.reviewer {
                Some(reviewer) => reviewer.review(token).await?,
                None => {
                    return Err(Refusal::ProofDisabled(
                        "service-account tokens are not accepted: the control plane runs without --token-review"
                            .into(),
                    ));
                }
            },
            None => {
                return Err(Refusal::ProofDisabled(
                    "no proof: send a join token or a service-account token".into(),
                ));
            }
        };
        let issued = self.ca.certify(&request.csr, &proven)?;
        Ok(response(&self.ca, &proven, issued))
    }
}

fn response(ca: &Ca, proven: &ProvenIdentity, issued: super::ca::Issued) -> v1::CertifyResponse {
    v1::CertifyResponse {
        certificate_chain: issued.chain.iter().map(|c| c.to_vec()).collect(),
        trust_roots: ca.roots().iter().map(|c| c.to_vec()).collect(),
        spiffe_id: proven.spiffe_id.to_string(),
        service: proven.service.clone(),
        not_after_unix: issued.not_after_unix,
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<v1::CertifyRequest>,
    ) -> Result<Response<v1::CertifyResponse>, Status> {
        let peer = request.remote_addr();
        match self.certify_request(request.get_ref()).await {
            Ok(answer) => {
                self.metrics.certificates_issued.inc();
                tracing::info!(spiffe_id = %answer.spiffe_id, ?peer, not_after = answer.not_after_unix, "issued a workload certificate");
                Ok(Response::new(answer))
            }
            Err(refusal) => {
                self.metrics
                    .certificates_refused
                    .get_or_create(&CertRefusedLabels {
                        reason: refusal.reason(),
                    })
                    .inc();
                tracing::warn!(?peer, reason = refusal.reason(), %refusal, "refused a certificate");
                Err(refusal.into())
            }
        }
    }
}

/// `JoinTokens`: create, list, revoke.
#[derive(Clone, Debug)]
pub struct JoinTokensService {
    tokens: JoinTokens,
}

impl JoinTokensService {
    /// Operators' access to `tokens`.
    pub fn new(tokens: JoinTokens) -> Self {
        JoinTokensService { tokens }
    }

    fn info(&self, record: &TokenRecord) -> v1::JoinTokenInfo {
        v1::JoinTokenInfo {
            id: record.id.clone(),
            service: record.service.clone(),
            namespace: record.namespace.clone(),
            service_account: record.service_account.clone(),
            created_unix: record.created_unix,
            expires_unix: record.expires_unix,
            spiffe_id: self
                .tokens
                .spiffe_id(record)
                .map(|id| id.to_string())
                .unwrap_or_default(),
        }
    }
}

#[tonic::async_trait]
impl JoinTokensApi for JoinTokensService {
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let r = request.into_inner();
        if r.service.is_empty() {
            return Err(Status::invalid_argument("service is required"));
        }
        let namespace = if r.namespace.is_empty() {
            levee_proto::policy::DEFAULT_NAMESPACE.to_owned()
        } else {
            r.namespace
        };
        let account = if r.service_account.is_empty() {
            r.service.clone()
        } else {
            r.service_account
        };
        let ttl = match r.ttl_seconds {
            0 => DEFAULT_TOKEN_TTL,
            s => Duration::from_secs(s),
        };
        let tokens = self.tokens.clone();
        let (secret, record) = tokio::task::spawn_blocking(move || {
            tokens.create(&r.service, &namespace, &account, ttl)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::invalid_argument)?;
        tracing::info!(id = %record.id, service = %record.service, namespace = %record.namespace, "created a join token");
        Ok(Response::new(v1::CreateTokenResponse {
            token: secret,
            info: Some(self.info(&record)),
        }))
    }

    async fn list_tokens(
        &self,
        _request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let records = self.tokens.list().map_err(Status::internal)?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: records.iter().map(|r| self.info(r)).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let id = request.into_inner().id;
        let tokens = self.tokens.clone();
        let lookup = id.clone();
        let removed = tokio::task::spawn_blocking(move || tokens.revoke(&lookup))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::internal)?;
        if removed {
            tracing::info!(%id, "revoked a join token");
            Ok(Response::new(v1::RevokeTokenResponse {}))
        } else {
            Err(Status::not_found(format!("no join token has id {id:?}")))
        }
    }
}
