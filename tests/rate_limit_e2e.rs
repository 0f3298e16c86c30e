//! Per-tenant rate limits: the tenant over its limit gets a clear, retryable
//! error with when to retry (WebSocket error frame, gRPC RESOURCE_EXHAUSTED
//! with `retry-after`), other tenants are not affected, and the refusals
//! are counted in the tenant's analytics.
mod support;

use chatstream_schemas::pb::gateway as pb;
use chatstream_schemas::ws::{ClientFrame, ServerFrame};
use support::analytics::{analytics_json, projected_usage, total};
use support::{Platform, authed};

fn send(text: &str) -> ClientFrame {
    ClientFrame::Send {
        request_id: Some(text.into()),
        conversation_id: None,
        client_message_id: None,
        text: text.into(),
    }
}

#[tokio::test]
async fn a_tenant_over_its_rate_is_told_when_to_retry_and_others_are_not_affected() {
    let platform = Platform::start(&[
        ("CHATSTREAM_REQUESTS_PER_SECOND", "2"),
        ("CHATSTREAM_BURST", "3"),
    ])
    .await;
    let mut acme = platform.ws(platform.key("acme")).await;

    // The burst passes; the next request inside the same second does not.
    // (A send without a conversation opens one: that is one request, not two.)
    let mut limited = None;
    for i in 0..6 {
        acme.send(&send(&format!("m{i}"))).await;
        match acme.next_frame().await {
            ServerFrame::Ack { .. } => {}
            ServerFrame::Error {
                code,
                retry_after_ms,
                request_id,
                ..
            } => {
                assert_eq!(code, "rate_limited");
                assert_eq!(request_id.as_deref(), Some(format!("m{i}").as_str()));
                limited = Some((i, retry_after_ms.expect("says when to retry")));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let (first_limited, retry_after_ms) = limited.expect("the limit was hit");
    assert!(
        (3..=4).contains(&first_limited),
        "limited after the burst of 3, at request {first_limited}"
    );
    assert!(
        retry_after_ms > 0 && retry_after_ms <= 500,
        "retry after {retry_after_ms} ms at 2/s"
    );

    // gRPC says the same with its own status and a Retry-After header.
    let mut client = platform.grpc().await;
    let status = client
        .send_message(authed(
            pb::SendMessageRequest {
                text: "grpc".into(),
                ..Default::default()
            },
            platform.key("acme"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.metadata().get("retry-after").is_some(), "{status:?}");

    // Both refusals reach the log (one `requests.refused` event a second
    // per tenant and reason) and acme's analytics; globex's has none.
    let acme_usage = projected_usage(&platform, "acme", |usage| {
        total(usage, "", "request_refusals") >= 2
    })
    .await;
    assert_eq!(
        total(&acme_usage, "", "request_refusals"),
        2,
        "{acme_usage}"
    );

    // Another tenant is unaffected.
    let mut globex = platform.ws(platform.key("globex")).await;
    globex.send(&send("independent")).await;
    assert!(matches!(globex.next_frame().await, ServerFrame::Ack { .. }));

    // After waiting as told, acme may send again.
    tokio::time::sleep(std::time::Duration::from_millis(retry_after_ms + 600)).await;
    acme.send(&send("later")).await;
    assert!(matches!(acme.next_frame().await, ServerFrame::Ack { .. }));

    let (_, globex_usage) = analytics_json(&platform, "globex", "usage").await;
    assert_eq!(
        total(&globex_usage, "", "request_refusals"),
        0,
        "{globex_usage}"
    );
}
