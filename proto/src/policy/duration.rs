//! Policy durations: `250ms`, `2s`, `1m`, `1h`, `1.5s`, `0s` (and Go-style
//! sums such as `1m30s`), printed back in the shortest exact form.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written as text in policy documents.
///
/// Serialises as a string (`"250ms"`) in YAML and JSON alike, so `/config`
/// output reads like the policy that produced it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

const NANOS_PER: [(&str, u128); 6] = [
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

impl Duration {
    /// The zero duration (`0s`); for timeouts it means "off".
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// A duration of `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    /// The standard-library duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    /// Whether this is `0s`.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// Why a text is not a duration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationError(String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DurationError {}

fn not_a_duration(text: &str) -> DurationError {
    DurationError(format!("{text:?} is not a duration (e.g. 25ms)"))
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut rest = text.trim();
        if rest.starts_with('-') {
            return Err(DurationError(format!(
                "{text:?} is negative; durations are 0s or more"
            )));
        }
        if rest.is_empty() {
            return Err(not_a_duration(text));
        }
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| not_a_duration(text))?;
            let (number, tail) = rest.split_at(digits);
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let unit = if unit == "µs" { "us" } else { unit };
            let per = NANOS_PER
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, n)| *n)
                .ok_or_else(|| not_a_duration(text))?;
            total = total
                .checked_add(scaled(number, per).ok_or_else(|| not_a_duration(text))?)
                .ok_or_else(|| not_a_duration(text))?;
            rest = tail;
        }
        let secs = u64::try_from(total / 1_000_000_000)
            .map_err(|_| DurationError(format!("{text:?} is too long")))?;
        // The remainder is < 1e9, so it fits a u32.
        let nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
        Ok(Duration(std::time::Duration::new(secs, nanos)))
    }
}

/// `number` (digits, optionally with one `.` and a fraction) times `per` nanoseconds,
/// truncated to whole nanoseconds.
fn scaled(number: &str, per: u128) -> Option<u128> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole.checked_mul(per)?;
    let mut scale = per;
    for digit in frac.bytes().take(20) {
        scale /= 10;
        if scale == 0 {
            break;
        }
        value = value.checked_add(u128::from(digit - b'0') * scale)?;
    }
    Some(value)
}

impl fmt::Display for Duration {
    /// The shortest exact spelling: `90s` rather than `1m30s`, `1.5s` rather than `1500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        // Shortest wins; on a tie the larger unit.
        let mut best: Option<String> = None;
        for (unit, per) in NANOS_PER {
            let candidate = if nanos.is_multiple_of(per) {
                Some(format!("{}{unit}", nanos / per))
            } else if (1_000..=1_000_000_000).contains(&per) && nanos >= per {
                // Decimal forms only where the unit is a power of ten of nanoseconds.
                let digits = per.ilog10() as usize;
                let frac = format!("{:0digits$}", nanos % per);
                Some(format!(
                    "{}.{}{unit}",
                    nanos / per,
                    frac.trim_end_matches('0')
                ))
            } else {
                None
            };
            if let Some(c) = candidate
                && best.as_ref().is_none_or(|b| c.len() < b.len())
            {
                best = Some(c);
            }
        }
        f.write_str(best.as_deref().unwrap_or("0s"))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 25ms, 2s or 1m")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(not_a_duration(&v.to_string())))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(not_a_duration(&v.to_string())))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(not_a_duration(&v.to_string())))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// What [`Duration`]'s `FromStr` accepts, as a regular expression (RE2 and
/// Python `re` alike): one or more `<number><unit>` terms, no sign.
pub const DURATION_PATTERN: &str = r"^(([0-9]+(\.[0-9]*)?|\.[0-9]+)(h|m|s|ms|us|µs|ns))+$";

impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    /// A string in the policy's duration syntax (the length cap keeps the
    /// cost of Kubernetes' CEL rules on it bounded).
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Duration {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_units_and_fractions() {
        assert_eq!(parse("250ms").get(), std::time::Duration::from_millis(250));
        assert_eq!(parse("2s").get(), std::time::Duration::from_secs(2));
        assert_eq!(parse("1m").get(), std::time::Duration::from_secs(60));
        assert_eq!(parse("1h").get(), std::time::Duration::from_secs(3600));
        assert_eq!(parse("1.5s").get(), std::time::Duration::from_millis(1500));
        assert_eq!(parse("0s"), Duration::ZERO);
        assert_eq!(parse("1m30s").get(), std::time::Duration::from_secs(90));
        assert_eq!(parse("10us").get(), std::time::Duration::from_micros(10));
        assert_eq!(parse("10µs").get(), std::time::Duration::from_micros(10));
        assert_eq!(parse("7ns").get(), std::time::Duration::from_nanos(7));
        assert_eq!(parse(".5s").get(), std::time::Duration::from_millis(500));
    }

    #[test]
    fn rejects_non_durations() {
        for bad in [
            "", "25", "ms", "1.2.3s", "5d", "-1s", "1 s", "s5", "1e3ms", "1.s5",
        ] {
            let err = bad.parse::<Duration>();
            assert!(err.is_err(), "{bad:?} parsed as {err:?}");
        }
        assert_eq!(
            "25".parse::<Duration>().unwrap_err().to_string(),
            "\"25\" is not a duration (e.g. 25ms)"
        );
    }

    #[test]
    fn prints_shortest_form() {
        for (text, printed) in [
            ("250ms", "250ms"),
            ("1500ms", "1.5s"),
            ("60s", "1m"),
            ("90s", "90s"),
            ("1m30s", "90s"),
            ("3600s", "1h"),
            ("0ms", "0s"),
            ("1.25ms", "1.25ms"),
            ("1001ms", "1.001s"),
            ("1250us", "1.25ms"),
            ("7ns", "7ns"),
        ] {
            assert_eq!(parse(text).to_string(), printed, "{text}");
            assert_eq!(parse(printed), parse(text), "{printed} re-parses");
        }
    }

    #[test]
    fn serde_reads_strings_and_rejects_numbers() {
        let d: Duration = serde_json::from_str("\"2s\"").expect("string duration");
        assert_eq!(d, Duration::from_secs(2));
        assert_eq!(serde_json::to_string(&d).expect("json"), "\"2s\"");
        let err = serde_json::from_str::<Duration>("25").expect_err("bare number");
        assert!(
            err.to_string().contains("\"25\" is not a duration"),
            "{err}"
        );
    }
}
