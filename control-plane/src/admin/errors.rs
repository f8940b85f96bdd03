//! Store and validation failures as gRPC statuses, in one place.
//!
//! Invalid policy becomes `INVALID_ARGUMENT` whose message lists every
//! problem, one per line, and whose `grpc-status-details-bin` holds a
//! `google.rpc.Status` carrying a `levee.v1.PolicyViolations`.

use levee_proto::policy::{FieldError, PolicyErrors};
use levee_proto::v1;
use prost::Message;
use tonic::{Code, Status};

use crate::store::StoreError;

/// `type_url` of the detail carried by invalid-policy errors.
pub const VIOLATIONS_TYPE_URL: &str = "type.googleapis.com/levee.v1.PolicyViolations";

/// Every problem as `INVALID_ARGUMENT`, in the message and as details.
pub fn invalid_policy(errors: &PolicyErrors) -> Status {
    let count = errors.0.len();
    let message = format!("{count} problem(s) in the policy documents:\n{errors}");
    let violations = v1::PolicyViolations {
        violations: errors.iter().map(violation).collect(),
    };
    let details = v1::RpcStatus {
        code: Code::InvalidArgument as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: VIOLATIONS_TYPE_URL.to_owned(),
            value: violations.encode_to_vec(),
        }],
    };
    Status::with_details(
        Code::InvalidArgument,
        message,
        details.encode_to_vec().into(),
    )
}

fn violation(e: &FieldError) -> v1::PolicyViolation {
    v1::PolicyViolation {
        document: u32::try_from(e.document).unwrap_or(u32::MAX),
        object: e.object.clone().unwrap_or_default(),
        path: e.path.clone(),
        message: e.message.clone(),
    }
}

/// Reads the violations back out of a status (for clients and tests).
pub fn violations(status: &Status) -> Vec<v1::PolicyViolation> {
    let Ok(rpc) = v1::RpcStatus::decode(status.details()) else {
        return Vec::new();
    };
    rpc.details
        .iter()
        .filter(|any| any.type_url == VIOLATIONS_TYPE_URL)
        .filter_map(|any| v1::PolicyViolations::decode(any.value.as_slice()).ok())
        .flat_map(|v| v.violations)
        .collect()
}

/// A store failure as the status the caller should see.
pub fn store_error(e: StoreError) -> Status {
    match e {
        StoreError::Conflict { .. } => Status::failed_precondition(format!("conflict: {e}")),
        StoreError::NotFound(ref key) => Status::not_found(format!(
            "{} {}/{} not found",
            key.kind, key.namespace, key.name
        )),
        StoreError::Db(_) | StoreError::Corrupt { .. } => {
            tracing::error!(error = %e, "store failure");
            Status::internal(e.to_string())
        }
    }
}

/// The label of a store error for `levee_cp_store_operations_total{result}`.
pub fn result_label(e: &StoreError) -> &'static str {
    match e {
        StoreError::Conflict { .. } => "conflict",
        StoreError::NotFound(_) => "not_found",
        StoreError::Db(_) | StoreError::Corrupt { .. } => "error",
    }
}
