//! Fault descriptions of the flaky upstream: what an instance does by default,
//! how a request's `x-flaky-*` headers override it, and the per-request
//! decision (fail? reset? how long to wait?) drawn from those.

use std::time::Duration;

use http::HeaderMap;
use rand::Rng;

/// Faults of one instance, or of one request after header overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// HTTP status answered instead of the normal response (with `fail_rate`).
    pub status: Option<u16>,
    /// gRPC code answered instead of the normal response (with `fail_rate`).
    pub grpc_status: Option<i32>,
    /// Probability (0..=1) that `status`/`grpc_status` applies; 1 when unset.
    pub fail_rate: Option<f64>,
    /// Wait before answering.
    pub delay: Option<Delay>,
    /// Probability (0..=1) that the connection is reset instead of answered.
    pub reset_rate: f64,
    /// Size of the default response body (otherwise a short text).
    pub body_bytes: Option<usize>,
    /// Send the default body in chunks with pauses between them.
    pub slow_body: Option<SlowBody>,
}

/// A fixed or uniformly random wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delay {
    Fixed(Duration),
    Random { min: Duration, max: Duration },
}

/// `chunks` body chunks, `interval` apart (header form `10x50ms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowBody {
    pub chunks: u32,
    pub interval: Duration,
}

/// What one request will suffer, drawn once from its [`Faults`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub delay: Duration,
    pub reset: bool,
    pub status: Option<u16>,
    pub grpc_status: Option<i32>,
    pub body_bytes: Option<usize>,
    pub slow_body: Option<SlowBody>,
}

/// Parses `250ms`, `2s`, `1m`, `1500us` or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 200ms)"))?;
    let secs = match unit {
        "" | "ms" => n / 1e3,
        "us" => n / 1e6,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?} has an unknown unit (use us, ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

impl std::str::FromStr for Delay {
    type Err = String;

    /// `200ms` is fixed; `100ms-300ms` is uniformly random in that range.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('-') {
            Some((a, b)) => {
                let (min, max) = (parse_duration(a)?, parse_duration(b)?);
                if min > max {
                    return Err(format!("{s:?}: min is above max"));
                }
                Ok(Delay::Random { min, max })
            }
            None => Ok(Delay::Fixed(parse_duration(s)?)),
        }
    }
}

impl std::str::FromStr for SlowBody {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (n, d) = s
            .split_once('x')
            .ok_or_else(|| format!("{s:?} is not CHUNKSxINTERVAL (e.g. 10x50ms)"))?;
        let chunks = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: bad chunk count"))?;
        Ok(SlowBody {
            chunks,
            interval: parse_duration(d)?,
        })
    }
}

/// Parses a probability in 0..=1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim() {
        "true" => Ok(1.0),
        "false" => Ok(0.0),
        v => v
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| format!("{s:?} is not a probability in 0..=1")),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Faults {
    /// This instance's faults with a request's `x-flaky-*` headers (or gRPC
    /// metadata, which travels as headers) laid over them. A malformed header
    /// is an error, so a typo in a test fails loudly instead of passing.
    pub fn with_overrides(&self, headers: &HeaderMap) -> Result<Faults, String> {
        let mut f = self.clone();
        if let Some(v) = header(headers, "x-flaky-status") {
            f.status = Some(
                v.trim()
                    .parse()
                    .map_err(|_| format!("x-flaky-status: {v:?}"))?,
            );
        }
        if let Some(v) = header(headers, "x-flaky-grpc-status") {
            f.grpc_status = Some(
                v.trim()
                    .parse()
                    .map_err(|_| format!("x-flaky-grpc-status: {v:?}"))?,
            );
        }
        if let Some(v) = header(headers, "x-flaky-fail-rate") {
            f.fail_rate = Some(parse_rate(v).map_err(|e| format!("x-flaky-fail-rate: {e}"))?);
        }
        if let Some(v) = header(headers, "x-flaky-delay") {
            f.delay = Some(v.parse().map_err(|e| format!("x-flaky-delay: {e}"))?);
        }
        if let Some(v) = header(headers, "x-flaky-reset") {
            f.reset_rate = parse_rate(v).map_err(|e| format!("x-flaky-reset: {e}"))?;
        }
        if let Some(v) = header(headers, "x-flaky-body-bytes") {
            f.body_bytes = Some(
                v.trim()
                    .parse()
                    .map_err(|_| format!("x-flaky-body-bytes: {v:?}"))?,
            );
        }
        if let Some(v) = header(headers, "x-flaky-slow-body") {
            f.slow_body = Some(v.parse().map_err(|e| format!("x-flaky-slow-body: {e}"))?);
        }
        Ok(f)
    }

    /// Draws this request's fate.
    pub fn decide(&self, rng: &mut impl Rng) -> Decision {
        let delay = match self.delay {
            None => Duration::ZERO,
            Some(Delay::Fixed(d)) => d,
            Some(Delay::Random { min, max }) if min == max => min,
            Some(Delay::Random { min, max }) => rng.random_range(min..=max),
        };
        let reset = self.reset_rate > 0.0 && rng.random_bool(self.reset_rate.clamp(0.0, 1.0));
        let fail = match self.fail_rate {
            None => true,
            Some(r) => r > 0.0 && rng.random_bool(r.clamp(0.0, 1.0)),
        };
        Decision {
            delay,
            reset,
            status: self.status.filter(|_| fail),
            grpc_status: self.grpc_status.filter(|_| fail),
            body_bytes: self.body_bytes,
            slow_body: self.slow_body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_millis(15)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn delays_and_slow_bodies_parse() {
        assert_eq!(
            "200ms".parse(),
            Ok(Delay::Fixed(Duration::from_millis(200)))
        );
        assert_eq!(
            "100ms-300ms".parse(),
            Ok(Delay::Random {
                min: Duration::from_millis(100),
                max: Duration::from_millis(300)
            })
        );
        assert!("300ms-100ms".parse::<Delay>().is_err());
        assert_eq!(
            "10x50ms".parse(),
            Ok(SlowBody {
                chunks: 10,
                interval: Duration::from_millis(50)
            })
        );
        assert!("10by50ms".parse::<SlowBody>().is_err());
    }

    #[test]
    fn headers_override_instance_faults() {
        let base = Faults {
            status: Some(500),
            delay: Some(Delay::Fixed(Duration::from_secs(1))),
            ..Default::default()
        };
        let f = base
            .with_overrides(&headers(&[
                ("x-flaky-status", "503"),
                ("x-flaky-fail-rate", "0.25"),
                ("x-flaky-reset", "true"),
                ("x-flaky-body-bytes", "1024"),
                ("x-flaky-grpc-status", "14"),
            ]))
            .unwrap();
        assert_eq!(f.status, Some(503));
        assert_eq!(f.fail_rate, Some(0.25));
        assert_eq!(f.reset_rate, 1.0);
        assert_eq!(f.body_bytes, Some(1024));
        assert_eq!(f.grpc_status, Some(14));
        assert_eq!(
            f.delay, base.delay,
            "untouched fields keep the instance's value"
        );
    }

    #[test]
    fn malformed_headers_are_errors() {
        for (k, v) in [
            ("x-flaky-status", "abc"),
            ("x-flaky-fail-rate", "1.5"),
            ("x-flaky-delay", "soon"),
            ("x-flaky-slow-body", "3"),
        ] {
            let err = Faults::default()
                .with_overrides(&headers(&[(k, v)]))
                .unwrap_err();
            assert!(err.starts_with(k), "{err}");
        }
    }

    #[test]
    fn decide_honours_rates() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let always = Faults {
            status: Some(503),
            ..Default::default()
        };
        assert_eq!(always.decide(&mut rng).status, Some(503));
        let never = Faults {
            status: Some(503),
            fail_rate: Some(0.0),
            ..Default::default()
        };
        assert_eq!(never.decide(&mut rng).status, None);
        let half = Faults {
            status: Some(503),
            fail_rate: Some(0.5),
            ..Default::default()
        };
        let fails = (0..1000)
            .filter(|_| half.decide(&mut rng).status.is_some())
            .count();
        assert!(
            (350..650).contains(&fails),
            "{fails} of 1000 failed at rate 0.5"
        );
        let resets = Faults {
            reset_rate: 1.0,
            ..Default::default()
        };
        assert!(resets.decide(&mut rng).reset);
        let random = Faults {
            delay: Some(Delay::Random {
                min: Duration::from_millis(10),
                max: Duration::from_millis(20),
            }),
            ..Default::default()
        };
        for _ in 0..100 {
            let d = random.decide(&mut rng).delay;
            assert!(
                d >= Duration::from_millis(10) && d <= Duration::from_millis(20),
                "{d:?}"
            );
        }
    }
}
