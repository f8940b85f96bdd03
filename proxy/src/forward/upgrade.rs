//! Which HTTP/1.1 `Upgrade` requests become tunnels: only protocols on the
//! allow-list (`--allowed-upgrades`, default `websocket`).
//!
//! - Every offered protocol is allowed: the request is forwarded as an
//!   upgrade and, once switched, tunnelled.
//! - `h2c` is never tunnelled: the offer is dropped (with `HTTP2-Settings`)
//!   and the request served as plain HTTP/1.1, as RFC 9110 §7.8 lets a
//!   server ignore an upgrade (Envoy does the same). Clients such as
//!   `curl --http2` fall back to HTTP/1.1 silently; HTTP/2 without TLS
//!   reaches the proxy with prior knowledge instead.
//! - Any other protocol is refused: 400 `bad-request`, naming it. An opaque
//!   byte tunnel would escape every per-request limit the proxy applies.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue, UPGRADE};

use super::headers::is_upgrade;

/// The default of `--allowed-upgrades`.
pub const DEFAULT_ALLOWED_UPGRADES: &str = "websocket";

/// The protocol HTTP/2 cleartext upgrades name.
const H2C: &str = "h2c";
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// What a request's `Upgrade` offer comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Screened {
    /// Not an upgrade (any more): an ordinary request.
    Plain,
    /// An upgrade to allowed protocols only.
    Upgrade,
}

/// The protocols an `Upgrade` request may ask for, lower-cased.
#[derive(Clone, Debug)]
pub struct AllowedUpgrades(Vec<String>);

impl Default for AllowedUpgrades {
    fn default() -> Self {
        AllowedUpgrades::new([DEFAULT_ALLOWED_UPGRADES])
    }
}

impl AllowedUpgrades {
    /// Protocol names as `Upgrade` spells them (`websocket`), any case;
    /// `h2c` is never tunnelled, listed or not.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        AllowedUpgrades(
            names
                .into_iter()
                .map(|n| n.as_ref().trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty() && n != H2C)
                .collect(),
        )
    }

    fn allows(&self, protocol: &str) -> bool {
        self.0.iter().any(|a| a.eq_ignore_ascii_case(protocol))
    }

    /// Screens the `Upgrade` offer in `headers`: drops `h2c`, and refuses
    /// (with the reason) an offer of a protocol not on the list.
    pub fn screen(&self, headers: &mut HeaderMap) -> Result<Screened, String> {
        if !is_upgrade(headers) {
            return Ok(Screened::Plain);
        }
        let offered: Vec<String> = headers
            .get_all(UPGRADE)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("\u{fffd}").split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        // `name/version`: the name decides.
        let name = |token: &str| token.split('/').next().unwrap_or(token).trim().to_owned();
        let kept: Vec<&String> = offered
            .iter()
            .filter(|t| !name(t).eq_ignore_ascii_case(H2C))
            .collect();
        if let Some(refused) = kept.iter().find(|t| !self.allows(&name(t))) {
            return Err(format!(
                "upgrading to {refused:?} is not allowed (allowed: {})",
                self.0.join(", ")
            ));
        }
        if kept.len() != offered.len() {
            headers.remove(HTTP2_SETTINGS);
            headers.remove(UPGRADE);
            if !kept.is_empty() {
                let value = kept
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
                headers.insert(UPGRADE, value);
            }
        }
        if is_upgrade(headers) {
            Ok(Screened::Upgrade)
        } else {
            Ok(Screened::Plain)
        }
    }
}

#[cfg(test)]
mod tests {
    use http::header::CONNECTION;

    use super::*;

    fn offer(upgrade: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        h.insert(UPGRADE, HeaderValue::from_str(upgrade).expect("value"));
        h.insert(
            HTTP2_SETTINGS,
            HeaderValue::from_static("AAMAAABkAAQAoAAAAAIAAAAA"),
        );
        h
    }

    #[test]
    fn websocket_passes_h2c_is_dropped_and_others_are_refused() {
        let allowed = AllowedUpgrades::default();
        let mut h = offer("WebSocket");
        assert_eq!(allowed.screen(&mut h), Ok(Screened::Upgrade));
        assert_eq!(h[UPGRADE], "WebSocket");

        let mut h = offer("h2c");
        assert_eq!(allowed.screen(&mut h), Ok(Screened::Plain));
        assert!(!h.contains_key(UPGRADE) && !h.contains_key(HTTP2_SETTINGS));

        let err = allowed
            .screen(&mut offer("foo/1, websocket"))
            .expect_err("refused");
        assert!(err.contains("\"foo/1\""), "{err}");
        assert!(allowed.screen(&mut offer("h2c, tls/1.3")).is_err());

        // h2c beside an allowed protocol: only h2c goes.
        let mut h = offer("h2c, websocket");
        assert_eq!(allowed.screen(&mut h), Ok(Screened::Upgrade));
        assert_eq!(h[UPGRADE], "websocket");

        // Listing h2c does not let it through.
        let listed = AllowedUpgrades::new(["websocket", "H2C", "foo"]);
        assert_eq!(listed.screen(&mut offer("h2c")), Ok(Screened::Plain));
        assert_eq!(listed.screen(&mut offer("Foo")), Ok(Screened::Upgrade));
        assert_eq!(listed.screen(&mut HeaderMap::new()), Ok(Screened::Plain));
    }
}
