//! Join tokens: the proof a proxy outside Kubernetes presents to Certify.
//!
//! A token is `<id>.<secret>`: `id` (16 hex digits) names it in `leveectl
//! token list/revoke`; `secret` (64 hex digits, 256 random bits) is shown
//! once, at creation. The store keeps only SHA-256 of the secret, with the
//! identity the token grants and its expiry, in the `join_tokens` table.
//! A token is reusable (renewals present it again) until it expires or is
//! revoked.

use std::sync::Arc;
use std::time::Duration;

use levee_proto::policy::SpiffeId;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use super::Refusal;
use super::anchor::unix_now;
use super::ca::ProvenIdentity;
use crate::store::{IdentityTable, PolicyStore};

/// Lifetime of a token created without `--ttl`.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What the store keeps about one token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public name of the token.
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// The service the holder may register endpoints for.
    pub service: String,
    /// Namespace of the identity.
    pub namespace: String,
    /// Service account of the identity.
    pub service_account: String,
    /// Unix seconds.
    pub created_unix: i64,
    /// Unix seconds; the token proves nothing from then on.
    pub expires_unix: i64,
}

/// The join tokens in the store.
#[derive(Clone, Debug)]
pub struct JoinTokens {
    store: Arc<PolicyStore>,
    trust_domain: String,
}

impl JoinTokens {
    /// Tokens kept in `store`, granting identities of `trust_domain`.
    pub fn new(store: Arc<PolicyStore>, trust_domain: &str) -> Self {
        JoinTokens {
            store,
            trust_domain: trust_domain.to_owned(),
        }
    }

    /// The SPIFFE ID a record grants.
    pub fn spiffe_id(&self, record: &TokenRecord) -> Result<SpiffeId, String> {
        SpiffeId::workload(
            &self.trust_domain,
            &record.namespace,
            &record.service_account,
        )
    }

    /// Creates a token; returns the secret (shown once) and the record.
    pub fn create(
        &self,
        service: &str,
        namespace: &str,
        service_account: &str,
        ttl: Duration,
    ) -> Result<(String, TokenRecord), String> {
        let now = unix_now();
        let mut record = TokenRecord {
            id: random_hex(8)?,
            secret_sha256: String::new(),
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            created_unix: now,
            expires_unix: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        };
        // The names must make a SPIFFE ID (and a service name) now, not at Certify.
        self.spiffe_id(&record)?;
        levee_proto::policy::check_hello(&levee_proto::v1::Hello {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
        let secret = random_hex(32)?;
        record.secret_sha256 = sha256_hex(secret.as_bytes());
        let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        self.store
            .identity_put(IdentityTable::JoinTokens, &record.id, &bytes)
            .map_err(|e| e.to_string())?;
        Ok((format!("{}.{secret}", record.id), record))
    }

    /// Every token, sorted by id (expired ones included until revoked).
    pub fn list(&self) -> Result<Vec<TokenRecord>, String> {
        self.store
            .identity_list(IdentityTable::JoinTokens)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(id, bytes)| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| format!("store: join token {id} is corrupt: {e}"))
            })
            .collect()
    }

    /// Deletes a token; `false` when no token has that id.
    pub fn revoke(&self, id: &str) -> Result<bool, String> {
        self.store
            .identity_remove(IdentityTable::JoinTokens, id)
            .map_err(|e| e.to_string())
    }

    /// The identity `token` proves, or why it proves none.
    pub fn verify(&self, token: &str) -> Result<ProvenIdentity, Refusal> {
        let (id, secret) = token.trim().split_once('.').ok_or_else(|| {
            Refusal::BadProof("the join token is not of the form <id>.<secret>".into())
        })?;
        let record = self
            .store
            .identity_get(IdentityTable::JoinTokens, id)
            .map_err(|e| Refusal::Internal(e.to_string()))?
            .ok_or_else(|| {
                Refusal::BadProof(format!("join token {id:?} is unknown or was revoked"))
            })?;
        let record: TokenRecord = serde_json::from_slice(&record)
            .map_err(|e| Refusal::Internal(format!("join token {id} is corrupt: {e}")))?;
        let presented = sha256_hex(secret.as_bytes());
        if !constant_time_eq(presented.as_bytes(), record.secret_sha256.as_bytes()) {
            return Err(Refusal::BadProof(format!(
                "join token {id:?}: the secret is wrong"
            )));
        }
        if unix_now() >= record.expires_unix {
            return Err(Refusal::ExpiredProof(format!(
                "join token {id:?} expired at {} (unix seconds); create a new one",
                record.expires_unix
            )));
        }
        let spiffe_id = self.spiffe_id(&record).map_err(Refusal::Internal)?;
        Ok(ProvenIdentity {
            spiffe_id,
            service: record.service,
        })
    }
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| "no randomness available".to_owned())?;
    Ok(hex(&buf))
}

fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without an early exit (the time taken reveals nothing of the hash).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
