//! Request targets: where a request is addressed (its authority) and the URI
//! form the next hop expects.
//!
//! HTTP/1 upstreams get origin-form (`/path?q`) with the authority in `Host`;
//! an absolute-form request (the app using us as `HTTP_PROXY`) has its URI
//! authority win over any `Host` it sent (RFC 9112 §3.2.2). HTTP/2 upstreams
//! get the authority as `:authority`, so the URI stays absolute.
//!
//! Before any of that, [`check_authority`] refuses a request that names its
//! destination twice in ways that disagree: a proxy that routed on one
//! spelling while the upstream reads the other could be steered anywhere.

use http::header::{HOST, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri};

use super::pool::Protocol;

/// The authority a request is addressed to: the URI's (absolute-form or
/// HTTP/2 `:authority`), else the `Host` header.
pub fn request_authority<B>(req: &Request<B>) -> Option<&str> {
    if let Some(authority) = req.uri().authority() {
        return Some(authority.as_str());
    }
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::trim)
        .filter(|h| !h.is_empty())
}

/// Refuses (`Err` with the reason) a request that names its destination
/// ambiguously: several `Host` headers (RFC 9110 §7.2), or a `Host` that
/// names another authority than the URI — HTTP/2 `:authority` (RFC 9113
/// §8.3.1) or HTTP/1 absolute form. Hosts compare without case; a missing
/// port is the scheme's default.
pub fn check_authority<B>(req: &Request<B>) -> Result<(), String> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let Some(host) = hosts.next() else {
        return Ok(());
    };
    if hosts.next().is_some() {
        return Err("several Host headers: the destination is ambiguous".to_owned());
    }
    let Some(authority) = req.uri().authority() else {
        return Ok(());
    };
    let same = host
        .to_str()
        .ok()
        .and_then(|h| h.trim().parse::<Authority>().ok())
        .is_some_and(|h| same_authority(&h, authority, req.uri().scheme()));
    if same {
        Ok(())
    } else {
        let host = String::from_utf8_lossy(host.as_bytes());
        let host: String = host.chars().take(256).collect();
        Err(format!(
            "Host {host:?} disagrees with the request's authority {authority:?}"
        ))
    }
}

/// Whether two authorities name the same host and port. Without a scheme
/// (a `CONNECT` target) a side without a port leaves the host to decide.
fn same_authority(a: &Authority, b: &Authority, scheme: Option<&Scheme>) -> bool {
    let default = scheme.map(|s| if *s == Scheme::HTTPS { 443 } else { 80 });
    let ports = match (a.port_u16().or(default), b.port_u16().or(default)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    ports && a.host().eq_ignore_ascii_case(b.host())
}

/// Puts `req`'s target in the form `protocol` wants, keeping its authority.
pub fn rewrite_for_upstream<B>(req: &mut Request<B>, protocol: Protocol) -> Result<(), String> {
    match protocol {
        Protocol::Http1 => {
            if let Some(authority) = req.uri().authority() {
                let host = HeaderValue::from_str(authority.as_str())
                    .map_err(|e| format!("bad authority: {e}"))?;
                req.headers_mut().insert(HOST, host);
            }
            if req.uri().scheme().is_some() || req.uri().authority().is_some() {
                let origin = origin_form(req.method(), req.uri());
                *req.uri_mut() = origin;
            }
            Ok(())
        }
        Protocol::Http2 => {
            if req.uri().scheme().is_some() && req.uri().authority().is_some() {
                return Ok(());
            }
            let authority: Authority = request_authority(req)
                .ok_or("no :authority or Host")?
                .parse()
                .map_err(|e| format!("bad authority: {e}"))?;
            let mut parts = std::mem::take(req.uri_mut()).into_parts();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(authority);
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(PathAndQuery::from_static("/"));
            }
            *req.uri_mut() = Uri::from_parts(parts).map_err(|e| format!("bad target: {e}"))?;
            Ok(())
        }
    }
}

fn origin_form(method: &Method, uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) if pq.as_str() != "/" || method != Method::OPTIONS => Uri::from(pq.clone()),
        // `OPTIONS http://host` (no path) means the server itself: `*`.
        _ if method == Method::OPTIONS => Uri::from_static("*"),
        _ => Uri::from_static("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, uri: &str, host: Option<&'static str>) -> Request<()> {
        let mut r = Request::builder().method(method).uri(uri);
        if let Some(h) = host {
            r = r.header(HOST, h);
        }
        r.body(()).expect("request")
    }

    #[test]
    fn authority_prefers_absolute_form_over_host() {
        let r = req(
            Method::GET,
            "http://payments.shop:8080/pay?x=1",
            Some("other:1"),
        );
        assert_eq!(request_authority(&r), Some("payments.shop:8080"));
        let r = req(Method::GET, "/pay", Some(" payments:8080 "));
        assert_eq!(request_authority(&r), Some("payments:8080"));
        assert_eq!(request_authority(&req(Method::GET, "/pay", None)), None);
        assert_eq!(request_authority(&req(Method::GET, "/pay", Some(""))), None);
    }

    #[test]
    fn an_authority_named_twice_must_agree() {
        let agree = [
            ("http://payments:8080/pay", "payments:8080"),
            ("http://Payments:8080/pay", "payments:8080"),
            ("http://payments/pay", "payments:80"),
            ("http://payments:80/pay", "PAYMENTS"),
            ("https://payments/pay", "payments:443"),
            ("http://[::1]:8080/", "[::1]:8080"),
            ("http://payments:8080/pay", " payments:8080 "),
            ("http://user@payments:8080/pay", "payments:8080"),
        ];
        for (uri, host) in agree {
            let r = req(Method::GET, uri, Some(host));
            assert_eq!(check_authority(&r), Ok(()), "{uri} / {host}");
        }
        let disagree = [
            ("http://payments:8080/pay", "payments:8081"),
            ("http://payments:8080/pay", "127.0.0.1:4140"),
            ("http://payments/pay", "payments:443"),
            ("https://payments/pay", "payments:80"),
            ("http://payments:8080/pay", "payments.shop:8080"),
            ("http://127.0.0.1:4140/", "localhost:4140"),
            ("http://payments:8080/pay", ""),
            ("http://payments:8080/pay", "not a host"),
        ];
        for (uri, host) in disagree {
            let r = req(Method::GET, uri, Some(host));
            let err = check_authority(&r).expect_err(uri);
            assert!(err.contains("disagrees"), "{err}");
        }
        // Origin form has only Host: nothing to compare.
        assert_eq!(
            check_authority(&req(Method::GET, "/pay", Some("x:1"))),
            Ok(())
        );
        // CONNECT's authority form: a Host without a port names the host.
        let connect = req(
            Method::CONNECT,
            "api.example.com:443",
            Some("api.example.com"),
        );
        assert_eq!(check_authority(&connect), Ok(()));
    }

    #[test]
    fn several_host_headers_are_refused() {
        for uri in ["/pay", "http://payments:8080/pay"] {
            let mut r = req(Method::GET, uri, Some("payments:8080"));
            r.headers_mut()
                .append(HOST, HeaderValue::from_static("payments:8080"));
            let err = check_authority(&r).expect_err("two Host headers");
            assert!(err.contains("several Host"), "{err}");
        }
    }

    #[test]
    fn http1_upstream_gets_origin_form_and_host() {
        let mut r = req(Method::GET, "http://payments:8080/pay?x=1", Some("wrong:1"));
        rewrite_for_upstream(&mut r, Protocol::Http1).expect("rewrite");
        assert_eq!(r.uri(), "/pay?x=1");
        assert_eq!(r.headers()[HOST], "payments:8080");

        let mut r = req(Method::POST, "/pay", Some("payments:8080"));
        rewrite_for_upstream(&mut r, Protocol::Http1).expect("rewrite");
        assert_eq!(r.uri(), "/pay");
        assert_eq!(r.headers()[HOST], "payments:8080");

        let mut r = req(Method::OPTIONS, "http://payments:8080", None);
        rewrite_for_upstream(&mut r, Protocol::Http1).expect("rewrite");
        assert_eq!(r.uri(), "*");
    }

    #[test]
    fn http2_upstream_keeps_absolute_uri() {
        let mut r = req(Method::POST, "http://payments:8080/pkg.Svc/Call", None);
        rewrite_for_upstream(&mut r, Protocol::Http2).expect("rewrite");
        assert_eq!(r.uri(), "http://payments:8080/pkg.Svc/Call");

        let mut r = req(Method::GET, "/x", Some("payments:8080"));
        rewrite_for_upstream(&mut r, Protocol::Http2).expect("rewrite");
        assert_eq!(r.uri(), "http://payments:8080/x");

        let mut r = req(Method::GET, "/x", None);
        assert!(rewrite_for_upstream(&mut r, Protocol::Http2).is_err());
    }
}
