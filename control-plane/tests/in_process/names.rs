//! Bad names are refused the same way wherever they arrive: a Discovery
//! hello or Subscribe, a Get/Delete reference (also through leveectl), an
//! Apply; each with the field path.

use std::time::Duration;

use crate::common::{TestControlPlane, hello_request, service};
use levee_proto::v1;
use levee_proto::v1::discovery_client::DiscoveryClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// The error that ends a Watch stream opened with `first` then `then`.
async fn watch_refusal(
    cp: &TestControlPlane,
    first: v1::Hello,
    then: Vec<v1::WatchRequest>,
) -> tonic::Status {
    let mut client = DiscoveryClient::connect(cp.url()).await.expect("connect");
    let (tx, rx) = mpsc::channel(8);
    tx.send(hello_request(first)).await.expect("hello");
    for request in then {
        tx.send(request).await.expect("request");
    }
    let mut responses = match client.watch(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return status,
    };
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .expect("an answer within 5 s");
        match next {
            Err(status) => return status,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error"),
        }
    }
}

#[tokio::test]
async fn bad_names_are_refused_with_their_field_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(&dir.path().join("data"), &[]).await;

    let hello = v1::Hello {
        service: "Web".into(),
        namespace: "shop".into(),
        subscriptions: vec![service("payments", "shop", 8080)],
        ..Default::default()
    };
    let status = watch_refusal(&cp, hello, Vec::new()).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("hello.service: \"Web\" is not a service name"),
        "{status:?}"
    );

    let hello = v1::Hello {
        service: "web".into(),
        namespace: "shop".into(),
        ..Default::default()
    };
    let subscribe = v1::WatchRequest {
        kind: Some(v1::watch_request::Kind::Subscribe(v1::Subscribe {
            services: vec![
                service("payments", "shop", 8080),
                service("a.b", "shop", 80),
            ],
            ..Default::default()
        })),
    };
    let status = watch_refusal(&cp, hello, vec![subscribe]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("subscribe.services[1].name"),
        "{status:?}"
    );

    let mut admin = cp.admin(None).await;
    let status = admin
        .get(v1::GetRequest {
            r#ref: Some(v1::DocumentRef {
                kind: "ResiliencePolicy".into(),
                namespace: "Shop".into(),
                name: "payments".into(),
            }),
        })
        .await
        .expect_err("a bad namespace");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("ref.namespace"), "{status:?}");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_leveectl"))
        .args([
            "--server",
            &cp.url(),
            "delete",
            "policy",
            "Bad_Name",
            "-n",
            "shop",
        ])
        .env_remove("LEVEE_TOKEN")
        .env_remove("LEVEE_SERVER")
        .output()
        .await
        .expect("leveectl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("ref.name: \"Bad_Name\" is not a valid name"),
        "{stderr}"
    );
    drop(admin);
    cp.stop().await;
}
