//! Discovery stream messages → prost decode → what each side does with
//! them: the proxy applies `ServiceUpdate`s (conversion, validation, its own
//! loop check) and builds a snapshot; the control plane reads the service
//! references of `Hello`/`Subscribe`/`Unsubscribe`.
#![no_main]

use levee_proto::policy::ServiceKey;
use levee_proto::v1 as pb;
use levee_proxy::discovery::LocalChecks;
use levee_proxy::discovery::services::Services;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let Ok(response) = pb::WatchResponse::decode(bytes) else {
            return;
        };
        let Some(pb::watch_response::Kind::Update(update)) = response.kind else {
            return;
        };
        let checks = LocalChecks {
            outbound: Some("127.0.0.1:4140".parse().expect("an address")),
        };
        let mut services = Services::default();
        // Twice: the second time is the "already running this version" path.
        for _ in 0..2 {
            if let Ok((key, _)) = services.apply(&update, checks) {
                let state = services.get(&key).expect("an applied update is stored");
                if let Some(policy) = &state.policy {
                    levee_fuzz::policy::compile(policy);
                }
            }
        }
        let _ = services.snapshot("fuzz".into());
    } else {
        let Ok(request) = pb::WatchRequest::decode(bytes) else {
            return;
        };
        let refs = match request.kind {
            Some(pb::watch_request::Kind::Hello(h)) => h.subscriptions,
            Some(pb::watch_request::Kind::Subscribe(s)) => s.services,
            Some(pb::watch_request::Kind::Unsubscribe(u)) => u.services,
            _ => Vec::new(),
        };
        for service in &refs {
            let _ = ServiceKey::try_from(service);
        }
    }
});
