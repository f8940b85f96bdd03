//! The election state machine driven through the recorded Lease exchanges:
//! each request it makes is compared with the recorded request (method,
//! path, JSON body), and the recorded response is what it gets back.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use serde_json::Value;
use tokio::time::Instant;

use super::mock::fixture;
use crate::kubernetes::lease::{Answer, Elector, LEASE_NAMESPACE, Step};

const X2KQP: &str = "levee-control-plane-7d4b9c6f8-x2kqp";
const M9V4T: &str = "levee-control-plane-7d4b9c6f8-m9v4t";

fn json(name: &str) -> Value {
    serde_json::from_slice(&fixture(&format!("lease/{name}"))).expect("fixture JSON")
}

fn lease(name: &str) -> Lease {
    serde_json::from_value(json(name)).expect("a Lease")
}

fn at(text: &str) -> Timestamp {
    text.parse().expect("a timestamp")
}

fn body(step: &Step) -> Value {
    match step {
        Step::Create(l) | Step::Replace(l) => serde_json::to_value(l).expect("serialises"),
        other => panic!("expected a write, got {other:?}"),
    }
}

#[test]
fn first_replica_creates_then_renews() {
    let t0 = Instant::now();
    let mut elector = Elector::new(X2KQP);
    assert!(elector.needs_read());
    assert_eq!(
        elector.next(t0, at("2026-11-29T21:41:49.612634Z")),
        Step::Get
    );
    // 01: GET → 404.
    elector.on_read(Answer::NotFound, t0);
    let create = elector.next(t0, at("2026-11-29T21:41:49.612634Z"));
    assert!(matches!(create, Step::Create(_)));
    assert_eq!(body(&create), json("02-create.request.json"));
    assert!(!elector.is_leader(t0));
    // 02: 201.
    elector.on_write(
        Answer::Lease(Box::new(lease("02-create.response.json"))),
        t0,
    );
    assert!(elector.is_leader(t0));
    // Renewal: no GET, a PUT with the resourceVersion of the create.
    let t1 = t0 + Duration::from_secs(2);
    assert!(!elector.needs_read());
    let renew = elector.next(t1, at("2026-11-29T21:41:51.965314Z"));
    assert!(matches!(renew, Step::Replace(_)));
    assert_eq!(body(&renew), json("03-renew-update.request.json"));
    elector.on_write(
        Answer::Lease(Box::new(lease("03-renew-update.response.json"))),
        t1,
    );
    assert!(elector.is_leader(t1));
    // Renewals that keep failing end leadership before the lease expires.
    elector.on_write(
        Answer::Failed("timeout".into()),
        t1 + Duration::from_secs(2),
    );
    assert!(!elector.is_leader(t1 + Duration::from_secs(13)));
}

#[test]
fn a_create_race_loses_with_already_exists_and_reads_again() {
    let t0 = Instant::now();
    let mut elector = Elector::new(X2KQP);
    elector.on_read(Answer::NotFound, t0);
    let create = elector.next(t0, at("2026-11-29T21:41:49.612634Z"));
    assert_eq!(
        body(&create),
        json("05-create-already-exists-conflict.request.json")
    );
    // 05: 409 AlreadyExists.
    elector.on_write(Answer::Conflict, t0);
    assert!(!elector.is_leader(t0));
    assert_eq!(elector.next(t0, at("2026-11-29T21:41:49.7Z")), Step::Get);
}

#[test]
fn takeover_waits_for_expiry_and_a_stale_one_conflicts() {
    // m9v4t read the lease x2kqp created (rv 329) and saw it unchanged
    // for longer than 15 s on its own clock: it tries to take over.
    let t0 = Instant::now();
    let mut elector = Elector::new(M9V4T);
    elector.on_read(
        Answer::Lease(Box::new(lease("02-create.response.json"))),
        t0,
    );
    assert_eq!(
        elector.next(
            t0 + Duration::from_secs(14),
            at("2026-11-29T21:41:53.334892Z")
        ),
        Step::Wait,
        "a live lease is not taken"
    );
    let stale = elector.next(
        t0 + Duration::from_secs(15),
        at("2026-11-29T21:41:53.334892Z"),
    );
    assert_eq!(
        body(&stale),
        json("04-takeover-stale-resourceversion-conflict.request.json")
    );
    // 04: 409 Conflict (x2kqp renewed meanwhile): not the leader, read again.
    let t1 = t0 + Duration::from_secs(15);
    elector.on_write(Answer::Conflict, t1);
    assert!(!elector.is_leader(t1));
    assert!(elector.needs_read());
    // 07: the current lease (rv 330), just renewed: wait.
    elector.on_read(Answer::Lease(Box::new(lease("07-get.response.json"))), t1);
    assert_eq!(elector.next(t1, at("2026-11-29T21:41:53.4Z")), Step::Wait);
    // The same record read again 15 s later (no renewal since): expired.
    let t2 = t1 + Duration::from_secs(10);
    elector.on_read(Answer::Lease(Box::new(lease("07-get.response.json"))), t2);
    assert_eq!(elector.next(t2, at("2026-11-29T21:42:03Z")), Step::Wait);
    let t3 = t1 + Duration::from_secs(18);
    elector.on_read(Answer::Lease(Box::new(lease("07-get.response.json"))), t3);
    let takeover = elector.next(t3, at("2026-11-29T21:42:11.583722Z"));
    assert_eq!(
        body(&takeover),
        json("08-takeover-after-expiry.request.json")
    );
    elector.on_write(
        Answer::Lease(Box::new(lease("08-takeover-after-expiry.response.json"))),
        t3,
    );
    assert!(elector.is_leader(t3));
}

#[tokio::test]
async fn the_kube_calls_hit_the_recorded_paths() {
    use super::mock::MockApi;
    use crate::kubernetes::lease::round;
    let (client, api) = MockApi::client();
    api.list(
        "leases",
        http::StatusCode::NOT_FOUND,
        fixture("lease/01-get-not-found.response.json"),
    );
    api.list(
        "leases",
        http::StatusCode::CREATED,
        fixture("lease/02-create.response.json"),
    );
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let mut elector = Elector::new(X2KQP);
    round(&mut elector, &leases).await;
    let seen = api.seen();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].uri,
        "/apis/coordination.k8s.io/v1/namespaces/levee-system/leases/levee-control-plane"
    );
    assert_eq!(seen[1].method, "POST");
    assert!(
        seen[1]
            .uri
            .starts_with("/apis/coordination.k8s.io/v1/namespaces/levee-system/leases"),
        "{}",
        seen[1].uri
    );
    let sent: Value = serde_json::from_slice(&seen[1].body).expect("JSON body");
    assert_eq!(sent["spec"]["holderIdentity"], X2KQP);
    assert_eq!(sent["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(sent["metadata"]["name"], "levee-control-plane");
    assert!(elector.is_leader(Instant::now()));
}
