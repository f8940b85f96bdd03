//! `status`: the store revision, any quarantined store records, and every
//! connected proxy, one row per subscription, with the version it was sent,
//! the version it ACKed and the last NACK reason, and its workload
//! identity (SPIFFE ID and time left on its certificate) when it has one.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use levee_proto::policy::{DEFAULT_NAMESPACE, ServiceKey};
use levee_proto::v1;
use serde_json::{Value, json};

use super::Format;
use super::client::{connect, describe};
use super::table::{or_dash, write_table};
use crate::error::BoxError;

/// Prints the control plane's status.
pub async fn status(
    server: &str,
    token: Option<&str>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), BoxError> {
    let mut client = connect(server, token).await?;
    let response = client
        .status(v1::StatusRequest {})
        .await
        .map_err(|s| describe(&s, server, &|_| String::new()))?
        .into_inner();
    match format {
        Format::Json | Format::Yaml => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&to_json(&response))?
        )?,
        Format::Table => write_status(&response, out)?,
    }
    Ok(())
}

fn write_status(response: &v1::StatusResponse, out: &mut dyn Write) -> std::io::Result<()> {
    if response.kubernetes_replica.is_empty() {
        writeln!(
            out,
            "store revision {}, {} proxies connected",
            response.revision,
            response.proxies.len()
        )?;
    } else {
        writeln!(
            out,
            "Kubernetes mode, replica {}: {} proxies connected to this replica \
             (policies: kubectl get resiliencepolicies -A)",
            response.kubernetes_replica,
            response.proxies.len()
        )?;
    }
    for q in &response.quarantined {
        writeln!(out, "quarantined store record {}: {}", q.key, q.reason)?;
    }
    if response.proxies.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    let now = unix_ms();
    let mut rows = Vec::new();
    for proxy in &response.proxies {
        let hello = proxy.hello.clone().unwrap_or_default();
        let who = if hello.service.is_empty() {
            "-".to_owned()
        } else {
            format!("{}/{}", or_namespace(&hello.namespace), hello.service)
        };
        let age = format!("{}s", now.saturating_sub(proxy.connected_at_unix_ms) / 1000);
        let identity = identity_text(proxy, now);
        let common = [
            proxy.stream_id.clone(),
            who,
            or_dash(&proxy.peer),
            or_dash(&hello.proxy_version),
            age,
        ];
        if proxy.subscriptions.is_empty() {
            let mut row = common.to_vec();
            row.extend(["-", "-", "-", "-"].map(String::from));
            row.push(identity.clone());
            rows.push(row);
        }
        for sub in &proxy.subscriptions {
            let mut row = common.to_vec();
            let nack = if sub.nack_reason.is_empty() {
                "-".to_owned()
            } else {
                format!("{}: {}", sub.nacked_version, sub.nack_reason)
            };
            row.extend([
                service_name(sub.service.as_ref()),
                or_dash(&sub.sent_version),
                or_dash(&sub.acked_version),
                nack,
                identity.clone(),
            ]);
            rows.push(row);
        }
    }
    write_table(
        out,
        &[
            "STREAM",
            "PROXY",
            "PEER",
            "VERSION",
            "AGE",
            "SUBSCRIPTION",
            "SENT",
            "ACKED",
            "LAST NACK",
            "IDENTITY",
        ],
        &rows,
    )
}

/// `spiffe://… (expires in 16h)`, or `-` without a certificate.
fn identity_text(proxy: &v1::ProxyStatus, now_ms: u64) -> String {
    if proxy.spiffe_id.is_empty() {
        return "-".to_owned();
    }
    let now = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let left = proxy.cert_not_after_unix.saturating_sub(now);
    let left = if left <= 0 {
        "expired".to_owned()
    } else if left >= 3600 {
        format!("expires in {}h", left / 3600)
    } else if left >= 60 {
        format!("expires in {}m", left / 60)
    } else {
        format!("expires in {left}s")
    };
    format!("{} ({left})", proxy.spiffe_id)
}

fn or_namespace(ns: &str) -> &str {
    if ns.is_empty() { DEFAULT_NAMESPACE } else { ns }
}

fn service_name(service: Option<&v1::ServiceRef>) -> String {
    service
        .and_then(|s| ServiceKey::try_from(s).ok())
        .map_or_else(|| "-".to_owned(), |key| key.to_string())
}

fn to_json(response: &v1::StatusResponse) -> Value {
    let proxies: Vec<Value> = response
        .proxies
        .iter()
        .map(|p| {
            let hello = p.hello.clone().unwrap_or_default();
            let subscriptions: Vec<Value> = p
                .subscriptions
                .iter()
                .map(|s| {
                    json!({
                        "service": service_name(s.service.as_ref()),
                        "sentVersion": s.sent_version,
                        "ackedVersion": s.acked_version,
                        "nackedVersion": s.nacked_version,
                        "nackReason": s.nack_reason,
                    })
                })
                .collect();
            json!({
                "streamId": p.stream_id,
                "service": hello.service,
                "namespace": or_namespace(&hello.namespace),
                "address": hello.address,
                "inboundPort": hello.inbound_port,
                "proxyVersion": hello.proxy_version,
                "peer": p.peer,
                "connectedAtUnixMs": p.connected_at_unix_ms,
                "spiffeId": p.spiffe_id,
                "certNotAfterUnix": p.cert_not_after_unix,
                "subscriptions": subscriptions,
            })
        })
        .collect();
    let quarantined: Vec<Value> = response
        .quarantined
        .iter()
        .map(|q| json!({ "key": q.key, "reason": q.reason }))
        .collect();
    let mut json =
        json!({ "revision": response.revision, "proxies": proxies, "quarantined": quarantined });
    if !response.kubernetes_replica.is_empty() {
        json["kubernetesReplica"] = json!(response.kubernetes_replica);
    }
    json
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
