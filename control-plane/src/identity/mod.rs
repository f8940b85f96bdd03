//! Workload identity: the control plane is a certificate authority
//! (docs/identity.md).
//!
//! Layout:
//! - `anchor`: the trust anchor (a generated root kept in the store, or the
//!   operator's files) and the rotation of a generated root.
//! - `ca`: [`ca::Ca`]: signs CSRs for proven identities; the control plane's
//!   own serving certificate.
//! - `tokens`: join tokens (hashed in the store, expiring, revocable).
//! - `tokenreview`: projected service-account tokens, checked by TokenReview.
//! - `service`: the `Identity.Certify` and `JoinTokens` gRPC services.
//! - `peer`: who a Discovery stream is, from its client certificate, and
//!   what its hello may claim.

pub mod anchor;
pub mod ca;
pub mod peer;
pub mod service;
pub mod tokenreview;
pub mod tokens;

use tonic::Status;

/// Why Certify issued nothing. Each maps to one gRPC code and one `reason`
/// label of `levee_cp_certificates_refused_total`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No proof, or a proof kind this control plane does not accept.
    #[error("{0}")]
    ProofDisabled(String),
    /// The proof is unknown, wrong, revoked or not for Levee.
    #[error("{0}")]
    BadProof(String),
    /// The proof was good once.
    #[error("{0}")]
    ExpiredProof(String),
    /// The CSR asks for another identity than the proof grants.
    #[error("{0}")]
    IdentityMismatch(String),
    /// The CSR does not parse, verify, or asks for names the CA does not issue.
    #[error("{0}")]
    BadCsr(String),
    /// The proof could not be checked (the Kubernetes API is unreachable).
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the control plane (store, randomness, clock).
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::ProofDisabled(_) => "proof_disabled",
            Refusal::BadProof(_) => "invalid_proof",
            Refusal::ExpiredProof(_) => "expired_proof",
            Refusal::IdentityMismatch(_) => "identity_mismatch",
            Refusal::BadCsr(_) => "bad_csr",
            Refusal::Unavailable(_) => "review_unavailable",
            Refusal::Internal(_) => "internal",
        }
    }

    /// Every reason, to expose each counter from the start at 0.
    pub const REASONS: [&'static str; 7] = [
        "proof_disabled",
        "invalid_proof",
        "expired_proof",
        "identity_mismatch",
        "bad_csr",
        "review_unavailable",
        "internal",
    ];
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Status {
        match refusal {
            Refusal::ProofDisabled(m) => Status::failed_precondition(m),
            Refusal::BadProof(m) | Refusal::ExpiredProof(m) => Status::unauthenticated(m),
            Refusal::IdentityMismatch(m) => Status::permission_denied(m),
            Refusal::BadCsr(m) => Status::invalid_argument(m),
            Refusal::Unavailable(m) => Status::unavailable(m),
            Refusal::Internal(m) => Status::internal(m),
        }
    }
}

#[cfg(test)]
mod tests;
