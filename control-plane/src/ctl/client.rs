//! leveectl's connection to `PolicyAdmin` and `JoinTokens`: server URL,
//! TLS (an `https://` server is verified against `--trust-bundle-file`, set
//! once per run with [`use_trust_bundle`]), bearer token, timeouts (an
//! unreachable server fails fast instead of hanging), and gRPC errors turned
//! into sentences.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use levee_proto::v1::join_tokens_client::JoinTokensClient;

use levee_proto::v1::policy_admin_client::PolicyAdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::admin::errors::violations;
use crate::error::BoxError;

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone, Debug, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    /// A token to send (`None`: send none).
    pub fn new(token: Option<&str>) -> Result<Self, BoxError> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(BearerToken(None)),
            Some(t) => {
                let value = format!("Bearer {t}")
                    .parse()
                    .map_err(|_| "the token must be printable ASCII")?;
                Ok(BearerToken(Some(value)))
            }
        }
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connected admin client.
pub type AdminClient = PolicyAdminClient<InterceptedService<Channel, BearerToken>>;

/// A connected join-token client.
pub type TokensClient = JoinTokensClient<InterceptedService<Channel, BearerToken>>;

/// `--trust-bundle-file` of this run (one per process: leveectl runs one command).
static TRUST_BUNDLE: OnceLock<PathBuf> = OnceLock::new();

/// Verifies `https://` servers against this PEM bundle.
pub fn use_trust_bundle(path: PathBuf) {
    let _ = TRUST_BUNDLE.set(path);
}

/// Connects to `server` (e.g. `https://127.0.0.1:8090`), failing within
/// [`CONNECT_TIMEOUT`] when nothing answers.
pub async fn connect(server: &str, token: Option<&str>) -> Result<AdminClient, BoxError> {
    Ok(PolicyAdminClient::with_interceptor(
        channel(server).await?,
        BearerToken::new(token)?,
    ))
}

/// [`connect`] for `JoinTokens`.
pub async fn connect_tokens(server: &str, token: Option<&str>) -> Result<TokensClient, BoxError> {
    Ok(JoinTokensClient::with_interceptor(
        channel(server).await?,
        BearerToken::new(token)?,
    ))
}

async fn channel(server: &str) -> Result<Channel, BoxError> {
    // `127.0.0.1:8090` means `http://127.0.0.1:8090`.
    let url = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| format!("--server {server:?} is not a URL: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    if url.starts_with("https://") {
        let path = TRUST_BUNDLE.get().ok_or(
            "an https:// --server needs --trust-bundle-file (the control plane's <data-dir>/trust-bundle.pem)",
        )?;
        let pem = std::fs::read(path)
            .map_err(|e| format!("--trust-bundle-file {}: {e}", path.display()))?;
        endpoint = endpoint
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            )
            .map_err(|e| format!("--trust-bundle-file: {e}"))?;
    }
    let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => {
            return Err(
                format!("cannot reach the control plane at {server}: {}", chain(&e)).into(),
            );
        }
        Err(_) => {
            return Err(format!(
                "cannot reach the control plane at {server}: no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )
            .into());
        }
    };
    Ok(channel)
}

/// An error and its causes, joined with `: `.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// A failed call as a sentence for people. `document_name` maps a 1-based
/// document index of the request to where it came from (file, document).
pub fn describe(status: &Status, server: &str, document_name: &dyn Fn(u32) -> String) -> String {
    match status.code() {
        Code::Unauthenticated => format!(
            "not authorized by the control plane: {} (set --token or LEVEE_TOKEN)",
            status.message()
        ),
        Code::InvalidArgument => {
            let found = violations(status);
            if found.is_empty() {
                return format!("rejected: {}", status.message());
            }
            let mut text = format!("rejected: {} problem(s)", found.len());
            for v in found {
                text.push_str("\n  ");
                text.push_str(&document_name(v.document));
                if !v.object.is_empty() {
                    text.push_str(&format!(" ({})", v.object));
                }
                text.push_str(": ");
                if !v.path.is_empty() {
                    text.push_str(&v.path);
                    text.push_str(": ");
                }
                text.push_str(&v.message);
            }
            text
        }
        Code::FailedPrecondition | Code::Aborted => status.message().to_owned(),
        Code::NotFound => status.message().to_owned(),
        Code::Unavailable | Code::DeadlineExceeded => format!(
            "cannot reach the control plane at {server}: {}",
            status.message()
        ),
        code => format!("control plane error ({code:?}): {}", status.message()),
    }
}
