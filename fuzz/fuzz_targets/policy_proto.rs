//! Protobuf policy messages (as the control plane's admin API and the
//! Discovery stream carry them) → prost decode → `TryFrom` (validation) →
//! (accepted) the same checks as YAML documents.
#![no_main]

use levee_proto::policy::{Document, ResiliencePolicy, ServiceEndpoints};
use levee_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let doc = match which % 3 {
        0 => pb::Document::decode(bytes)
            .ok()
            .and_then(|m| Document::try_from(m).ok()),
        1 => pb::ResiliencePolicy::decode(bytes)
            .ok()
            .and_then(|m| ResiliencePolicy::try_from(m).ok())
            .map(Document::Policy),
        _ => pb::ServiceEndpoints::decode(bytes)
            .ok()
            .and_then(|m| ServiceEndpoints::try_from(m).ok())
            .map(Document::Endpoints),
    };
    if let Some(doc) = doc {
        levee_fuzz::policy::accepted(&[doc]);
    }
});
