//! The `grpc-timeout` request header: how a gRPC deadline travels between
//! hops. Format: up to 8 ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`,
//! `n`), e.g. `250m` for 250 milliseconds. A caller's value is capped at a
//! day ([`GRPC_TIMEOUT_CAP`]): `99999999H` (over 11,000 years) reads as 24 h.

use std::time::Duration;

use http::HeaderValue;
use http::header::HeaderName;

/// The header name.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The largest value the 8-digit field can carry.
const MAX_DIGITS_VALUE: u64 = 99_999_999;

/// The longest deadline taken from a caller's `grpc-timeout`.
pub const GRPC_TIMEOUT_CAP: Duration = Duration::from_secs(86_400);

/// Parses a `grpc-timeout` value, capped at [`GRPC_TIMEOUT_CAP`]; `None`
/// when malformed (the header is then ignored).
pub fn parse(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(d.min(GRPC_TIMEOUT_CAP))
}

/// Encodes `remaining` in the finest unit that fits 8 digits, rounding up so
/// the upstream never sees a deadline of zero while time is left.
pub fn encode(remaining: Duration) -> HeaderValue {
    let nanos = remaining.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let n = nanos.div_ceil(per);
        if n <= u128::from(MAX_DIGITS_VALUE) {
            return HeaderValue::from_str(&format!("{n}{unit}"))
                .unwrap_or_else(|_| HeaderValue::from_static("99999999H"));
        }
    }
    HeaderValue::from_static("99999999H")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("header value")
    }

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        assert_eq!(parse(&hv("2H")), Some(Duration::from_secs(7200)));
        assert_eq!(parse(&hv("24H")), Some(GRPC_TIMEOUT_CAP));
        assert_eq!(parse(&hv("3M")), Some(Duration::from_secs(180)));
        assert_eq!(parse(&hv("1S")), Some(Duration::from_secs(1)));
        assert_eq!(parse(&hv("250m")), Some(Duration::from_millis(250)));
        assert_eq!(parse(&hv("7u")), Some(Duration::from_micros(7)));
        assert_eq!(
            parse(&hv("99999999n")),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "10", "10x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse(&hv(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn a_huge_timeout_is_capped_at_a_day() {
        for huge in ["99999999H", "99999999M", "99999999S", "25H"] {
            assert_eq!(parse(&hv(huge)), Some(GRPC_TIMEOUT_CAP), "{huge}");
        }
        assert_eq!(parse(&hv("86399S")), Some(Duration::from_secs(86_399)));
    }

    #[test]
    fn encodes_in_the_finest_unit_that_fits_and_round_trips() {
        assert_eq!(encode(Duration::from_millis(250)), "250000u");
        assert_eq!(encode(Duration::from_secs(1)), "1000000u");
        assert_eq!(encode(Duration::from_secs(100)), "100000m");
        assert_eq!(encode(Duration::from_secs(1_000_000)), "1000000S");
        assert_eq!(encode(Duration::ZERO), "0n");
        for d in [
            Duration::from_micros(1500),
            Duration::from_secs(5),
            Duration::from_secs(86_000),
        ] {
            let back = parse(&encode(d)).expect("round trip");
            assert!(
                back >= d && back - d < d / 1000 + Duration::from_micros(1),
                "{d:?} -> {back:?}"
            );
        }
    }
}
