//! An upstream's `Retry-After` on a 429/503 → the wait the retry layer
//! takes from it (capped), and the deadline arithmetic it feeds.
#![no_main]

use http::{HeaderValue, Response};
use levee_proxy::deadline::deadline_after;
use levee_proxy::resilience::retry::policy::{RETRY_AFTER_CAP, retry_after};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&status, value)) = data.split_first() else {
        return;
    };
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let status = [200u16, 429, 503, 500][usize::from(status) % 4];
    let mut response = Response::new(());
    *response.status_mut() = http::StatusCode::from_u16(status).expect("a status");
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, value);
    let Some(after) = retry_after(&response) else {
        return;
    };
    assert!(
        matches!(status, 429 | 503),
        "Retry-After read on a {status}"
    );
    assert!(after <= RETRY_AFTER_CAP);
    let now = tokio::time::Instant::now();
    assert!(deadline_after(now, after) >= now);
});
