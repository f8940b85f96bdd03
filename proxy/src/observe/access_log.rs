//! `--access-log json`: one JSON line per request on stdout (fields in
//! docs/access-log.md).
//!
//! [`AccessEntry`] is taken when a request arrives; it reads the call's
//! attempts and the last endpoint from the request's [`CallAttempts`]
//! extension (written where the endpoint is chosen); the line is written
//! when the response's code is known.
//!
//! Requests never wait on stdout: lines go through a bounded queue to one
//! writer task, and when the queue is full (stdout stalled) lines are dropped
//! and counted in a warning rather than slowing traffic down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Request};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::errors::ErrorKind;
use crate::resilience::call::CallAttempts;

/// Lines buffered between requests and the writer.
const QUEUE: usize = 4096;

/// Where access-log lines go. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer task on stdout.
    pub fn stdout() -> AccessLog {
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let seen_dropped = dropped.clone();
        tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
            while let Some(line) = rx.recv().await {
                let mut ok = out.write_all(line.as_bytes()).await.is_ok();
                // Write what is queued, then flush once.
                while let Ok(line) = rx.try_recv() {
                    ok &= out.write_all(line.as_bytes()).await.is_ok();
                }
                ok &= out.flush().await.is_ok();
                let lost = seen_dropped.swap(0, Ordering::Relaxed);
                if !ok || lost > 0 {
                    tracing::warn!(lost, write_failed = !ok, "access log lines lost");
                }
            }
        });
        AccessLog { tx, dropped }
    }

    /// A log whose lines land in the returned receiver (tests).
    pub fn channel() -> (AccessLog, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            AccessLog {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// What a request looked like on arrival, to be completed by [`AccessEntry::write`].
    pub fn entry<B>(
        &self,
        direction: &'static str,
        service: &str,
        route: &str,
        req: &Request<B>,
    ) -> Box<AccessEntry> {
        Box::new(AccessEntry {
            log: self.clone(),
            time: SystemTime::now(),
            direction,
            service: service.to_owned(),
            route: route.to_owned(),
            method: req.method().to_string(),
            authority: crate::forward::uri::request_authority(req)
                .unwrap_or_default()
                .to_owned(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().to_string(), |pq| pq.to_string()),
            protocol: format!("{:?}", req.version()),
            trace_id: trace_id(req.headers()),
            client_id: req
                .extensions()
                .get::<crate::tls::ClientIdentity>()
                .map(|c| c.0.to_string()),
            server_id: None,
            attempts: CallAttempts::default(),
        })
    }
}

/// One request's line, filled in when its result is known.
#[derive(Debug)]
pub struct AccessEntry {
    log: AccessLog,
    time: SystemTime,
    direction: &'static str,
    service: String,
    route: String,
    method: String,
    authority: String,
    path: String,
    protocol: String,
    /// The W3C/B3 trace id the request carries (or that tracing gave it).
    trace_id: Option<String>,
    /// Inbound over mTLS: the caller's verified SPIFFE ID.
    client_id: Option<String>,
    /// Outbound over mTLS: the answering server's verified SPIFFE ID.
    server_id: Option<String>,
    attempts: CallAttempts,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    direction: &'a str,
    service: &'a str,
    route: &'a str,
    method: &'a str,
    authority: &'a str,
    path: &'a str,
    protocol: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_id: Option<&'a str>,
    status: u16,
    code: &'a str,
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'a str>,
    duration_ms: f64,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
}

impl AccessEntry {
    /// Re-reads the trace id from `headers`, after tracing may have started
    /// a trace for a request that came without one.
    pub fn trace_from(&mut self, headers: &HeaderMap) {
        self.trace_id = trace_id(headers);
    }

    /// Notes who answered: the response's [`crate::tls::ServerIdentity`],
    /// when it came over mTLS.
    pub fn answered_by<B>(&mut self, response: &http::Response<B>) {
        if let Some(crate::tls::ServerIdentity(id)) = response.extensions().get() {
            self.server_id = Some(id.to_string());
        }
    }

    /// Makes the request's attempts count towards this line: the line reads
    /// `req`'s [`CallAttempts`] (inserted if it has none), which every copy a
    /// retry makes of `req` shares.
    pub fn track<B>(&mut self, req: &mut Request<B>) {
        self.attempts = CallAttempts::of(req);
    }

    /// Counts an attempt sent to `endpoint` (for paths without the extension).
    pub fn attempt(&self, endpoint: SocketAddr) {
        self.attempts.record(endpoint);
    }

    /// Queues the line: `status` is the HTTP status sent, `code` and
    /// `outcome` as in `levee_requests_total`, `error` what went wrong when
    /// the proxy answered itself (its `x-levee-error` value, and the typed
    /// cause of an upstream failure).
    pub fn write(
        self,
        status: u16,
        code: &str,
        outcome: &str,
        error: Option<ErrorKind>,
        elapsed: Duration,
    ) {
        let line = Line {
            time: rfc3339(self.time),
            direction: self.direction,
            service: &self.service,
            route: &self.route,
            method: &self.method,
            authority: &self.authority,
            path: &self.path,
            protocol: &self.protocol,
            trace_id: self.trace_id.as_deref(),
            client_id: self.client_id.as_deref(),
            server_id: self.server_id.as_deref(),
            status,
            code,
            outcome,
            error: error.map(|kind| kind.as_str()),
            cause: error.and_then(|kind| kind.cause()),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            attempts: self.attempts.count(),
            endpoint: self.attempts.last().map(|a| a.to_string()),
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        if self.log.tx.try_send(text).is_err() {
            self.log.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn trace_id(headers: &HeaderMap) -> Option<String> {
    crate::trace::propagation::extract(headers).map(|cx| format!("{:032x}", cx.trace_id()))
}

/// `2026-11-26T12:53:48.252Z` (UTC, milliseconds).
fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_697_628_252);
        assert_eq!(rfc3339(t), "2026-11-26T12:53:48.252Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[tokio::test]
    async fn a_line_per_request() {
        let (log, mut rx) = AccessLog::channel();
        let req = Request::post("http://pay.shop:8080/charge?x=1")
            .body(())
            .expect("request");
        log.entry("outbound", "pay.shop:8080", "default", &req)
            .write(
                503,
                "503",
                "no-endpoints",
                Some(ErrorKind::NoEndpoints),
                Duration::from_millis(2),
            );
        let line = rx.recv().await.expect("a line");
        assert!(line.ends_with('\n'));
        let json: serde_json::Value = serde_json::from_str(&line).expect("json line");
        assert_eq!(json["method"], "POST");
        assert_eq!(json["authority"], "pay.shop:8080");
        assert_eq!(json["path"], "/charge?x=1");
        assert_eq!(json["code"], "503");
        assert_eq!(json["outcome"], "no-endpoints");
        assert_eq!(json["status"], 503);
        assert_eq!(json["error"], "no-endpoints");
        assert!(json.get("cause").is_none(), "not an upstream failure");
        assert_eq!(json["duration_ms"], 2.0);
        assert_eq!(json["attempts"], 0);
        assert!(json.get("endpoint").is_none(), "no attempt: no endpoint");
        assert!(json.get("trace_id").is_none(), "no trace context: no field");

        let mut traced = Request::get("/")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            )
            .body(())
            .expect("request");
        let mut entry = log.entry("inbound", "pay", "default", &traced);
        entry.track(&mut traced);
        // Two attempts through copies of the request, as a retry makes them.
        let mut copy = Request::get("/").body(()).expect("request");
        *copy.extensions_mut() = traced.extensions().clone();
        CallAttempts::record_in(&traced, "10.0.0.1:80".parse().expect("addr"));
        CallAttempts::record_in(&copy, "10.0.0.2:80".parse().expect("addr"));
        entry.write(200, "0", "success", None, Duration::from_millis(1));
        let json: serde_json::Value =
            serde_json::from_str(&rx.recv().await.expect("a line")).expect("json line");
        assert_eq!(json["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(json["status"], 200);
        assert_eq!(json["code"], "0");
        assert!(json.get("error").is_none(), "the upstream answered");
        assert_eq!(json["attempts"], 2);
        assert_eq!(json["endpoint"], "10.0.0.2:80", "the last attempt's");

        let refused = ErrorKind::UpstreamReset(crate::errors::ResetCause::RefusedStream);
        log.entry("outbound", "pay", "default", &req).write(
            502,
            "502",
            "upstream-reset",
            Some(refused),
            Duration::ZERO,
        );
        let json: serde_json::Value =
            serde_json::from_str(&rx.recv().await.expect("a line")).expect("json line");
        assert_eq!(json["error"], "upstream-reset");
        assert_eq!(json["cause"], "refused-stream");
        assert!(json.get("server_id").is_none(), "no answer: no server");
    }

    #[tokio::test]
    async fn an_answer_over_mtls_names_the_server() {
        let (log, mut rx) = AccessLog::channel();
        let req = Request::get("http://pay.shop:8080/")
            .body(())
            .expect("request");
        let id = levee_proto::policy::SpiffeId::parse("spiffe://td/ns/shop/sa/pay").expect("id");
        let mut response = http::Response::new(());
        response
            .extensions_mut()
            .insert(crate::tls::ServerIdentity(id));
        let mut entry = log.entry("outbound", "pay.shop:8080", "default", &req);
        entry.answered_by(&response);
        entry.write(200, "200", "success", None, Duration::ZERO);
        let mut plain = log.entry("outbound", "pay.shop:8080", "default", &req);
        plain.answered_by(&http::Response::new(()));
        plain.write(200, "200", "success", None, Duration::ZERO);
        let json: serde_json::Value =
            serde_json::from_str(&rx.recv().await.expect("a line")).expect("json line");
        assert_eq!(json["server_id"], "spiffe://td/ns/shop/sa/pay");
        assert!(json.get("client_id").is_none());
        let json: serde_json::Value =
            serde_json::from_str(&rx.recv().await.expect("a line")).expect("json line");
        assert!(json.get("server_id").is_none(), "plaintext: {json}");
    }
}
