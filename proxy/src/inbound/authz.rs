//! Inbound authorization by workload identity (`spec.inbound.mtls` of the
//! local service's policy): [`decide`] is the whole rule, and
//! [`set_client_header`] the header discipline around it — the caller's
//! own `x-levee-client-id` is always removed, and the verified identity is
//! written in its place.

use http::{HeaderMap, HeaderValue};
use levee_proto::policy::{InboundMtls, MtlsMode, SpiffeId};

use crate::tls::{CLIENT_ID_HEADER, ClientIdentity};

/// Why a caller is refused (403 `unauthorized`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// A strict port, and the caller presented no verified certificate.
    NoIdentity,
    /// An allow-list, and the caller is not on it (or has no identity).
    NotAllowed,
}

impl Denied {
    /// The detail sent to the caller.
    pub fn detail(&self, client: Option<&SpiffeId>) -> String {
        match (self, client) {
            (Denied::NoIdentity, _) => "this port requires mTLS (spec.inbound.mtls.mode: strict): \
                 call it through a meshed proxy with a workload certificate"
                .to_owned(),
            (Denied::NotAllowed, Some(id)) => {
                format!("{id} is not in spec.inbound.mtls.allowedClients")
            }
            (Denied::NotAllowed, None) => {
                "spec.inbound.mtls.allowedClients admits only callers with a verified identity"
                    .to_owned()
            }
        }
    }
}

/// Whether `mtls` (absent: permissive, no list) admits `client`.
pub fn decide(mtls: Option<&InboundMtls>, client: Option<&SpiffeId>) -> Result<(), Denied> {
    let Some(mtls) = mtls else {
        return Ok(());
    };
    if mtls.mode() == MtlsMode::Strict && client.is_none() {
        return Err(Denied::NoIdentity);
    }
    match (&mtls.allowed_clients, client) {
        (None, _) => Ok(()),
        (Some(allowed), Some(id)) if allowed.contains(id) => Ok(()),
        (Some(_), _) => Err(Denied::NotAllowed),
    }
}

/// Replaces whatever `x-levee-client-id` the caller sent with the verified
/// identity of the connection (or nothing).
pub fn set_client_header(headers: &mut HeaderMap, client: Option<&ClientIdentity>) {
    // `remove` takes every value of the name, not only the first.
    headers.remove(CLIENT_ID_HEADER);
    if let Some(ClientIdentity(id)) = client
        && let Ok(value) = HeaderValue::from_str(id.as_str())
    {
        headers.insert(CLIENT_ID_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> SpiffeId {
        SpiffeId::parse(text).expect("id")
    }

    #[test]
    fn the_authorization_matrix() {
        let web = id("spiffe://td/ns/shop/sa/web");
        let batch = id("spiffe://td/ns/shop/sa/batch");
        let strict = InboundMtls {
            mode: Some(MtlsMode::Strict),
            allowed_clients: None,
        };
        let permissive_list = InboundMtls {
            mode: None,
            allowed_clients: Some(vec![web.clone()]),
        };
        let strict_list = InboundMtls {
            mode: Some(MtlsMode::Strict),
            allowed_clients: Some(vec![web.clone()]),
        };
        let permissive = InboundMtls::default();
        // (policy, caller, expected)
        type Case<'a> = (
            Option<&'a InboundMtls>,
            Option<&'a SpiffeId>,
            Result<(), Denied>,
        );
        let cases: [Case<'_>; 12] = [
            (None, None, Ok(())),
            (None, Some(&web), Ok(())),
            (Some(&permissive), None, Ok(())),
            (Some(&permissive), Some(&batch), Ok(())),
            (Some(&strict), None, Err(Denied::NoIdentity)),
            (Some(&strict), Some(&batch), Ok(())),
            (Some(&permissive_list), Some(&web), Ok(())),
            (
                Some(&permissive_list),
                Some(&batch),
                Err(Denied::NotAllowed),
            ),
            (Some(&permissive_list), None, Err(Denied::NotAllowed)),
            (Some(&strict_list), Some(&web), Ok(())),
            (Some(&strict_list), Some(&batch), Err(Denied::NotAllowed)),
            (Some(&strict_list), None, Err(Denied::NoIdentity)),
        ];
        for (policy, caller, expected) in cases {
            assert_eq!(decide(policy, caller), expected, "{policy:?} {caller:?}");
        }
    }

    #[test]
    fn the_callers_header_never_survives() {
        let mut headers = HeaderMap::new();
        headers.append(
            CLIENT_ID_HEADER,
            HeaderValue::from_static("spiffe://td/forged"),
        );
        headers.append(
            CLIENT_ID_HEADER,
            HeaderValue::from_static("spiffe://td/forged2"),
        );
        set_client_header(&mut headers, None);
        assert!(headers.get(CLIENT_ID_HEADER).is_none());

        headers.append(
            CLIENT_ID_HEADER,
            HeaderValue::from_static("spiffe://td/forged"),
        );
        let verified = ClientIdentity(id("spiffe://td/ns/shop/sa/web"));
        set_client_header(&mut headers, Some(&verified));
        let values: Vec<_> = headers.get_all(CLIENT_ID_HEADER).iter().collect();
        assert_eq!(values, ["spiffe://td/ns/shop/sa/web"]);
    }
}
