//! A test OpenTelemetry collector: a tonic server implementing OTLP's
//! `opentelemetry.proto.collector.trace.v1.TraceService/Export` (stubs from
//! the `opentelemetry-proto` crate) that records every span it receives, for
//! tests to assert on. It can be told to stall, like an overloaded collector.

use std::{
    collections::BTreeMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::span::SpanKind,
};
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::server::TcpIncoming;

use crate::harness::eventually;

/// One received span, ids as lowercase hex.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: SpanKind,
    /// Attribute values rendered as text (`200`, `true`, `GET`).
    pub attributes: BTreeMap<String, String>,
    /// Event names, oldest first, with their attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
    /// `service.name` of the exporting resource.
    pub service_name: String,
    /// The status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
}

impl RecordedSpan {
    /// An attribute's value, or `""` when absent.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }

    /// Whether an event of that name was recorded.
    pub fn has_event(&self, name: &str) -> bool {
        self.events.iter().any(|(n, _)| n == name)
    }
}

#[derive(Default)]
struct State {
    spans: Mutex<Vec<RecordedSpan>>,
    exports: Mutex<u64>,
}

/// A running OTLP trace receiver on `127.0.0.1:<port 0>`.
pub struct OtlpReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    /// `true`: exports are held unanswered.
    stalled: watch::Sender<bool>,
    /// Dropping it stops the server.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl OtlpReceiver {
    /// Starts the receiver on a loopback port.
    pub async fn start() -> io::Result<OtlpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let (stalled, stall_rx) = watch::channel(false);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = Receiver {
            state: state.clone(),
            stalled: stall_rx,
        };
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "OTLP receiver stopped");
            }
        });
        Ok(OtlpReceiver {
            addr,
            state,
            stalled,
            _stop: stop,
        })
    }

    /// The OTLP gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds (`true`) or answers (`false`) export calls from now on.
    pub fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<RecordedSpan> {
        self.state
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Export calls received (answered or not).
    pub fn exports(&self) -> u64 {
        *self
            .state
            .exports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<RecordedSpan> {
        let mut spans = self.spans();
        spans.retain(|s| s.trace_id == trace_id);
        spans
    }

    /// Polls until the spans of `trace_id` satisfy `done`, then returns
    /// them; panics after `timeout` with the spans seen.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        done: impl Fn(&[RecordedSpan]) -> bool,
    ) -> Vec<RecordedSpan> {
        let what = format!("the spans of trace {trace_id}");
        eventually(timeout, &what, || {
            let spans = self.trace(trace_id);
            let ready = done(&spans);
            async move {
                if ready {
                    Ok(spans)
                } else {
                    Err(format!("{spans:#?}"))
                }
            }
        })
        .await
    }
}

struct Receiver {
    state: Arc<State>,
    stalled: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        *self
            .state
            .exports
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
        let mut stalled = self.stalled.clone();
        // A stalled collector never answers; the client's timeout ends the call.
        let _ = stalled.wait_for(|s| !*s).await;
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service_name = resource_spans
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .map(|kv| render(kv.value.as_ref()))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(RecordedSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                        attributes: attributes(&span.attributes),
                        events: span
                            .events
                            .into_iter()
                            .map(|e| (e.name, attributes(&e.attributes)))
                            .collect(),
                        service_name: service_name.clone(),
                        status_code: span.status.map_or(0, |s| s.code),
                    });
                }
            }
        }
        self.state
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), render(kv.value.as_ref())))
        .collect()
}

fn render(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Parses a `traceparent` header into (trace id, parent span id, sampled).
pub fn parse_traceparent(value: &str) -> Option<(String, String, bool)> {
    let mut parts = value.split('-');
    let (_version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace.to_owned(), span.to_owned(), flags & 1 == 1))
}

/// A loopback port that refuses connections: bound (so no other socket, a
/// proxy's listener included, can take it) but not listening. For a dead
/// collector or a dead upstream endpoint; released on drop.
pub struct ClosedPort {
    socket: socket2::Socket,
    addr: SocketAddr,
}

impl ClosedPort {
    pub fn new() -> io::Result<ClosedPort> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))?;
        Ok(ClosedPort { socket, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl std::fmt::Debug for ClosedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClosedPort")
            .field("addr", &self.addr)
            .field("fd", &std::os::fd::AsRawFd::as_raw_fd(&self.socket))
            .finish()
    }
}
