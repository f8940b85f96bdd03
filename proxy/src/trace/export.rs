//! [`BoundedBatchProcessor`]: hands finished spans to an exporter in batches
//! without ever making a request wait.
//!
//! Ending a span only tries to push it onto a bounded queue; when the queue
//! is full (the collector is slow or gone) the span is dropped and counted in
//! `levee_trace_spans_dropped_total`. One background task drains the queue in
//! batches; a batch whose export fails or times out is dropped and counted
//! too. The SDK's own batch processor drops silently, hence this one.

use std::fmt;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Spans sent per export call at most.
const MAX_BATCH: usize = 512;
/// How long a partial batch waits for more spans before it is sent.
const SCHEDULE_DELAY: Duration = Duration::from_millis(500);

/// Batches spans to an exporter through a bounded queue; never blocks.
pub struct BoundedBatchProcessor {
    queue: mpsc::Sender<SpanData>,
    dropped: Counter,
}

/// The background export task of a [`BoundedBatchProcessor`].
#[derive(Debug)]
pub struct ExportTask {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl ExportTask {
    /// Stops the task after it has sent what is queued, waiting at most
    /// `within`. Spans ended afterwards are dropped.
    pub async fn drain(self, within: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(within, self.task).await.is_err() {
            tracing::warn!(?within, "trace export did not finish in time; spans lost");
        }
    }
}

impl fmt::Debug for BoundedBatchProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedBatchProcessor")
            .field("capacity", &self.queue.max_capacity())
            .field("dropped", &self.dropped.get())
            .finish_non_exhaustive()
    }
}

impl BoundedBatchProcessor {
    /// Starts the export task on the current tokio runtime. `capacity` is the
    /// queue bound (at least 1); each export gets `timeout`.
    pub fn spawn<E>(
        exporter: E,
        capacity: usize,
        timeout: Duration,
        dropped: Counter,
    ) -> (Self, ExportTask)
    where
        E: SpanExporter + 'static,
    {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let stop = CancellationToken::new();
        let exporting = Exporting {
            exporter,
            timeout,
            dropped: dropped.clone(),
            failing: false,
        };
        let task = tokio::spawn(exporting.run(rx, stop.clone()));
        (
            BoundedBatchProcessor { queue, dropped },
            ExportTask { task, stop },
        )
    }
}

impl SpanProcessor for BoundedBatchProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    /// Export happens in the background; there is nothing to wait for here.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Non-blocking (it may run on a runtime thread): use
    /// [`ExportTask::drain`] to flush on shutdown.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export task's state.
struct Exporting<E> {
    exporter: E,
    timeout: Duration,
    dropped: Counter,
    /// Whether the last export failed: the failure is logged once per outage.
    failing: bool,
}

impl<E: SpanExporter> Exporting<E> {
    async fn run(mut self, mut rx: mpsc::Receiver<SpanData>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = tokio::select! {
                span = rx.recv() => span,
                () = stop.cancelled() => None,
            };
            let Some(first) = first else { break };
            batch.push(first);
            let flush_at = tokio::time::Instant::now() + SCHEDULE_DELAY;
            while batch.len() < MAX_BATCH {
                tokio::select! {
                    span = rx.recv() => match span {
                        Some(span) => batch.push(span),
                        None => break,
                    },
                    () = tokio::time::sleep_until(flush_at) => break,
                    () = stop.cancelled() => break,
                }
            }
            self.export(std::mem::take(&mut batch)).await;
        }
        // Stopping: send what is still queued, then let the exporter go.
        rx.close();
        while let Ok(span) = rx.try_recv() {
            batch.push(span);
            if batch.len() == MAX_BATCH {
                self.export(std::mem::take(&mut batch)).await;
            }
        }
        if !batch.is_empty() {
            self.export(batch).await;
        }
        let _ = self.exporter.shutdown_with_timeout(self.timeout);
    }

    async fn export(&mut self, batch: Vec<SpanData>) {
        let count = batch.len() as u64;
        let error = match tokio::time::timeout(self.timeout, self.exporter.export(batch)).await {
            Ok(Ok(())) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("trace export recovered");
                }
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("timed out after {:?}", self.timeout),
        };
        self.dropped.inc_by(count);
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(%error, spans = count, "trace export failed; dropping spans until it recovers");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use opentelemetry::trace::{Span as _, Tracer, TracerProvider};
    use opentelemetry_sdk::error::OTelSdkError;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// Counts exported spans; fails or hangs when told to.
    #[derive(Debug, Clone, Default)]
    struct Recorder {
        exported: Arc<AtomicUsize>,
        fail: bool,
        hang: bool,
    }

    impl SpanExporter for Recorder {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.fail {
                return Err(OTelSdkError::InternalFailure("collector down".into()));
            }
            self.exported.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        }
    }

    fn provider(
        recorder: Recorder,
        capacity: usize,
        timeout: Duration,
        dropped: &Counter,
    ) -> (SdkTracerProvider, ExportTask) {
        let (processor, task) =
            BoundedBatchProcessor::spawn(recorder, capacity, timeout, dropped.clone());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        (provider, task)
    }

    fn end_spans(provider: &SdkTracerProvider, n: usize) {
        let tracer = provider.tracer("test");
        for _ in 0..n {
            tracer.start("span").end();
        }
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn spans_are_exported_in_batches_and_drained_on_stop() {
        let recorder = Recorder::default();
        let dropped = Counter::default();
        let (provider, _task) = provider(recorder.clone(), 64, Duration::from_secs(1), &dropped);
        end_spans(&provider, 10);
        eventually("10 spans exported", || {
            recorder.exported.load(Ordering::SeqCst) == 10
        })
        .await;
        assert_eq!(dropped.get(), 0);
    }

    #[tokio::test]
    async fn drain_sends_what_is_queued() {
        let recorder = Recorder::default();
        let dropped = Counter::default();
        let (provider, task) = provider(recorder.clone(), 64, Duration::from_secs(1), &dropped);
        // Not yet picked up by the task (it has not run): drain must send them.
        end_spans(&provider, 5);
        task.drain(Duration::from_secs(5)).await;
        assert_eq!(recorder.exported.load(Ordering::SeqCst), 5);
        end_spans(&provider, 1);
        assert_eq!(dropped.get(), 1, "after the drain, spans are dropped");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_blocking() {
        let recorder = Recorder::default();
        let dropped = Counter::default();
        let (provider, _task) = provider(recorder.clone(), 4, Duration::from_secs(1), &dropped);
        // On this single-threaded runtime the export task cannot run until
        // the test yields: the queue's 4 slots fill and the rest is dropped,
        // and ending a span never waits.
        end_spans(&provider, 100);
        assert_eq!(dropped.get(), 96);
        eventually("the 4 queued spans exported", || {
            recorder.exported.load(Ordering::SeqCst) == 4
        })
        .await;
    }

    #[tokio::test]
    async fn a_hung_export_times_out_and_counts() {
        let recorder = Recorder {
            hang: true,
            ..Recorder::default()
        };
        let dropped = Counter::default();
        let (provider, _task) = provider(recorder, 64, Duration::from_millis(50), &dropped);
        end_spans(&provider, 3);
        eventually("3 spans dropped after the export timeout", || {
            dropped.get() == 3
        })
        .await;
    }

    #[tokio::test]
    async fn failed_exports_count_as_dropped() {
        let recorder = Recorder {
            fail: true,
            ..Recorder::default()
        };
        let dropped = Counter::default();
        let (provider, _task) = provider(recorder, 64, Duration::from_secs(1), &dropped);
        end_spans(&provider, 7);
        eventually("7 spans dropped", || dropped.get() == 7).await;
    }
}
