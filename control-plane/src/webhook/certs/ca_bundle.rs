//! Keeps this replica's webhook CA in the `caBundle` of the webhook
//! configurations (`levee-sidecar-injector`, `levee-policy-validator`).
//!
//! Several replicas each have their own CA, so the bundle is a union: this
//! replica's CA is added in front, the others' are kept while they are
//! unexpired (at most [`MAX_CAS`], newest first), expired ones and anything
//! that is not a certificate are dropped. Each configuration is read, and
//! patched only when a bundle changes, with a strategic merge patch on its
//! `webhooks` (merged by name) that carries the `resourceVersion` it read:
//! a replica that raced another gets 409 Conflict and tries again on its
//! next round instead of overwriting the other's CA. Re-run every round,
//! it also repairs a bundle that a re-applied manifest reset.

use std::fmt::Debug;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, Patch, PatchParams};
use kube::core::ClusterResourceScope;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use x509_parser::pem::Pem;

/// The MutatingWebhookConfiguration of the sidecar injector.
pub const MUTATING: &str = "levee-sidecar-injector";
/// The ValidatingWebhookConfiguration of the policy validator.
pub const VALIDATING: &str = "levee-policy-validator";
/// CAs kept in one bundle at most (replicas × overlapping rotations).
pub const MAX_CAS: usize = 8;

/// Puts `ca_pem` into every webhook's `caBundle` of both configurations.
/// Returns how many configurations were patched.
pub async fn reconcile(client: &Client, ca_pem: &str, now_unix: i64) -> Result<usize, kube::Error> {
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mutating = reconcile_one(&mutating, MUTATING, ca_pem, now_unix).await?;
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let validating = reconcile_one(&validating, VALIDATING, ca_pem, now_unix).await?;
    Ok(usize::from(mutating) + usize::from(validating))
}

/// Each webhook's name and `caBundle` in a configuration: both kinds have
/// `webhooks[].clientConfig.caBundle`, in types of their own.
trait Bundles {
    fn bundles(&self) -> Vec<(String, Option<ByteString>)>;
}

macro_rules! bundles_of {
    ($($kind:ty),*) => {$(
        impl Bundles for $kind {
            fn bundles(&self) -> Vec<(String, Option<ByteString>)> {
                self.webhooks
                    .iter()
                    .flatten()
                    .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                    .collect()
            }
        }
    )*};
}

bundles_of!(MutatingWebhookConfiguration, ValidatingWebhookConfiguration);

async fn reconcile_one<K>(
    api: &Api<K>,
    name: &str,
    ca_pem: &str,
    now_unix: i64,
) -> Result<bool, kube::Error>
where
    K: Resource<Scope = ClusterResourceScope> + Clone + DeserializeOwned + Debug + Bundles,
{
    let config = api.get(name).await?;
    let mut changed = Vec::new();
    for (webhook, bundle) in config.bundles() {
        let current = bundle.map(|b| b.0).unwrap_or_default();
        let merged = merge(ca_pem, &current, now_unix);
        if merged.as_bytes() != current.as_slice() {
            changed.push(json!({
                "name": webhook,
                "clientConfig": {"caBundle": ByteString(merged.into_bytes())},
            }));
        }
    }
    if changed.is_empty() {
        return Ok(false);
    }
    let body = json!({
        "metadata": {"resourceVersion": config.meta().resource_version},
        "webhooks": changed,
    });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(body))
        .await?;
    tracing::info!(configuration = name, "webhook caBundle updated");
    Ok(true)
}

/// The new bundle: `ours` first, then the other unexpired certificates of
/// `current` (as they were written), newest expiry first, [`MAX_CAS`] in all.
pub fn merge(ours: &str, current: &[u8], now_unix: i64) -> String {
    const END: &str = "-----END CERTIFICATE-----";
    let ours = ours.trim();
    let text = String::from_utf8_lossy(current);
    let mut others: Vec<(i64, &str)> = text
        .split_inclusive(END)
        .map(str::trim)
        .filter(|block| block.ends_with(END) && *block != ours)
        .filter_map(|block| {
            let (pem, _) = Pem::read(std::io::Cursor::new(block.as_bytes())).ok()?;
            let not_after = pem.parse_x509().ok()?.validity().not_after.timestamp();
            (not_after > now_unix).then_some((not_after, block))
        })
        .collect();
    others.sort_by_key(|other| std::cmp::Reverse(other.0));
    others.dedup_by(|a, b| a.1 == b.1);
    let mut bundle = format!("{ours}\n");
    for (_, block) in others.into_iter().take(MAX_CAS - 1) {
        bundle.push_str(block);
        bundle.push('\n');
    }
    bundle
}
