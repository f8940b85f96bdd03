//! The hop header, `x-levee-hops`: how many Levee proxies (listeners) a
//! request has passed. Each listener reads it, refuses the request if the
//! count is above its bound, and forwards the request with the count plus
//! one.
//!
//! The header comes from whoever sent the request, so it is read strictly:
//! exactly one value of at most [`MAX_DIGITS`] ASCII digits. A value that
//! is anything else (several headers, garbage, a number too big for `u32`)
//! cannot have come from a Levee proxy and says nothing trustworthy about
//! the path behind it: it counts as over the bound, so the request is
//! refused rather than let through with a counter restarted at zero. A
//! missing header is zero hops.

use http::HeaderMap;
use http::header::{Entry, HeaderName, HeaderValue};

/// The request header counting the Levee proxies a request has passed.
pub const X_LEVEE_HOPS: HeaderName = HeaderName::from_static("x-levee-hops");

/// `--max-hops` by default: far beyond any real sidecar chain (two hops per
/// service call: the caller's outbound and the callee's inbound), far below
/// what a loop costs before it is cut.
pub const DEFAULT_MAX_HOPS: u32 = 16;

/// Longest value read as a count; `u32::MAX` has 10 digits.
const MAX_DIGITS: usize = 10;

/// Hop counts written from a static table (no allocation): every count a
/// request can carry under the default `--max-hops`, and then some.
const COUNTS: [&str; 33] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32",
];

/// Checks the request's hop count against `max` and, when it passes,
/// sets it to one more. `Err` says why the request is refused.
/// One hashed lookup of the header, whether it is there or not.
pub fn pass(headers: &mut HeaderMap, max: u32) -> Result<(), String> {
    let entry = headers.entry(X_LEVEE_HOPS);
    let hops = match &entry {
        Entry::Vacant(_) => 0,
        Entry::Occupied(found) => read(found.iter())?,
    };
    if hops > max {
        return Err(format!(
            "the request has passed {hops} proxies (x-levee-hops), more than {max}: a forwarding loop"
        ));
    }
    let next = hops.saturating_add(1);
    let value = match COUNTS.get(next as usize) {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(next),
    };
    match entry {
        Entry::Vacant(vacant) => drop(vacant.insert(value)),
        // Replaces every value (there is exactly one).
        Entry::Occupied(mut found) => drop(found.insert(value)),
    }
    Ok(())
}

/// The hop count in the header's `values` (at least one).
fn read<'a>(mut values: impl Iterator<Item = &'a HeaderValue>) -> Result<u32, String> {
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err("several x-levee-hops headers: the hop count cannot be trusted".to_owned());
    };
    let bytes = value.as_bytes();
    let digits =
        !bytes.is_empty() && bytes.len() <= MAX_DIGITS && bytes.iter().all(u8::is_ascii_digit);
    digits
        .then(|| std::str::from_utf8(bytes).ok()?.parse::<u32>().ok())
        .flatten()
        .ok_or_else(|| {
            format!(
                "x-levee-hops {:?} is not a hop count: it cannot be trusted",
                String::from_utf8_lossy(&bytes[..bytes.len().min(32)])
            )
        })
}
