//! The admission webhooks the control plane serves to the Kubernetes API
//! server over HTTPS on `--webhook-addr` (off unless given):
//!
//! - `inject`: the sidecar injector (`/mutate-pods`, `/mutate-pods-opt-in`).
//! - `validate`: the `ResiliencePolicy` validator (`/validate-resiliencepolicy`),
//!   the same checks as `leveectl validate`.
//! - `review`: the AdmissionReview envelope in and out (base64 patch).
//! - `server`: the HTTPS listener, routing, limits and error responses.
//! - `certs`: the serving certificate: files (`--webhook-cert`/`--webhook-key`)
//!   or the control plane's own CA, rotated, and the configurations' `caBundle`.

pub mod certs;
pub mod inject;
pub mod review;
pub mod server;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use self::certs::ServingCert;
use self::certs::issuer::{Authority, CA_LIFETIME, SERVING_LIFETIME, due};
use self::inject::Injector;
use crate::error::BoxError;

/// How often the self-issued certificates are checked for renewal and the
/// `caBundle`s reconciled.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(60);

/// The webhook flags (flattened into the control plane's).
#[derive(Debug, Clone, Args)]
pub struct WebhookConfig {
    /// Serve the admission webhooks over HTTPS here, e.g. 0.0.0.0:9443. Off
    /// when not given.
    #[arg(long, env = "LEVEE_WEBHOOK_ADDR")]
    pub webhook_addr: Option<SocketAddr>,

    /// PEM certificate chain for the webhook server (e.g. from cert-manager);
    /// re-read when it changes. Without it the control plane issues its own.
    #[arg(long, env = "LEVEE_WEBHOOK_CERT", requires = "webhook_key")]
    pub webhook_cert: Option<PathBuf>,

    /// PEM private key of --webhook-cert.
    #[arg(long, env = "LEVEE_WEBHOOK_KEY", requires = "webhook_cert")]
    pub webhook_key: Option<PathBuf>,

    /// Names the self-issued serving certificate is valid for (DNS names or
    /// IP addresses): the webhook Service's names.
    #[arg(
        long,
        env = "LEVEE_WEBHOOK_CERT_NAMES",
        value_delimiter = ',',
        default_value = "levee-control-plane.levee-system.svc,levee-control-plane.levee-system.svc.cluster.local,levee-control-plane.levee-system,levee-control-plane"
    )]
    pub webhook_cert_names: Vec<String>,

    /// Write the self-issued CA (PEM) to this file, rewritten when the CA
    /// changes: for clients outside Kubernetes.
    #[arg(long, env = "LEVEE_WEBHOOK_CA_FILE", conflicts_with = "webhook_cert")]
    pub webhook_ca_file: Option<PathBuf>,

    /// Put the self-issued CA into the caBundle of the webhook configurations
    /// levee-sidecar-injector and levee-policy-validator through the
    /// Kubernetes API (in-cluster config or kubeconfig).
    #[arg(
        long,
        env = "LEVEE_WEBHOOK_PATCH_CA_BUNDLE",
        conflicts_with = "webhook_cert"
    )]
    pub webhook_patch_ca_bundle: bool,

    /// Largest AdmissionReview body accepted; a larger one gets 413.
    #[arg(long, env = "LEVEE_WEBHOOK_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub webhook_max_body_bytes: usize,

    /// Image of the injected `levee-init` and `levee-proxy` containers.
    #[arg(long, env = "LEVEE_PROXY_IMAGE", default_value = "levee:dev")]
    pub proxy_image: String,

    /// Control-plane URL the injected proxies watch (their --control-plane).
    /// `https://`: they get the trust bundle (ConfigMap `levee-trust-bundle`
    /// of their namespace) and a projected service-account token as proof;
    /// `http://`: `--insecure-plaintext`.
    #[arg(
        long,
        env = "LEVEE_PROXY_CONTROL_PLANE",
        default_value = "https://levee-control-plane.levee-system.svc:8090"
    )]
    pub proxy_control_plane: String,

    /// OTLP/gRPC collector the injected proxies export traces to (their
    /// OTEL_EXPORTER_OTLP_ENDPOINT), e.g. http://otel-collector.observability:4317.
    /// None: no tracing, unless a pod's `levee.dev/trace-collector` names one.
    #[arg(long, env = "LEVEE_PROXY_TRACE_COLLECTOR", value_parser = parse_collector)]
    pub proxy_trace_collector: Option<String>,

    /// `json`: injected proxies write one access-log line per request on
    /// their stdout (their LEVEE_ACCESS_LOG), unless a pod's
    /// `levee.dev/access-log: off` says otherwise; `off`: only pods
    /// annotated `levee.dev/access-log: json` do.
    #[arg(long, env = "LEVEE_PROXY_ACCESS_LOG", value_parser = ["json", "off"], default_value = "off")]
    pub proxy_access_log: String,
}

fn parse_collector(url: &str) -> Result<String, String> {
    if inject::workload::is_collector_url(url) {
        Ok(url.to_owned())
    } else {
        Err(format!("{url:?} is not an http:// or https:// URL"))
    }
}

/// Binds `--webhook-addr` and spawns the server and its certificate
/// upkeep. `None` when the webhooks are off. `token_audience` is
/// `--token-review-audience`, which injected proxies' tokens carry.
pub async fn start(
    config: &WebhookConfig,
    token_audience: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<(SocketAddr, JoinHandle<std::io::Result<()>>)>, BoxError> {
    let Some(addr) = config.webhook_addr else {
        return Ok(None);
    };
    let serving = match (&config.webhook_cert, &config.webhook_key) {
        (Some(cert), Some(key)) => {
            let serving = ServingCert::new(certs::load_files(cert, key)?);
            tokio::spawn(certs::watch_files(
                cert.clone(),
                key.clone(),
                serving.clone(),
                shutdown.clone(),
            ));
            serving
        }
        _ => self_issued(config, shutdown.clone()).await?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(serving);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--webhook-addr {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let state = server::WebhookState {
        injector: Arc::new(Injector {
            image: config.proxy_image.clone(),
            control_plane: config.proxy_control_plane.clone(),
            token_audience: token_audience.to_owned(),
            trace_collector: config.proxy_trace_collector.clone(),
            access_log: config.proxy_access_log == "json",
        }),
        max_body: config.webhook_max_body_bytes,
    };
    tracing::info!(webhook = %bound, "admission webhooks listening (HTTPS)");
    let serving = tokio::spawn(server::serve(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        state,
        shutdown,
    ));
    Ok(Some((bound, serving)))
}

/// The control plane's own CA and serving certificate, kept fresh (and the
/// caBundles patched) by a background task.
async fn self_issued(
    config: &WebhookConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<Arc<ServingCert>, BoxError> {
    let now = SystemTime::now();
    let ca = Authority::new(now)?;
    let issued = ca.issue(&config.webhook_cert_names, now)?;
    let serving = ServingCert::new(certs::certified_key(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )?);
    if let Some(path) = &config.webhook_ca_file {
        levee_proto::fs::write_atomically(path, ca.pem.as_bytes())
            .map_err(|e| format!("--webhook-ca-file {}: {e}", path.display()))?;
    }
    let client = if config.webhook_patch_ca_bundle {
        Some(
            kube::Client::try_default()
                .await
                .map_err(|e| format!("--webhook-patch-ca-bundle: no Kubernetes client: {e}"))?,
        )
    } else {
        None
    };
    let upkeep = Upkeep {
        names: config.webhook_cert_names.clone(),
        ca_file: config.webhook_ca_file.clone(),
        client,
        serving: serving.clone(),
        ca,
        issued: Some(issued.issued),
    };
    tokio::spawn(upkeep.run(shutdown));
    Ok(serving)
}

/// Renews the self-issued CA and certificate and reconciles the caBundles.
struct Upkeep {
    names: Vec<String>,
    ca_file: Option<PathBuf>,
    client: Option<kube::Client>,
    serving: Arc<ServingCert>,
    ca: Authority,
    /// When the serving certificate in use was issued; `None` after a CA
    /// change (reissue now).
    issued: Option<SystemTime>,
}

impl Upkeep {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(error) = self.round(SystemTime::now()).await {
                tracing::warn!(%error, "webhook certificate upkeep failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One round: a new CA when due (the old one stays in the bundles until
    /// it expires), the bundles reconciled, then a new serving certificate
    /// when due or when the CA changed. The server switches to a new CA's
    /// certificate only after the bundles hold that CA.
    async fn round(&mut self, now: SystemTime) -> Result<(), BoxError> {
        let mut next_ca = None;
        if due(self.ca.issued, CA_LIFETIME, now) {
            next_ca = Some(Authority::new(now)?);
        }
        let ca = next_ca.as_ref().unwrap_or(&self.ca);
        let mut bundles = Ok(());
        if let Some(client) = &self.client {
            let now_unix = now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            bundles = certs::ca_bundle::reconcile(client, &ca.pem, now_unix)
                .await
                .map(drop)
                .map_err(|e| format!("caBundle: {e}"));
        }
        // A new CA only once the bundles trust it; the current CA's
        // certificate is renewed whatever the API server said.
        if let Some(new) = next_ca.filter(|_| bundles.is_ok()) {
            if let Some(path) = &self.ca_file {
                levee_proto::fs::write_atomically(path, new.pem.as_bytes())?;
            }
            self.ca = new;
            self.issued = None;
        }
        if self
            .issued
            .is_none_or(|issued| due(issued, SERVING_LIFETIME, now))
        {
            let issued = self.ca.issue(&self.names, now)?;
            self.serving.replace(certs::certified_key(
                issued.cert_pem.as_bytes(),
                issued.key_pem.as_bytes(),
            )?);
            self.issued = Some(issued.issued);
            tracing::info!("webhook serving certificate renewed");
        }
        Ok(bundles?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_der(serving: &ServingCert) -> Vec<u8> {
        serving.current().cert[0].to_vec()
    }

    #[tokio::test]
    async fn the_serving_certificate_and_then_the_ca_are_renewed_before_they_expire() {
        let start = SystemTime::now();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        let ca = Authority::new(start).unwrap();
        let names = vec!["127.0.0.1".to_owned()];
        let issued = ca.issue(&names, start).unwrap();
        let serving = ServingCert::new(
            certs::certified_key(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap(),
        );
        let first_ca = ca.pem.clone();
        let mut upkeep = Upkeep {
            names,
            ca_file: Some(ca_file.clone()),
            client: None,
            serving: serving.clone(),
            ca,
            issued: Some(start),
        };
        let day = Duration::from_secs(24 * 3600);
        let first = leaf_der(&serving);
        upkeep.round(start + day * 19).await.unwrap();
        assert_eq!(leaf_der(&serving), first, "not due yet");
        upkeep.round(start + day * 21).await.unwrap();
        let second = leaf_der(&serving);
        assert_ne!(second, first, "renewed at two thirds of 30 days");
        assert_eq!(upkeep.ca.pem, first_ca, "same CA");
        assert!(
            !ca_file.exists(),
            "the CA file is written when the CA changes"
        );
        upkeep.round(start + day * 250).await.unwrap();
        assert_ne!(
            upkeep.ca.pem, first_ca,
            "a new CA at two thirds of 365 days"
        );
        assert_ne!(leaf_der(&serving), second, "and a certificate from it");
        assert_eq!(std::fs::read_to_string(&ca_file).unwrap(), upkeep.ca.pem);
    }
}
