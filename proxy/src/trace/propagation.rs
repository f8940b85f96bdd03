//! Trace context in HTTP headers: W3C `traceparent` / `tracestate` (read and
//! written) and B3, single `b3` header or multi `X-B3-*` headers (read only).
//!
//! Extraction prefers `traceparent`; B3 is a fallback for apps instrumented
//! with Zipkin-era libraries. Malformed headers count as absent: the proxy
//! then starts a new trace, and the headers themselves pass through untouched.

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
const B3: &str = "b3";
const B3_TRACE_ID: &str = "x-b3-traceid";
const B3_SPAN_ID: &str = "x-b3-spanid";
const B3_SAMPLED: &str = "x-b3-sampled";
const B3_FLAGS: &str = "x-b3-flags";

/// The remote parent found in a request's headers, if any.
pub fn extract(headers: &HeaderMap) -> Option<SpanContext> {
    if let Some(value) = header(headers, TRACEPARENT) {
        // A present but invalid traceparent is not rescued by B3: W3C says
        // restart the trace.
        return parse_traceparent(value, header(headers, TRACESTATE));
    }
    if let Some(value) = header(headers, B3) {
        return parse_b3_single(value);
    }
    parse_b3_multi(headers)
}

/// Writes `cx` as `traceparent`. `tracestate` is written only when `cx`
/// carries entries (otherwise the app's header, if any, stays as it was).
pub fn inject(headers: &mut HeaderMap, cx: &SpanContext) {
    let value = format!(
        "00-{:032x}-{:016x}-{:02x}",
        cx.trace_id(),
        cx.span_id(),
        cx.trace_flags().to_u8()
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(TRACEPARENT, value);
    }
    let state = cx.trace_state().header();
    if !state.is_empty()
        && let Ok(value) = HeaderValue::from_str(&state)
    {
        headers.insert(TRACESTATE, value);
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `version-traceid-spanid-flags`; versions above 00 may append fields.
fn parse_traceparent(value: &str, state: Option<&str>) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace_id, span_id, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || !is_hex(version) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace_id.len() != 32 || span_id.len() != 16 || flags.len() != 2 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = state
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    remote(trace_id, span_id, flags & 0x01 == 0x01, state)
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]`; a lone sampling
/// decision (`b3: 0`) carries no parent.
fn parse_b3_single(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let sampled = match parts.next() {
        None => true,
        Some(s) => b3_sampled(s)?,
    };
    remote(trace_id, span_id, sampled, TraceState::default())
}

fn parse_b3_multi(headers: &HeaderMap) -> Option<SpanContext> {
    let trace_id = header(headers, B3_TRACE_ID)?;
    let span_id = header(headers, B3_SPAN_ID)?;
    let debug = header(headers, B3_FLAGS) == Some("1");
    let sampled = match header(headers, B3_SAMPLED) {
        None => true,
        Some(s) => debug || b3_sampled(s)?,
    };
    remote(trace_id, span_id, sampled, TraceState::default())
}

/// B3 sampling states: `1`/`true`, `d` (debug, implies sampled), `0`/`false`.
fn b3_sampled(value: &str) -> Option<bool> {
    match value.trim() {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A valid remote span context, or `None` (all-zero ids are invalid). B3
/// allows 64-bit trace ids: they are left-padded with zeros.
fn remote(trace_id: &str, span_id: &str, sampled: bool, state: TraceState) -> Option<SpanContext> {
    let trace_ok = (trace_id.len() == 32 || trace_id.len() == 16) && is_hex(trace_id);
    if !trace_ok || span_id.len() != 16 || !is_hex(span_id) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let cx = SpanContext::new(trace_id, span_id, flags, true, state);
    cx.is_valid().then_some(cx)
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn traceparent_round_trips_with_tracestate() {
        let h = headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=abc,other=1"),
        ]);
        let cx = extract(&h).expect("valid traceparent");
        assert_eq!(format!("{:032x}", cx.trace_id()), TRACE);
        assert_eq!(format!("{:016x}", cx.span_id()), SPAN);
        assert!(cx.is_sampled() && cx.is_remote());
        let mut out = HeaderMap::new();
        inject(&mut out, &cx);
        assert_eq!(out[TRACEPARENT], h[TRACEPARENT]);
        assert_eq!(out[TRACESTATE], "vendor=abc,other=1");
    }

    #[test]
    fn unsampled_flag_is_kept() {
        let h = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]);
        assert!(!extract(&h).expect("valid").is_sampled());
    }

    #[test]
    fn malformed_traceparent_is_absent_even_with_b3() {
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let mut h = headers(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")]);
            h.insert(TRACEPARENT, HeaderValue::from_static(bad));
            assert!(extract(&h).is_none(), "{bad}");
        }
        let future = headers(&[(
            "traceparent",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
        )]);
        assert!(extract(&future).is_some(), "a later version may add fields");
    }

    #[test]
    fn b3_single_header() {
        let cx = extract(&headers(&[(
            "b3",
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0-05e3ac9a4f6e3b90",
        )]))
        .expect("valid b3");
        assert_eq!(format!("{:032x}", cx.trace_id()), TRACE);
        assert!(!cx.is_sampled());
        let short =
            extract(&headers(&[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7")])).expect("64-bit id");
        assert_eq!(
            format!("{:032x}", short.trace_id()),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert!(short.is_sampled(), "no decision: sampled by default");
        assert!(
            extract(&headers(&[("b3", "0")])).is_none(),
            "a decision alone has no parent"
        );
    }

    #[test]
    fn b3_multi_headers() {
        let cx = extract(&headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "1"),
        ]))
        .expect("valid multi b3");
        assert_eq!(format!("{:016x}", cx.span_id()), SPAN);
        assert!(cx.is_sampled());
        let debug = extract(&headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]))
        .expect("valid");
        assert!(debug.is_sampled(), "debug implies sampled");
        assert!(extract(&headers(&[("x-b3-traceid", TRACE)])).is_none());
    }

    #[test]
    fn nothing_to_extract() {
        assert!(extract(&HeaderMap::new()).is_none());
    }
}
