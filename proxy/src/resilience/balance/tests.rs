use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use http::Response;
use tower::{ServiceExt, service_fn};

use super::*;
use crate::errors::ProxyError;
use crate::resilience::call::{AttemptDeadline, CallAttempts, CallContext};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A gate that ejects a fixed set and remembers what it was told.
#[derive(Default)]
struct TestGate {
    ejected: Mutex<HashSet<SocketAddr>>,
    outcomes: Mutex<Vec<(SocketAddr, Outcome)>>,
}

impl EndpointGate for TestGate {
    fn is_available(&self, endpoint: EndpointRef) -> bool {
        !self.ejected.lock().expect("lock").contains(&endpoint.addr)
    }
    fn begin(&self, endpoint: EndpointRef) -> Option<Pass> {
        self.is_available(endpoint).then_some(Pass::default())
    }
    fn record(&self, endpoint: EndpointRef, _: Pass, outcome: &Outcome, _: Duration, _: Instant) {
        self.outcomes
            .lock()
            .expect("lock")
            .push((endpoint.addr, *outcome));
    }
    fn set_endpoints(&self, _: &[SocketAddr]) {}
}

fn balancer(ports: &[u16]) -> (Arc<Balancer>, Arc<TestGate>) {
    let gate = Arc::new(TestGate::default());
    let b = Arc::new(Balancer::new("svc".into(), gate.clone()));
    let addrs: Arc<[SocketAddr]> = ports.iter().map(|p| addr(*p)).collect();
    b.set_endpoints(&addrs);
    (b, gate)
}

/// Answers with the chosen endpoint's port after a per-port delay.
fn upstream(
    delays: HashMap<u16, Duration>,
) -> impl Service<Request<()>, Response = Response<u16>, Error = BoxError> + Clone {
    service_fn(move |req: Request<()>| {
        let addr = CallContext::endpoint(&req).expect("endpoint chosen");
        let delay = delays.get(&addr.port()).copied().unwrap_or_default();
        async move {
            tokio::time::sleep(delay).await;
            Ok::<_, BoxError>(Response::new(addr.port()))
        }
    })
}

async fn send(
    b: &Arc<Balancer>,
    svc: impl Service<Request<()>, Response = Response<u16>, Error = BoxError>,
    req: Request<()>,
) -> Result<u16, BoxError> {
    let response = Balance::new(svc, b.clone()).oneshot(req).await?;
    Ok(*response.body())
}

#[tokio::test(start_paused = true)]
async fn spreads_over_endpoints_and_skips_ejected_ones() {
    let (b, gate) = balancer(&[1, 2, 3]);
    let mut seen = HashSet::new();
    for _ in 0..100 {
        seen.insert(
            send(&b, upstream(HashMap::new()), Request::new(()))
                .await
                .expect("ok"),
        );
    }
    assert_eq!(seen.len(), 3);
    gate.ejected.lock().expect("lock").insert(addr(2));
    for _ in 0..100 {
        assert_ne!(
            send(&b, upstream(HashMap::new()), Request::new(()))
                .await
                .expect("ok"),
            2
        );
    }
    // Everything ejected: all are candidates again rather than failing.
    gate.ejected
        .lock()
        .expect("lock")
        .extend([addr(1), addr(3)]);
    assert!(
        send(&b, upstream(HashMap::new()), Request::new(()))
            .await
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_endpoint_gets_little_traffic() {
    let (b, _) = balancer(&[1, 2]);
    let delays = HashMap::from([
        (1, Duration::from_millis(200)),
        (2, Duration::from_millis(2)),
    ]);
    let mut to_slow = 0;
    for _ in 0..200 {
        if send(&b, upstream(delays.clone()), Request::new(()))
            .await
            .expect("ok")
            == 1
        {
            to_slow += 1;
        }
    }
    assert!(to_slow < 20, "{to_slow} of 200 went to the slow endpoint");
}

#[tokio::test(start_paused = true)]
async fn a_retry_avoids_the_endpoint_the_last_attempt_used() {
    let (b, _) = balancer(&[1, 2, 3]);
    // Also through the path that skips the gate while nothing is ejected.
    let open = Arc::new(Balancer::new("svc".into(), Arc::new(OpenGate)));
    open.set_endpoints(&[1, 2, 3].map(addr).into());
    for b in [b, open] {
        let attempts = CallAttempts::default();
        let mut seen = HashSet::new();
        for n in 1..=50 {
            let mut req = Request::new(());
            CallContext::of(&mut req).attempts = Some(attempts.clone());
            let before = attempts.last();
            let port = send(&b, upstream(HashMap::new()), req).await.expect("ok");
            assert_ne!(Some(addr(port)), before);
            assert_eq!(attempts.last(), Some(addr(port)));
            assert_eq!(attempts.count(), n, "one record per attempt");
            seen.insert(port);
        }
        assert_eq!(seen.len(), 3, "still spread over every endpoint");
    }
    // With a single endpoint, it is used again.
    let (one, _) = balancer(&[7]);
    let attempts = CallAttempts::default();
    let mut req = Request::new(());
    CallContext::of(&mut req).attempts = Some(attempts.clone());
    attempts.record(addr(7));
    assert_eq!(
        send(&one, upstream(HashMap::new()), req).await.expect("ok"),
        7
    );
}

#[tokio::test(start_paused = true)]
async fn no_endpoints_is_a_no_endpoints_error() {
    let (b, _) = balancer(&[]);
    let err = send(&b, upstream(HashMap::new()), Request::new(()))
        .await
        .expect_err("none");
    let err = err.downcast::<ProxyError>().expect("proxy error");
    assert_eq!(err.kind, ErrorKind::NoEndpoints);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_set_change_lets_requests_in_flight_finish() {
    let (b, gate) = balancer(&[1]);
    let delays = HashMap::from([(1, Duration::from_secs(1))]);
    let in_flight = send(&b, upstream(delays), Request::new(()));
    let change = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let next: Arc<[SocketAddr]> = Arc::from([addr(2)]);
        b.set_endpoints(&next);
        assert_eq!(b.addrs(), [addr(2)]);
    };
    let (finished, ()) = tokio::join!(in_flight, change);
    assert_eq!(finished.expect("finished"), 1);
    assert_eq!(
        send(&b, upstream(HashMap::new()), Request::new(()))
            .await
            .expect("ok"),
        2
    );
    assert_eq!(
        gate.outcomes.lock().expect("lock")[0],
        (addr(1), Outcome::Success)
    );
}

#[tokio::test(start_paused = true)]
async fn a_drop_at_the_attempt_deadline_is_a_timeout_and_before_it_a_cancellation() {
    let (b, gate) = balancer(&[1]);
    let hang = HashMap::from([(1, Duration::from_secs(3600))]);
    let mut req = Request::new(());
    CallContext::of(&mut req).attempt_deadline =
        Some(AttemptDeadline(Instant::now() + Duration::from_millis(100)));
    let call = send(&b, upstream(hang.clone()), req);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), call)
            .await
            .is_err()
    );
    let call = send(&b, upstream(hang), Request::new(()));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), call)
            .await
            .is_err()
    );
    let outcomes = gate.outcomes.lock().expect("lock");
    assert_eq!(outcomes[0].1, Outcome::Error(ErrorKind::Timeout));
    assert_eq!(outcomes[1].1, Outcome::Cancelled);
}

/// Each attempt's outcome is classified once, here, and noted in the
/// call's record for the retry layer and the service breaker: the same
/// outcome endpoint health got, that of the response's head.
#[tokio::test(start_paused = true)]
async fn each_attempts_outcome_is_noted_in_the_calls_record() {
    use crate::resilience::classify::classify_response;
    let (b, gate) = balancer(&[1]);
    let heads: [(u16, Option<&'static str>); 3] = [(503, None), (200, Some("14")), (200, None)];
    for (status, grpc) in heads {
        let svc = service_fn(move |_req: Request<()>| async move {
            let mut response = Response::new(0u16);
            *response.status_mut() = http::StatusCode::from_u16(status).map_err(BoxError::from)?;
            if let Some(code) = grpc {
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static(code));
            }
            Ok::<_, BoxError>(response)
        });
        let mut req = Request::new(());
        let attempts = CallAttempts::of(&mut req);
        let response = Balance::new(svc, b.clone())
            .oneshot(req)
            .await
            .expect("response");
        let noted = attempts.outcome().expect("outcome noted");
        assert_eq!(noted, classify_response(&response), "{status} {grpc:?}");
        let told = gate.outcomes.lock().expect("lock").last().map(|o| o.1);
        assert_eq!(Some(noted), told);
    }
    let seen: Vec<_> = gate
        .outcomes
        .lock()
        .expect("lock")
        .iter()
        .map(|o| o.1)
        .collect();
    assert_eq!(
        seen,
        [
            Outcome::HttpStatus(503),
            Outcome::Grpc(levee_proto::policy::GrpcStatus::Unavailable),
            Outcome::Success
        ]
    );
}
