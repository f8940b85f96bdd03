//! The vocabulary of `retry.on` and `circuitBreaker.failureOn`: what counts
//! as a retryable (or breaker-counted) failure. (`retry.grpcOn` lists
//! [`super::GrpcStatus`] names.)

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An HTTP-level outcome that a retry policy or a circuit breaker reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureCondition {
    /// `connect-failure`: the TCP connection to the endpoint could not be made.
    ConnectFailure,
    /// `refused-stream`: HTTP/2 REFUSED_STREAM; the upstream did not process the request.
    RefusedStream,
    /// `reset`: the connection or stream was reset before a response head arrived.
    Reset,
    /// `timeout`: the per-try timeout fired (retry) / a call timed out (breaker).
    Timeout,
    /// `gateway-error`: a 502, 503 or 504 response.
    GatewayError,
    /// `5xx`: any 5xx response (including connect failures and resets, as in Envoy).
    ServerError,
    /// A specific 4xx or 5xx status code, e.g. `"503"` or `"409"`.
    Status(u16),
}

impl FailureCondition {
    /// Whether a response with this HTTP status matches the condition.
    pub fn matches_status(self, status: u16) -> bool {
        match self {
            FailureCondition::GatewayError => matches!(status, 502..=504),
            FailureCondition::ServerError => (500..=599).contains(&status),
            FailureCondition::Status(code) => code == status,
            _ => false,
        }
    }
}

impl fmt::Display for FailureCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureCondition::ConnectFailure => f.write_str("connect-failure"),
            FailureCondition::RefusedStream => f.write_str("refused-stream"),
            FailureCondition::Reset => f.write_str("reset"),
            FailureCondition::Timeout => f.write_str("timeout"),
            FailureCondition::GatewayError => f.write_str("gateway-error"),
            FailureCondition::ServerError => f.write_str("5xx"),
            FailureCondition::Status(code) => write!(f, "{code}"),
        }
    }
}

impl FromStr for FailureCondition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "connect-failure" => FailureCondition::ConnectFailure,
            "refused-stream" => FailureCondition::RefusedStream,
            "reset" => FailureCondition::Reset,
            "timeout" => FailureCondition::Timeout,
            "gateway-error" => FailureCondition::GatewayError,
            "5xx" => FailureCondition::ServerError,
            code if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) => {
                match code.parse::<u16>() {
                    Ok(n @ 400..=599) => FailureCondition::Status(n),
                    _ => return Err(format!("{s:?} is not a 4xx or 5xx status code")),
                }
            }
            _ => {
                return Err(format!(
                    "{s:?} is not a failure condition (connect-failure, refused-stream, reset, \
                     timeout, gateway-error, 5xx, or a 4xx/5xx status code such as \"503\")"
                ));
            }
        })
    }
}

impl Serialize for FailureCondition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FailureCondition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ConditionVisitor;

        impl Visitor<'_> for ConditionVisitor {
            type Value = FailureCondition;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a failure condition such as connect-failure or \"503\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<FailureCondition, E> {
                v.parse().map_err(E::custom)
            }

            // `on: [503]` without quotes is a YAML integer; accept it.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FailureCondition, E> {
                v.to_string().parse().map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FailureCondition, E> {
                v.to_string().parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(ConditionVisitor)
    }
}

impl schemars::JsonSchema for FailureCondition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FailureCondition".into()
    }

    fn inline_schema() -> bool {
        true
    }

    /// A name or a status code, as a string or (unquoted in YAML) an integer:
    /// Kubernetes' int-or-string. Which names and codes is checked by parsing.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_conditions_round_trip() {
        for text in [
            "connect-failure",
            "refused-stream",
            "reset",
            "timeout",
            "gateway-error",
            "5xx",
            "503",
            "429",
        ] {
            let c: FailureCondition = text.parse().expect(text);
            assert_eq!(c.to_string(), text);
        }
    }

    #[test]
    fn failure_conditions_reject_unknowns_and_other_codes() {
        for bad in [
            "connect_failure",
            "200",
            "302",
            "600",
            "50",
            "5031",
            "retry",
            "",
        ] {
            assert!(bad.parse::<FailureCondition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn status_matching() {
        assert!(FailureCondition::GatewayError.matches_status(503));
        assert!(!FailureCondition::GatewayError.matches_status(500));
        assert!(FailureCondition::ServerError.matches_status(500));
        assert!(FailureCondition::Status(409).matches_status(409));
        assert!(!FailureCondition::Reset.matches_status(500));
    }
}
