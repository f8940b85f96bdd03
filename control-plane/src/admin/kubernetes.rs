//! `PolicyAdmin` in Kubernetes mode: the API server stores the policies
//! (`kubectl apply` writes them, the validating webhook checks them), so
//! this replica has no documents of its own to apply, get, list or delete.
//! Those calls answer FAILED_PRECONDITION with the `kubectl` command to use
//! instead, rather than UNIMPLEMENTED, which reads like a version mismatch.
//! `Status` works as in store mode: the proxies connected to THIS replica,
//! with their identity and certificate expiry (`leveectl status` through
//! `kubectl port-forward` to one replica).

use std::sync::Arc;

use levee_proto::v1::{self, policy_admin_server::PolicyAdmin};
use tonic::{Request, Response, Status};

use crate::discovery::status::{Sessions, to_proto};

/// The tonic service of a `--kubernetes` replica.
#[derive(Debug, Clone)]
pub struct KubernetesAdmin {
    sessions: Arc<Sessions>,
    /// `--pod-name` (the Lease holder identity).
    replica: String,
}

impl KubernetesAdmin {
    /// Reports the proxies of `sessions`, connected to replica `replica`.
    pub fn new(sessions: Arc<Sessions>, replica: String) -> Self {
        KubernetesAdmin { sessions, replica }
    }
}

/// What a store call gets: where the policies are, and how to reach them.
fn not_here(instead: &str) -> Status {
    Status::failed_precondition(format!(
        "this control plane runs in Kubernetes mode: policies are ResiliencePolicy \
         objects in the Kubernetes API; use {instead}"
    ))
}

#[tonic::async_trait]
impl PolicyAdmin for KubernetesAdmin {
    async fn apply(
        &self,
        _request: Request<v1::ApplyRequest>,
    ) -> Result<Response<v1::ApplyResponse>, Status> {
        Err(not_here(
            "`kubectl apply -f FILE` (check it first with `leveectl validate -f FILE`)",
        ))
    }

    async fn get(
        &self,
        _request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::GetResponse>, Status> {
        Err(not_here(
            "`kubectl get resiliencepolicy NAME -n NS -o yaml`",
        ))
    }

    async fn list(
        &self,
        _request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        Err(not_here("`kubectl get resiliencepolicies -A`"))
    }

    async fn delete(
        &self,
        _request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        Err(not_here("`kubectl delete resiliencepolicy NAME -n NS`"))
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let proxies = self.sessions.snapshot().iter().map(to_proto).collect();
        // No store: no revision and nothing quarantined.
        Ok(Response::new(v1::StatusResponse {
            revision: 0,
            proxies,
            quarantined: Vec::new(),
            kubernetes_replica: self.replica.clone(),
        }))
    }
}
