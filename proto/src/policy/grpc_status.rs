//! [`GrpcStatus`]: the gRPC status codes, the one type every part of Levee
//! uses for them — policy `grpcOn`, response classification, metrics,
//! traces and the access log.
//!
//! It owns four facts about a code:
//! - its number, read from a `grpc-status` header ([`GrpcStatus::parse`]:
//!   garbage and numbers gRPC does not define read as UNKNOWN, as gRPC
//!   clients do);
//! - its canonical lower-kebab-case name (`unavailable`,
//!   `deadline-exceeded`), used in policies and metric labels;
//! - the HTTP status gRPC itself maps it to (`google.rpc.Code`'s table,
//!   also Envoy's `grpcToHttpStatus`);
//! - the one rule for whether it is a failure of the server
//!   ([`GrpcStatus::is_failure`]).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// A gRPC status code, written as its lower-kebab-case name (`unavailable`,
/// `deadline-exceeded`); `UNAVAILABLE` and `deadline_exceeded` are read too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GrpcStatus {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// Every code, by number, with its name and the HTTP status gRPC maps it to.
const TABLE: [(GrpcStatus, &str, u16); 17] = [
    (GrpcStatus::Ok, "ok", 200),
    (GrpcStatus::Cancelled, "cancelled", 499),
    (GrpcStatus::Unknown, "unknown", 500),
    (GrpcStatus::InvalidArgument, "invalid-argument", 400),
    (GrpcStatus::DeadlineExceeded, "deadline-exceeded", 504),
    (GrpcStatus::NotFound, "not-found", 404),
    (GrpcStatus::AlreadyExists, "already-exists", 409),
    (GrpcStatus::PermissionDenied, "permission-denied", 403),
    (GrpcStatus::ResourceExhausted, "resource-exhausted", 429),
    (GrpcStatus::FailedPrecondition, "failed-precondition", 400),
    (GrpcStatus::Aborted, "aborted", 409),
    (GrpcStatus::OutOfRange, "out-of-range", 400),
    (GrpcStatus::Unimplemented, "unimplemented", 501),
    (GrpcStatus::Internal, "internal", 500),
    (GrpcStatus::Unavailable, "unavailable", 503),
    (GrpcStatus::DataLoss, "data-loss", 500),
    (GrpcStatus::Unauthenticated, "unauthenticated", 401),
];

impl GrpcStatus {
    /// All 17 codes, in numeric order.
    pub const ALL: [GrpcStatus; 17] = {
        let mut all = [GrpcStatus::Ok; 17];
        let mut i = 0;
        while i < 17 {
            all[i] = TABLE[i].0;
            i += 1;
        }
        all
    };

    /// The numeric code carried in `grpc-status`.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The code for a number, if gRPC defines it.
    pub fn from_code(code: i32) -> Option<GrpcStatus> {
        usize::try_from(code)
            .ok()
            .and_then(|i| TABLE.get(i))
            .map(|(s, _, _)| *s)
    }

    /// Reads a `grpc-status` header value. Anything that is not one of the
    /// 17 numbers (garbage, `17`, `-1`) is UNKNOWN, as gRPC clients read it.
    pub fn parse(value: &[u8]) -> GrpcStatus {
        std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .and_then(GrpcStatus::from_code)
            .unwrap_or(GrpcStatus::Unknown)
    }

    /// The `grpc-status` in a header map (a response head or its trailers),
    /// if there is one.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<GrpcStatus> {
        // A constant name: a `&str` key would be parsed on every lookup.
        const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
        headers
            .get(GRPC_STATUS)
            .map(|v| GrpcStatus::parse(v.as_bytes()))
    }

    /// The status of a trailers-only response (an immediate gRPC error):
    /// HTTP 200 with `grpc-status` already in the head. Otherwise the status
    /// comes in the trailers, after the body.
    pub fn trailers_only<B>(response: &http::Response<B>) -> Option<GrpcStatus> {
        if response.status() != http::StatusCode::OK {
            return None;
        }
        GrpcStatus::from_headers(response.headers())
    }

    /// The lower-kebab-case name, as written in policies and metric labels.
    pub fn name(self) -> &'static str {
        TABLE[self as usize].1
    }

    /// The HTTP status gRPC maps this code to (OK → 200, UNAVAILABLE → 503,
    /// NOT_FOUND → 404, CANCELLED → 499, ...).
    pub fn http_status(self) -> u16 {
        TABLE[self as usize].2
    }

    /// Whether this status is a failure of the server (the upstream), not
    /// an answer: the codes gRPC maps to a 5xx — UNKNOWN, DEADLINE_EXCEEDED,
    /// UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. This is the same
    /// line as for HTTP (5xx fail, 4xx are answers), the set OpenTelemetry
    /// marks as errors on SERVER spans, and what Envoy's outlier detection
    /// counts. Client-side codes (INVALID_ARGUMENT, NOT_FOUND,
    /// RESOURCE_EXHAUSTED, CANCELLED, ...) are the server answering
    /// correctly, so they do not count against it.
    pub fn is_failure(self) -> bool {
        self.http_status() >= 500
    }
}

impl fmt::Display for GrpcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GrpcStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase().replace('_', "-");
        TABLE
            .iter()
            .find(|(_, n, _)| *n == wanted)
            .map(|(c, _, _)| *c)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a gRPC status code name (e.g. unavailable, deadline-exceeded, \
                     resource-exhausted)"
                )
            })
    }
}

impl Serialize for GrpcStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for GrpcStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl GrpcStatus {
    /// What `FromStr` accepts, as a regular expression (RE2 and Python `re`
    /// alike): a status name in any case, with `-` or `_` between words.
    pub fn name_pattern() -> String {
        let names: Vec<String> = TABLE
            .iter()
            .map(|(_, name, _)| name.replace('-', "[-_]"))
            .collect();
        format!("^(?i:{})$", names.join("|"))
    }
}

impl schemars::JsonSchema for GrpcStatus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GrpcStatus".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": GrpcStatus::name_pattern(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule, pinned for every code: (number, name, HTTP status, failure).
    #[test]
    fn every_code_name_http_status_and_failure() {
        use GrpcStatus as G;
        let expected: [(G, i32, &str, u16, bool); 17] = [
            (G::Ok, 0, "ok", 200, false),
            (G::Cancelled, 1, "cancelled", 499, false),
            (G::Unknown, 2, "unknown", 500, true),
            (G::InvalidArgument, 3, "invalid-argument", 400, false),
            (G::DeadlineExceeded, 4, "deadline-exceeded", 504, true),
            (G::NotFound, 5, "not-found", 404, false),
            (G::AlreadyExists, 6, "already-exists", 409, false),
            (G::PermissionDenied, 7, "permission-denied", 403, false),
            (G::ResourceExhausted, 8, "resource-exhausted", 429, false),
            (G::FailedPrecondition, 9, "failed-precondition", 400, false),
            (G::Aborted, 10, "aborted", 409, false),
            (G::OutOfRange, 11, "out-of-range", 400, false),
            (G::Unimplemented, 12, "unimplemented", 501, true),
            (G::Internal, 13, "internal", 500, true),
            (G::Unavailable, 14, "unavailable", 503, true),
            (G::DataLoss, 15, "data-loss", 500, true),
            (G::Unauthenticated, 16, "unauthenticated", 401, false),
        ];
        assert_eq!(G::ALL.len(), expected.len());
        for (i, (status, code, name, http, failure)) in expected.into_iter().enumerate() {
            assert_eq!(G::ALL[i], status);
            assert_eq!(status.code(), code, "{name}");
            assert_eq!(G::parse(code.to_string().as_bytes()), status, "{name}");
            assert_eq!(G::from_code(code), Some(status));
            assert_eq!(status.name(), name);
            assert_eq!(name.parse::<G>(), Ok(status));
            assert_eq!(status.http_status(), http, "{name}");
            assert_eq!(status.is_failure(), failure, "{name}");
        }
    }

    #[test]
    fn garbage_and_undefined_numbers_read_as_unknown() {
        for garbage in [
            &b""[..],
            b"x",
            b"14x",
            b"17",
            b"-1",
            b"99999999999",
            b"\xff",
        ] {
            let status = GrpcStatus::parse(garbage);
            assert_eq!(status, GrpcStatus::Unknown, "{garbage:?}");
            assert!(status.is_failure());
        }
        assert_eq!(GrpcStatus::parse(b" 14 "), GrpcStatus::Unavailable);
        assert_eq!(GrpcStatus::from_code(17), None);
        assert_eq!(GrpcStatus::from_code(-1), None);
    }

    #[test]
    fn headers_with_and_without_a_status() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(GrpcStatus::from_headers(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(
            GrpcStatus::from_headers(&headers),
            Some(GrpcStatus::NotFound)
        );
        headers.insert("grpc-status", http::HeaderValue::from_static("oops"));
        assert_eq!(
            GrpcStatus::from_headers(&headers),
            Some(GrpcStatus::Unknown)
        );
    }

    #[test]
    fn trailers_only_needs_http_200_and_a_status_in_the_head() {
        let response = |status: u16, grpc: Option<&'static str>| {
            let mut builder = http::Response::builder().status(status);
            if let Some(code) = grpc {
                builder = builder.header("grpc-status", code);
            }
            builder.body(()).expect("response")
        };
        assert_eq!(
            GrpcStatus::trailers_only(&response(200, Some("14"))),
            Some(GrpcStatus::Unavailable)
        );
        assert_eq!(
            GrpcStatus::trailers_only(&response(200, Some("0"))),
            Some(GrpcStatus::Ok)
        );
        assert_eq!(GrpcStatus::trailers_only(&response(200, None)), None);
        assert_eq!(GrpcStatus::trailers_only(&response(503, Some("14"))), None);
    }

    #[test]
    fn names_are_read_in_any_case_and_separator() {
        assert_eq!("unavailable".parse(), Ok(GrpcStatus::Unavailable));
        assert_eq!(
            "DEADLINE_EXCEEDED".parse(),
            Ok(GrpcStatus::DeadlineExceeded)
        );
        assert_eq!(GrpcStatus::DataLoss.to_string(), "data-loss");
        assert!("unavaliable".parse::<GrpcStatus>().is_err());
        assert!("14".parse::<GrpcStatus>().is_err());
    }
}
