//! Hop-by-hop header handling (RFC 9110 §7.6.1), applied to requests and
//! responses in both directions.
//!
//! Removed: `Connection` and every header it names, `Keep-Alive`,
//! `Proxy-Connection`, `Transfer-Encoding`, `Proxy-Authorization`,
//! `Proxy-Authenticate`, `TE` unless it asks for trailers (then `TE: trailers`
//! is kept, gRPC needs it), and `Upgrade` unless the message is an upgrade,
//! in which case `Connection: upgrade` + `Upgrade` are re-sent.

use http::HeaderMap;
use http::header::{
    CONNECTION, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRANSFER_ENCODING, UPGRADE,
};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether `headers` ask for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// Whether `name` is one of the hop-by-hop headers removed whatever
/// `Connection` says.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TRANSFER_ENCODING,
        &PROXY_AUTHORIZATION,
        &PROXY_AUTHENTICATE,
        &TE,
        &UPGRADE,
    ]
    .contains(&name)
}

/// Strips hop-by-hop headers in place. With `upgrade`, the `Upgrade` header
/// survives and `Connection: upgrade` is set for the next hop.
///
/// Most messages carry none: one walk over the names they do carry (a
/// handful) finds that, instead of a hashed lookup per hop-by-hop name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if !upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        // Only tokens that name some other header need an allocation; the
        // usual `keep-alive` / `close` / `upgrade` are handled below.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| {
                !["keep-alive", "close", "upgrade"]
                    .iter()
                    .any(|k| t.eq_ignore_ascii_case(k))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            // `TE` is handled below: `TE: trailers` must survive.
            if name != TE {
                headers.remove(&name);
            }
        }
        headers.remove(CONNECTION);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    headers.remove(PROXY_AUTHORIZATION);
    headers.remove(PROXY_AUTHENTICATE);
    if let Some(te) = headers.remove(TE) {
        let trailers = te.to_str().is_ok_and(|v| {
            v.split(',').any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
        if trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// The comma-separated tokens of every `Connection` header, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn strips_rfc9110_hop_by_hop_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Custom-Hop"),
            ("connection", "close"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-authenticate", "Basic"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("host", "payments:8080"),
            ("authorization", "Bearer x"),
            ("x-end-to-end", "kept"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "host", "x-end-to-end"]);
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_stripped_and_others_are_untouched() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "proxy-authorization",
            "proxy-authenticate",
            "te",
            "upgrade",
        ] {
            let mut h = map(&[(name, "x"), ("x-end-to-end", "kept")]);
            strip_hop_by_hop(&mut h, false);
            let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(names, ["x-end-to-end"], "{name}");
        }
        let mut h = map(&[("host", "a"), ("accept", "*/*")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn te_trailers_survives_alone() {
        let mut h = map(&[("te", "gzip, trailers;q=1")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get(TE).map(|v| v.as_bytes()), Some(&b"trailers"[..]));
    }

    #[test]
    fn upgrade_keeps_upgrade_and_sets_connection() {
        let mut h = map(&[
            ("connection", "Upgrade, keep-alive"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        assert!(h.contains_key("sec-websocket-key"));
    }

    #[test]
    fn upgrade_needs_both_headers() {
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&map(&[("connection", "upgrade")])));
        assert!(!is_upgrade(&map(&[
            ("connection", "keep-alive"),
            ("upgrade", "h2c")
        ])));
    }
}
