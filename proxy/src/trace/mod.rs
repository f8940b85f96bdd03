//! OpenTelemetry tracing of the data path (DESIGN.md §5): setup, propagation,
//! spans and export. Distinct from `observe`, which records metrics and the access log.
//!
//! - `mod.rs`: [`Tracing`], built from the flags (`OTEL_*` variables); `None`
//!   when no collector endpoint is set, and then the data path skips tracing.
//! - `propagation`: W3C `traceparent`/`tracestate` in and out, B3 in.
//! - `span`: the span model — logical call (CLIENT), attempts, SERVER — and
//!   [`event`], the hook resilience layers call with a request's extensions.
//! - `attributes`: semantic-convention attributes and how spans end.
//! - `export`: the bounded, never-blocking batch processor; drops are counted
//!   in `levee_trace_spans_dropped_total`.
//!
//! The catalog of spans and attributes is `docs/tracing.md`.

mod attributes;
mod export;
pub mod propagation;
mod span;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::Request;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Key, KeyValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter};

pub use export::{BoundedBatchProcessor, ExportTask};
pub use span::{AttemptSpan, CallSpan, OutboundSpan, ServerSpan, SpanEvent, event};

use crate::body::BoxError;
use crate::config::{ProxyConfig, TraceSampler};
use crate::state::Shared;

/// `service.name` when neither `OTEL_SERVICE_NAME` nor
/// `OTEL_RESOURCE_ATTRIBUTES` names one.
const DEFAULT_SERVICE_NAME: &str = "levee-proxy";

/// How finished spans are exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportSettings {
    /// Spans waiting for export at most; beyond, they are dropped and counted.
    pub queue_size: usize,
    /// One export call gives up after this long (its spans are dropped).
    pub timeout: Duration,
}

/// The tracer of a proxy with tracing on. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tracing {
    tracer: SdkTracer,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Kept to shut the SDK down (and for the tracer's lifetime).
    provider: SdkTracerProvider,
    /// Taken by [`Tracing::shutdown`].
    export: Mutex<Option<ExportTask>>,
    /// Where `levee.policy_version` comes from.
    policy: Arc<Shared>,
}

impl Tracing {
    /// Tracing as `config` asks: `None` without `--otlp-endpoint`
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`). Must run inside a tokio runtime (the
    /// export task starts here). Errors: an invalid endpoint or sampler argument.
    pub fn from_config(
        config: &ProxyConfig,
        shared: &Arc<Shared>,
    ) -> Result<Option<Tracing>, BoxError> {
        let Some(endpoint) = config.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) else {
            return Ok(None);
        };
        endpoint
            .parse::<http::Uri>()
            .ok()
            .filter(|uri| uri.scheme().is_some() && uri.host().is_some())
            .ok_or_else(|| {
                format!("--otlp-endpoint {endpoint:?} is not a URL like http://127.0.0.1:4317")
            })?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(config.trace_export_timeout)
            .build()
            .map_err(|e| format!("the OTLP exporter for {endpoint}: {e}"))?;
        let sampler = sampler(config.trace_sampler, config.trace_sampler_arg)?;
        let resource = resource(config);
        let export = ExportSettings {
            queue_size: config.trace_queue_size,
            timeout: config.trace_export_timeout,
        };
        let tracing = Tracing::with_exporter(exporter, resource, sampler, export, shared);
        tracing::info!(%endpoint, sampler = ?config.trace_sampler, "tracing on");
        Ok(Some(tracing))
    }

    /// Tracing exporting to `exporter` (tests use an in-memory one).
    /// `shared` gives the drop counter and `levee.policy_version`.
    pub fn with_exporter<E: SpanExporter + 'static>(
        mut exporter: E,
        resource: Resource,
        sampler: Sampler,
        export: ExportSettings,
        shared: &Arc<Shared>,
    ) -> Tracing {
        exporter.set_resource(&resource);
        let (processor, task) = BoundedBatchProcessor::spawn(
            exporter,
            export.queue_size,
            export.timeout,
            shared.metrics.trace_spans_dropped(),
        );
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        Tracing {
            tracer: provider.tracer("levee-proxy"),
            inner: Arc::new(Inner {
                provider,
                export: Mutex::new(Some(task)),
                policy: shared.clone(),
            }),
        }
    }

    /// Starts the logical span of an outbound call to `service` (see
    /// [`OutboundSpan`]); inert when `tracing` is `None`.
    pub fn outbound<B>(
        tracing: Option<&Tracing>,
        req: &mut Request<B>,
        service: &str,
    ) -> OutboundSpan {
        match tracing {
            Some(t) => OutboundSpan::start(&t.tracer, req, service, t.policy_version()),
            None => OutboundSpan::default(),
        }
    }

    /// Starts the SERVER span of an inbound call for the local `service`
    /// (see [`ServerSpan`]); inert when `tracing` is `None`.
    pub fn inbound<B>(
        tracing: Option<&Tracing>,
        req: &mut Request<B>,
        service: &str,
    ) -> ServerSpan {
        match tracing {
            Some(t) => ServerSpan::start(&t.tracer, req, service, t.policy_version()),
            None => ServerSpan::default(),
        }
    }

    fn policy_version(&self) -> u64 {
        // As `levee_policy_version` reports it: the control plane's revision
        // when there is one, else the local snapshot version.
        let snapshot = self.inner.policy.snapshot.load();
        snapshot.policy_revision.unwrap_or(snapshot.version)
    }

    /// Sends the spans still queued, waiting at most `within`; later spans
    /// are dropped.
    pub async fn shutdown(&self, within: Duration) {
        let export = self
            .inner
            .export
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(export) = export {
            export.drain(within).await;
        }
        let _ = self.inner.provider.shutdown_with_timeout(within);
    }
}

/// The sampler `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` name. The
/// ratio defaults to 1 (the OpenTelemetry default).
fn sampler(kind: TraceSampler, arg: Option<f64>) -> Result<Sampler, BoxError> {
    let ratio = arg.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("--trace-sampler-arg {ratio} is not a ratio in 0..=1").into());
    }
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    Ok(match kind {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentBasedAlwaysOn => parent_based(Sampler::AlwaysOn),
        TraceSampler::ParentBasedAlwaysOff => parent_based(Sampler::AlwaysOff),
        TraceSampler::ParentBasedTraceIdRatio => parent_based(Sampler::TraceIdRatioBased(ratio)),
    })
}

/// The SDK's resource (it reads `OTEL_RESOURCE_ATTRIBUTES` and
/// `OTEL_SERVICE_NAME`), with `--trace-service-name` over both and
/// `levee-proxy` when nothing named the service.
fn resource(config: &ProxyConfig) -> Resource {
    let detected = Resource::builder().build();
    let service_key = Key::from_static_str("service.name");
    let named = matches!(
        detected.get(&service_key),
        Some(Value::String(name)) if !name.as_str().starts_with("unknown_service")
    );
    let mut builder = Resource::builder();
    if let Some(name) = &config.trace_service_name {
        builder = builder.with_service_name(name.clone());
    } else if !named {
        builder = builder.with_service_name(DEFAULT_SERVICE_NAME);
    }
    if let Some(service) = &config.service {
        builder = builder.with_attribute(KeyValue::new("levee.service", service.clone()));
    }
    builder.build()
}

#[cfg(test)]
mod tests;
