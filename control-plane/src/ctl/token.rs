//! `token create|list|revoke`: the join tokens proxies prove their identity
//! with outside Kubernetes (docs/identity.md).

use std::io::Write;

use levee_proto::v1;
use serde_json::{Value, json};

use super::Format;
use super::client::{connect_tokens, describe};
use super::table::write_table;
use crate::error::BoxError;

/// What `token create` asks for.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub service: String,
    pub namespace: String,
    pub service_account: Option<String>,
    /// Seconds; `None`: the control plane's default (30 days).
    pub ttl_seconds: Option<u64>,
}

/// Creates a token: the secret alone on `out` (so `> file` works) with
/// `-o table`, or everything as JSON; what it grants goes to stderr.
pub async fn create(
    server: &str,
    token: Option<&str>,
    new: &NewToken,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), BoxError> {
    let mut client = connect_tokens(server, token).await?;
    let created = client
        .create_token(v1::CreateTokenRequest {
            service: new.service.clone(),
            namespace: new.namespace.clone(),
            service_account: new.service_account.clone().unwrap_or_default(),
            ttl_seconds: new.ttl_seconds.unwrap_or(0),
        })
        .await
        .map_err(|s| describe(&s, server, &|_| String::new()))?
        .into_inner();
    let info = created.info.unwrap_or_default();
    match format {
        Format::Table => {
            writeln!(out, "{}", created.token)?;
            eprintln!(
                "join token {} for service {}/{} as {}, expires at {} (unix seconds); it is shown only now",
                info.id, info.namespace, info.service, info.spiffe_id, info.expires_unix
            );
        }
        Format::Json | Format::Yaml => {
            let mut value = info_json(&info);
            value["token"] = json!(created.token);
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        }
    }
    Ok(())
}

/// Lists tokens (never their secrets).
pub async fn list(
    server: &str,
    token: Option<&str>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), BoxError> {
    let mut client = connect_tokens(server, token).await?;
    let listed = client
        .list_tokens(v1::ListTokensRequest {})
        .await
        .map_err(|s| describe(&s, server, &|_| String::new()))?
        .into_inner();
    match format {
        Format::Table => {
            let now = crate::identity::anchor::unix_now();
            let rows: Vec<Vec<String>> = listed
                .tokens
                .iter()
                .map(|t| {
                    let left = t.expires_unix.saturating_sub(now);
                    vec![
                        t.id.clone(),
                        format!("{}/{}", t.namespace, t.service),
                        t.spiffe_id.clone(),
                        if left > 0 {
                            format!("{}h", left / 3600)
                        } else {
                            "expired".to_owned()
                        },
                    ]
                })
                .collect();
            write_table(out, &["ID", "SERVICE", "IDENTITY", "EXPIRES IN"], &rows)?;
        }
        Format::Json | Format::Yaml => {
            let tokens: Vec<Value> = listed.tokens.iter().map(info_json).collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&tokens)?)?;
        }
    }
    Ok(())
}

/// Revokes one token: certificates can no longer be renewed with it.
pub async fn revoke(
    server: &str,
    token: Option<&str>,
    id: &str,
    out: &mut dyn Write,
) -> Result<(), BoxError> {
    let mut client = connect_tokens(server, token).await?;
    client
        .revoke_token(v1::RevokeTokenRequest { id: id.to_owned() })
        .await
        .map_err(|s| describe(&s, server, &|_| String::new()))?;
    writeln!(out, "join token {id} revoked")?;
    Ok(())
}

fn info_json(info: &v1::JoinTokenInfo) -> Value {
    json!({
        "id": info.id,
        "service": info.service,
        "namespace": info.namespace,
        "serviceAccount": info.service_account,
        "spiffeId": info.spiffe_id,
        "createdUnix": info.created_unix,
        "expiresUnix": info.expires_unix,
    })
}
