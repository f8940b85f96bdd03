//! `grpc-timeout` → parse (capped at a day) → encode → parse again; and the
//! deadline arithmetic it feeds.
#![no_main]

use std::time::Duration;

use http::HeaderValue;
use levee_proxy::deadline::deadline_after;
use levee_proxy::resilience::timeout::grpc::{GRPC_TIMEOUT_CAP, encode, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let Some(d) = parse(&value) else {
        return;
    };
    assert!(
        d <= GRPC_TIMEOUT_CAP,
        "{value:?} read as {d:?}, over the cap"
    );
    let back = parse(&encode(d)).expect("an encoded timeout parses");
    assert!(back >= d, "encoding {d:?} shortened it to {back:?}");
    assert!(
        back - d <= d / 1000 + Duration::from_micros(1),
        "{d:?} -> {back:?}"
    );
    let now = tokio::time::Instant::now();
    assert!(deadline_after(now, d) >= now);
});
