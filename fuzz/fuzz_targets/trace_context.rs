//! `traceparent` / `tracestate` / `b3` / `X-B3-*` → extraction; a context
//! found must inject and extract back to itself.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use levee_proxy::trace::propagation::{extract, inject};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 7] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
];

fuzz_target!(|data: &[u8]| {
    // Lines `<digit><value>`: the digit picks the header name.
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some((&which, value)) = line.split_first() else {
            continue;
        };
        let name = HeaderName::from_static(NAMES[usize::from(which) % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let Some(cx) = extract(&headers) else {
        return;
    };
    assert!(cx.is_valid() && cx.is_remote());
    let mut out = HeaderMap::new();
    inject(&mut out, &cx);
    let back = extract(&out).expect("an injected context extracts again");
    assert_eq!(back.trace_id(), cx.trace_id());
    assert_eq!(back.span_id(), cx.span_id());
    assert_eq!(back.is_sampled(), cx.is_sampled());
});
