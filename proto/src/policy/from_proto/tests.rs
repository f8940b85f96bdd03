//! Rust → proto → Rust round trips, and proto → Rust validation.

use prost::Message;

use crate::policy::{Document, ResiliencePolicy, ServiceEndpoints, parse_documents};
use crate::v1 as pb;

fn design_docs() -> Vec<Document> {
    parse_documents(super::super::parse::tests::DESIGN_EXAMPLE).expect("design example")
}

fn design_policy() -> pb::ResiliencePolicy {
    match &design_docs()[0] {
        Document::Policy(p) => p.into(),
        Document::Endpoints(_) => panic!("expected a policy"),
    }
}

#[test]
fn documents_round_trip_through_protobuf_bytes() {
    for doc in design_docs() {
        let bytes = pb::Document::from(&doc).encode_to_vec();
        let decoded = pb::Document::decode(bytes.as_slice()).expect("decode");
        let back = Document::try_from(decoded).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, doc);
    }
}

#[test]
fn minimal_policy_round_trips() {
    let docs = parse_documents(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: a}\n\
         spec: {target: {service: a}, outbound: {retry: {on: []}, timeouts: {perTry: 1.5ms}}}\n",
    )
    .expect("valid");
    let Document::Policy(p) = &docs[0] else {
        panic!("policy")
    };
    let back = ResiliencePolicy::try_from(pb::ResiliencePolicy::from(p)).expect("round trip");
    assert_eq!(&back, p);
    // `on: []` stays an explicit empty list, distinct from "not set".
    assert_eq!(back.spec.outbound.retry.and_then(|r| r.on), Some(vec![]));
}

#[test]
fn proto_input_is_validated_with_field_paths() {
    let mut m = design_policy();
    let spec = m.spec.as_mut().expect("spec");
    let out = spec.outbound.as_mut().expect("outbound");
    let retry = out.retry.as_mut().expect("retry");
    retry
        .on
        .as_mut()
        .expect("on")
        .items
        .push("sometimes".into());
    retry
        .grpc_on
        .as_mut()
        .expect("grpcOn")
        .items
        .push("nope".into());
    out.timeouts.as_mut().expect("timeouts").idle = Some(prost_types::Duration {
        seconds: -1,
        nanos: 0,
    });
    let err = ResiliencePolicy::try_from(m).expect_err("invalid");
    let paths: Vec<&str> = err.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.outbound.timeouts.idle",
            "spec.outbound.retry.on[5]",
            "spec.outbound.retry.grpcOn[1]"
        ],
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("ResiliencePolicy shop/payments: "),
        "{err}"
    );
}

#[test]
fn semantic_rules_apply_to_proto_too() {
    let mut m = design_policy();
    let spec = m.spec.as_mut().expect("spec");
    spec.target.as_mut().expect("target").port = Some(70_000);
    let err = ResiliencePolicy::try_from(m).expect_err("port");
    assert_eq!(err.0[0].path, "spec.target.port");

    let mut m = design_policy();
    let t = m
        .spec
        .as_mut()
        .and_then(|s| s.outbound.as_mut())
        .and_then(|o| o.timeouts.as_mut())
        .expect("timeouts");
    t.per_try = Some(prost_types::Duration {
        seconds: 3,
        nanos: 0,
    });
    let err = ResiliencePolicy::try_from(m).expect_err("perTry > request");
    assert_eq!(err.0[0].path, "spec.outbound.timeouts.perTry", "{err}");
}

#[test]
fn missing_parts_are_reported() {
    let err = ResiliencePolicy::try_from(pb::ResiliencePolicy::default()).expect_err("empty");
    let paths: Vec<&str> = err.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["metadata", "spec", "spec.target"]);
    let err = Document::try_from(pb::Document::default()).expect_err("no kind");
    assert_eq!(err.0[0].path, "kind");
}

#[test]
fn endpoints_addresses_are_parsed_and_checked() {
    let m = pb::ServiceEndpoints {
        metadata: Some(pb::ObjectMeta {
            name: "payments".into(),
            namespace: None,
        }),
        spec: Some(pb::EndpointsSpec {
            service: "payments".into(),
            port: 8080,
            addresses: vec!["127.0.0.1:9001".into(), "[::1]:9002".into()],
            virtual_ips: vec!["10.96.0.10".into(), "fd00:96::10".into()],
            app_protocol: "kubernetes.io/h2c".into(),
            identity: "spiffe://levee.local/ns/default/sa/payments".into(),
        }),
    };
    let e = ServiceEndpoints::try_from(m.clone()).expect("valid");
    assert_eq!(pb::ServiceEndpoints::from(&e), m);
    let mut bad = m;
    if let Some(s) = bad.spec.as_mut() {
        s.addresses.push("localhost:80".into());
        s.virtual_ips.push("10.96.0.300".into());
        s.app_protocol = "h3".into();
        s.port = 0;
    }
    let err = ServiceEndpoints::try_from(bad).expect_err("invalid");
    let paths: Vec<&str> = err.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.addresses[2]",
            "spec.virtualIPs[2]",
            "spec.appProtocol"
        ],
        "{err}"
    );
}

#[test]
fn identities_and_inbound_mtls_round_trip_and_are_checked() {
    let doc = "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
               metadata: {name: payments, namespace: shop}\n\
               spec: {target: {service: payments, port: 8080}, inbound: {mtls: {mode: strict, \
               allowedClients: [spiffe://levee.local/ns/shop/sa/web]}}}\n";
    let Document::Policy(policy) = crate::policy::parse_documents(doc)
        .expect("valid")
        .remove(0)
    else {
        panic!("a policy")
    };
    let wire = pb::ResiliencePolicy::from(&policy);
    assert_eq!(
        ResiliencePolicy::try_from(wire.clone()).expect("back"),
        policy
    );
    let mut bad = wire;
    if let Some(m) = bad
        .spec
        .as_mut()
        .and_then(|s| s.inbound.as_mut())
        .and_then(|i| i.mtls.as_mut())
    {
        m.mode = Some("lenient".into());
        if let Some(list) = m.allowed_clients.as_mut() {
            list.items.push("spiffe://levee.local".into());
        }
    }
    let err = ResiliencePolicy::try_from(bad).expect_err("invalid");
    let paths: Vec<&str> = err.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.inbound.mtls.mode",
            "spec.inbound.mtls.allowedClients[1]"
        ],
        "{err}"
    );
}

#[test]
fn an_endpoint_identity_that_is_not_a_spiffe_id_is_refused() {
    let m = pb::ServiceEndpoints {
        metadata: Some(pb::ObjectMeta {
            name: "payments".into(),
            namespace: None,
        }),
        spec: Some(pb::EndpointsSpec {
            service: "payments".into(),
            port: 8080,
            addresses: vec!["127.0.0.1:9001".into()],
            identity: "payments".into(),
            ..Default::default()
        }),
    };
    let err = ServiceEndpoints::try_from(m).expect_err("invalid");
    assert_eq!(err.0[0].path, "spec.identity", "{err}");
}
