//! `--policy-cache FILE`: the last good state from the control plane, so a
//! proxy restarted while the control plane is down starts from it.
//!
//! JSON, written next to the file and renamed into place after each accepted
//! update (a reader never sees half a file). Policies are kept as YAML and
//! re-validated on load, like a policy file:
//!
//! ```json
//! {"format": 1, "controlPlane": "http://…", "services": [
//!   {"service": "payments.shop:8080", "version": "7-…", "policyRevision": 7,
//!    "policy": "apiVersion: levee.dev/v1alpha1\n…", "endpoints": ["10.0.0.1:4143"]}]}
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use levee_proto::policy::{AppProtocol, Document, ServiceKey, SpiffeId, parse_documents, to_yaml};
use serde::{Deserialize, Serialize};

use super::services::{AcceptedUpdate, Services};

const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheFile {
    format: u32,
    control_plane: String,
    services: Vec<CachedService>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedService {
    service: ServiceKey,
    version: String,
    policy_revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
    endpoints: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app_protocol: Option<AppProtocol>,

    /// The SPIFFE ID expected at each endpoint that has one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    identities: BTreeMap<SocketAddr, SpiffeId>,
}

/// The cache file's text for `services`.
pub fn encode(services: &Services, control_plane: &str) -> Result<Vec<u8>, String> {
    let file = CacheFile {
        format: FORMAT,
        control_plane: control_plane.to_owned(),
        services: services
            .iter()
            .map(|(key, state)| CachedService {
                service: key.clone(),
                version: state.version.clone(),
                policy_revision: state.policy_revision,
                policy: state
                    .policy
                    .as_ref()
                    .map(|p| to_yaml(&[Document::Policy(p.as_ref().clone())])),
                endpoints: state.endpoints.to_vec(),
                app_protocol: state.app_protocol,
                identities: state.identities.clone(),
            })
            .collect(),
    };
    serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())
}

/// Reads a cache file's text; any problem refuses the whole file.
pub fn decode(bytes: &[u8]) -> Result<Services, String> {
    let file: CacheFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.format != FORMAT {
        return Err(format!("format {} is not {FORMAT}", file.format));
    }
    let mut services = Services::default();
    for cached in file.services {
        let policy = match cached.policy {
            Some(yaml) => match parse_documents(&yaml)
                .map_err(|e| e.to_string())?
                .as_slice()
            {
                [Document::Policy(policy)] => Some(Arc::new(policy.clone())),
                _ => {
                    return Err(format!(
                        "the policy of {} is not one ResiliencePolicy",
                        cached.service
                    ));
                }
            },
            None => None,
        };
        services.insert(
            cached.service,
            AcceptedUpdate {
                version: cached.version,
                policy_revision: cached.policy_revision,
                policy,
                endpoints: cached.endpoints.into(),
                app_protocol: cached.app_protocol,
                identities: cached.identities,
            },
        );
    }
    Ok(services)
}

/// Replaces the cache at `path` with `bytes`, atomically and durably, off
/// the async threads.
pub async fn write(path: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || levee_proto::fs::write_atomically(&path, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

/// Reads and decodes the cache at `path`.
pub async fn load(path: &Path) -> Result<Services, String> {
    let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
    decode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::services::LocalChecks;
    use levee_proto::v1 as pb;

    fn services() -> Services {
        let yaml = "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
                    metadata: {name: p, namespace: shop}\n\
                    spec: {target: {service: payments, port: 8080}, outbound: {retry: {maxRetries: 3}}}\n";
        let policy = match parse_documents(yaml).expect("valid").remove(0) {
            Document::Policy(p) => pb::ResiliencePolicy::from(&p),
            Document::Endpoints(_) => unreachable!(),
        };
        let payments =
            ServiceKey::from_authority("payments.shop:8080", "default", 80).expect("key");
        let orders = ServiceKey::from_authority("orders.shop:80", "default", 80).expect("key");
        let mut services = Services::default();
        let checks = LocalChecks { outbound: None };
        let update = |key: &ServiceKey, policy, endpoints: Vec<String>| pb::ServiceUpdate {
            service: Some(pb::ServiceRef::from(key)),
            version: format!("v-{}", key.name),
            nonce: "1".into(),
            policy_revision: 4,
            policy,
            endpoints,
            app_protocol: "http".into(),
            identities: [(
                "127.0.0.1:9001".to_owned(),
                "spiffe://levee.local/ns/shop/sa/payments".to_owned(),
            )]
            .into_iter()
            .filter(|_| key.name == "payments")
            .collect(),
            ..Default::default()
        };
        services
            .apply(
                &update(&payments, Some(policy), vec!["127.0.0.1:9001".into()]),
                checks,
            )
            .expect("payments");
        services
            .apply(&update(&orders, None, vec![]), checks)
            .expect("orders");
        services
    }

    #[tokio::test]
    async fn a_written_cache_reads_back_the_same_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache.json");
        let original = services();
        let bytes = encode(&original, "http://127.0.0.1:8090").expect("encode");
        write(&path, bytes).await.expect("write");
        let loaded = load(&path).await.expect("load");
        let before: Vec<_> = original.iter().collect();
        let after: Vec<_> = loaded.iter().collect();
        assert_eq!(before, after);
        assert!(!dir.path().join("cache.json.tmp").exists());
    }

    #[test]
    fn a_damaged_cache_is_refused() {
        let bytes = encode(&services(), "x").expect("encode");
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(decode(text.replace("maxRetries: 3", "maxRetries: -3").as_bytes()).is_err());
        assert!(decode(&text.as_bytes()[..text.len() / 2]).is_err());
        assert!(decode(text.replace("\"format\": 1", "\"format\": 9").as_bytes()).is_err());
    }
}
