//! Request targets and `Host` → the authority the outbound side routes on
//! (`request_authority`, `ServiceKey::from_authority`) and the target form
//! rewritten for an HTTP/1 or HTTP/2 upstream.
#![no_main]

use http::{HeaderValue, Request, Uri};
use levee_proto::policy::{Authority, ServiceKey};
use levee_proxy::forward::pool::Protocol;
use levee_proxy::forward::uri::{request_authority, rewrite_for_upstream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `<request target>\n<Host value>` (either may be missing).
    let (target, host) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    if let Ok(text) = std::str::from_utf8(target) {
        authority_round_trip(text);
    }
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut req = Request::new(());
    *req.uri_mut() = uri;
    if let Some(host) = host.and_then(|h| HeaderValue::from_bytes(h).ok()) {
        req.headers_mut().insert(http::header::HOST, host);
    }
    let Some(authority) = request_authority(&req).map(str::to_owned) else {
        return;
    };
    authority_round_trip(&authority);
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let mut copy = Request::new(());
        *copy.uri_mut() = req.uri().clone();
        *copy.headers_mut() = req.headers().clone();
        if rewrite_for_upstream(&mut copy, protocol).is_ok() {
            assert_eq!(
                request_authority(&copy),
                Some(authority.as_str()),
                "{protocol:?} rewrite changed where the request goes"
            );
        }
    }
});

/// A parsed authority's key prints as an authority that parses to the same key.
fn authority_round_trip(text: &str) {
    let Ok(parsed) = Authority::parse(text, "default", 80) else {
        return;
    };
    let printed = parsed.key.to_string();
    match ServiceKey::from_authority(&printed, "default", 80) {
        Ok(again) => assert_eq!(again, parsed.key, "{text:?} -> {printed:?}"),
        Err(e) => panic!("{text:?} parsed, but its key {printed:?} does not: {e}"),
    }
}
