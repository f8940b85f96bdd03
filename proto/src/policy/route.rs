//! Per-route overrides and how a request is matched to one.
//!
//! Routes are tried in the order written; the first whose match accepts the
//! request wins. Within one match every given criterion must hold (AND).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::Duration;
use super::retry::RetryPolicy;

/// A named override of the service's outbound timeouts and retry policy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Unique within the policy; used as the `route` metric label.
    pub name: String,
    /// Which requests the route applies to.
    pub r#match: RouteMatch,
    /// Overrides of the service timeouts (field by field).
    #[serde(default, skip_serializing_if = "RouteTimeouts::is_empty")]
    pub timeouts: RouteTimeouts,
    /// Overrides of the service retry policy (field by field; not `budget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

/// The timeouts a route may override (`connect` belongs to the endpoint pool;
/// `idle` is set per service).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTimeouts {
    /// Whole-call deadline; `0s` turns the service's off for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// Per-attempt deadline; `0s` turns the service's off for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try: Option<Duration>,
}

impl RouteTimeouts {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == RouteTimeouts::default()
    }
}

/// Request criteria; all given ones must match, and at least one must be given.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    /// Path prefix, element-wise: `/payments` matches `/payments` and `/payments/1`, not `/paymentsx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Exact path (query string ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Any of these methods (upper case, e.g. `POST`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// All of these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// gRPC service and/or method (from the `/pkg.Service/Method` path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcMatch>,
}

/// A header that must be present, with exactly `value` if given.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Exact value; absent means "present with any value".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// gRPC criteria: fully-qualified service (`shop.v1.Payments`) and/or method (`Charge`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMatch {
    /// Fully-qualified service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Method name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// What route matching looks at.
#[derive(Clone, Copy, Debug)]
pub struct RouteRequest<'a> {
    /// HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// Request path; a `?query` suffix is ignored. gRPC calls are `/pkg.Service/Method`.
    pub path: &'a str,
    /// Request headers, for `match.headers`; `None` matches no header criterion.
    pub headers: Option<&'a http::HeaderMap>,
}

impl<'a> RouteRequest<'a> {
    /// A request without headers.
    pub fn new(method: &'a str, path: &'a str) -> Self {
        RouteRequest {
            method,
            path,
            headers: None,
        }
    }

    /// Adds the headers used by `match.headers`.
    pub fn with_headers(mut self, headers: &'a http::HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// The path without its query string.
    fn bare_path(&self) -> &'a str {
        self.path.split_once('?').map_or(self.path, |(p, _)| p)
    }

    /// `(service, method)` when the path has the gRPC shape `/service/method`.
    pub fn grpc(&self) -> Option<(&'a str, &'a str)> {
        let rest = self.bare_path().strip_prefix('/')?;
        let (service, method) = rest.split_once('/')?;
        if service.is_empty() || method.is_empty() || method.contains('/') {
            return None;
        }
        Some((service, method))
    }
}

impl RouteMatch {
    /// Whether no criterion is given (such a match is rejected by validation).
    pub fn is_empty(&self) -> bool {
        *self == RouteMatch::default()
    }

    /// Whether `req` satisfies every given criterion.
    pub fn matches(&self, req: &RouteRequest<'_>) -> bool {
        let path = req.bare_path();
        if let Some(exact) = &self.path
            && path != exact
        {
            return false;
        }
        if let Some(prefix) = &self.path_prefix
            && !prefix_matches(prefix, path)
        {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method) {
            return false;
        }
        if !self.headers.iter().all(|h| h.matches(req.headers)) {
            return false;
        }
        if let Some(grpc) = &self.grpc {
            let Some((service, method)) = req.grpc() else {
                return false;
            };
            if grpc.service.as_deref().is_some_and(|s| s != service)
                || grpc.method.as_deref().is_some_and(|m| m != method)
            {
                return false;
            }
        }
        true
    }
}

/// Element-wise prefix match, as Gateway API `PathPrefix`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix_trimmed = prefix.trim_end_matches('/');
    if prefix_trimmed.is_empty() {
        return true; // "/" matches everything
    }
    match path.strip_prefix(prefix_trimmed) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl HeaderMatch {
    fn matches(&self, headers: Option<&http::HeaderMap>) -> bool {
        let Some(headers) = headers else {
            return false;
        };
        let mut values = headers.get_all(self.name.as_str()).iter();
        match &self.value {
            None => values.next().is_some(),
            Some(want) => values.any(|v| v.as_bytes() == want.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(yaml: &str) -> RouteMatch {
        serde_norway::from_str(yaml).expect("match yaml")
    }

    #[test]
    fn path_prefix_is_element_wise() {
        let rm = m("{pathPrefix: /payments}");
        assert!(rm.matches(&RouteRequest::new("GET", "/payments")));
        assert!(rm.matches(&RouteRequest::new("GET", "/payments/1?x=y")));
        assert!(!rm.matches(&RouteRequest::new("GET", "/paymentsx")));
        assert!(!rm.matches(&RouteRequest::new("GET", "/pay")));
        let slash = m("{pathPrefix: /payments/}");
        assert!(slash.matches(&RouteRequest::new("GET", "/payments/1")));
        assert!(slash.matches(&RouteRequest::new("GET", "/payments")));
        assert!(m("{pathPrefix: /}").matches(&RouteRequest::new("GET", "/anything")));
    }

    #[test]
    fn exact_path_ignores_query() {
        let rm = m("{path: /healthz}");
        assert!(rm.matches(&RouteRequest::new("GET", "/healthz?verbose=1")));
        assert!(!rm.matches(&RouteRequest::new("GET", "/healthz/x")));
    }

    #[test]
    fn methods_and_path_are_anded() {
        let rm = m("{pathPrefix: /payments, methods: [POST, PUT]}");
        assert!(rm.matches(&RouteRequest::new("POST", "/payments")));
        assert!(rm.matches(&RouteRequest::new("PUT", "/payments/2")));
        assert!(!rm.matches(&RouteRequest::new("GET", "/payments")));
        assert!(!rm.matches(&RouteRequest::new("POST", "/orders")));
    }

    #[test]
    fn headers_need_presence_or_exact_value() {
        let rm = m("{headers: [{name: x-canary}, {name: x-tier, value: gold}]}");
        let mut h = http::HeaderMap::new();
        h.insert("x-canary", http::HeaderValue::from_static("1"));
        h.insert("x-tier", http::HeaderValue::from_static("gold"));
        assert!(rm.matches(&RouteRequest::new("GET", "/").with_headers(&h)));
        assert!(!rm.matches(&RouteRequest::new("GET", "/")));
        h.insert("x-tier", http::HeaderValue::from_static("silver"));
        assert!(!rm.matches(&RouteRequest::new("GET", "/").with_headers(&h)));
    }

    #[test]
    fn grpc_service_and_method() {
        let both = m("{grpc: {service: shop.v1.Payments, method: Charge}}");
        let svc = m("{grpc: {service: shop.v1.Payments}}");
        let meth = m("{grpc: {method: Charge}}");
        let charge = RouteRequest::new("POST", "/shop.v1.Payments/Charge");
        let refund = RouteRequest::new("POST", "/shop.v1.Payments/Refund");
        assert!(both.matches(&charge) && svc.matches(&charge) && meth.matches(&charge));
        assert!(!both.matches(&refund) && svc.matches(&refund) && !meth.matches(&refund));
        assert!(!svc.matches(&RouteRequest::new("POST", "/shop.v1.Payments")));
        assert!(!svc.matches(&RouteRequest::new("POST", "/shop.v1.Payments/a/b")));
    }
}
