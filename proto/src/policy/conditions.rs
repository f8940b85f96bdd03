//! The vocabularies of `retry.on`, `retry.grpcOn` and `circuitBreaker.failureOn`:
//! what counts as a retryable (or breaker-counted) failure.

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

/// A gRPC status code, written as its lower-kebab-case name (`unavailable`,
/// `deadline-exceeded`); `UNAVAILABLE` and `deadline_exceeded` are read too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GrpcCode {
    /// 1
    Cancelled = 1,
    /// 2
    Unknown = 2,
    /// 3
    InvalidArgument = 3,
    /// 4
    DeadlineExceeded = 4,
    /// 5
    NotFound = 5,
    /// 6
    AlreadyExists = 6,
    /// 7
    PermissionDenied = 7,
    /// 8
    ResourceExhausted = 8,
    /// 9
    FailedPrecondition = 9,
    /// 10
    Aborted = 10,
    /// 11
    OutOfRange = 11,
    /// 12
    Unimplemented = 12,
    /// 13
    Internal = 13,
    /// 14
    Unavailable = 14,
    /// 15
    DataLoss = 15,
    /// 16
    Unauthenticated = 16,
}

const GRPC_NAMES: [(GrpcCode, &str); 16] = [
    (GrpcCode::Cancelled, "cancelled"),
    (GrpcCode::Unknown, "unknown"),
    (GrpcCode::InvalidArgument, "invalid-argument"),
    (GrpcCode::DeadlineExceeded, "deadline-exceeded"),
    (GrpcCode::NotFound, "not-found"),
    (GrpcCode::AlreadyExists, "already-exists"),
    (GrpcCode::PermissionDenied, "permission-denied"),
    (GrpcCode::ResourceExhausted, "resource-exhausted"),
    (GrpcCode::FailedPrecondition, "failed-precondition"),
    (GrpcCode::Aborted, "aborted"),
    (GrpcCode::OutOfRange, "out-of-range"),
    (GrpcCode::Unimplemented, "unimplemented"),
    (GrpcCode::Internal, "internal"),
    (GrpcCode::Unavailable, "unavailable"),
    (GrpcCode::DataLoss, "data-loss"),
    (GrpcCode::Unauthenticated, "unauthenticated"),
];

impl GrpcCode {
    /// The numeric code carried in `grpc-status`.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The code for a `grpc-status` number, if it is a non-OK status.
    pub fn from_code(code: i32) -> Option<GrpcCode> {
        GRPC_NAMES
            .iter()
            .map(|(c, _)| *c)
            .find(|c| c.code() == code)
    }

    /// The lower-kebab-case name, as written in policies.
    pub fn name(self) -> &'static str {
        GRPC_NAMES
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("unknown", |(_, n)| n)
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GrpcCode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase().replace('_', "-");
        GRPC_NAMES
            .iter()
            .find(|(_, n)| *n == wanted)
            .map(|(c, _)| *c)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a gRPC status code name (e.g. unavailable, deadline-exceeded, \
                     resource-exhausted)"
                )
            })
    }
}

impl Serialize for GrpcCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for GrpcCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
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

    #[test]
    fn grpc_codes() {
        assert_eq!("unavailable".parse(), Ok(GrpcCode::Unavailable));
        assert_eq!("DEADLINE_EXCEEDED".parse(), Ok(GrpcCode::DeadlineExceeded));
        assert_eq!(GrpcCode::ResourceExhausted.code(), 8);
        assert_eq!(GrpcCode::from_code(14), Some(GrpcCode::Unavailable));
        assert_eq!(GrpcCode::from_code(0), None);
        assert_eq!(GrpcCode::DataLoss.to_string(), "data-loss");
        assert!("ok".parse::<GrpcCode>().is_err());
        assert!("unavaliable".parse::<GrpcCode>().is_err());
    }
}
