//! Tenant B can neither read nor subscribe to nor write into tenant A's
//! conversation by any path, and cannot even learn that it exists.
mod support;

use chatstream_schemas::pb::gateway as pb;
use chatstream_schemas::ws::{ClientFrame, ServerFrame};
use chatstream_test_support::grpc;
use support::{Platform, authed, send_frame};

#[tokio::test]
async fn another_tenant_cannot_reach_a_conversation_by_any_path() {
    let platform = Platform::start(&[]).await;
    let mut alice = platform.ws(platform.key("acme")).await;
    let (_, _, conversation_id) = alice.send_message(None, "acme secret").await;
    let mut eve = platform.ws(platform.key("globex")).await;

    // WebSocket: subscribe, subscribe from a position, send.
    for after_position in [None, Some(0)] {
        eve.send(&ClientFrame::Subscribe {
            request_id: None,
            conversation_id: conversation_id.clone(),
            after_position,
        })
        .await;
        eve.expect_error("conversation_not_found").await;
    }
    eve.send(&send_frame(Some(&conversation_id), "intrusion"))
        .await;
    eve.expect_error("conversation_not_found").await;

    // gRPC: history, send, Converse subscribe.
    let key = platform.key("globex");
    let mut client = platform.grpc().await;
    let history = grpc::get_conversation(&mut client, key, &conversation_id).await;
    assert_eq!(history.unwrap_err().code(), tonic::Code::NotFound);
    let send = grpc::send_message(&mut client, key, &conversation_id, "intrusion").await;
    assert_eq!(send.unwrap_err().code(), tonic::Code::NotFound);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::ClientFrame {
        frame: Some(pb::client_frame::Frame::Subscribe(pb::SubscribeRequest {
            request_id: String::new(),
            conversation_id: conversation_id.clone(),
            after_position: None,
        })),
    })
    .await
    .unwrap();
    let mut stream = client
        .converse(authed(tokio_stream::wrappers::ReceiverStream::new(rx), key))
        .await
        .unwrap()
        .into_inner();
    let frame = stream.message().await.unwrap().unwrap().frame.unwrap();
    assert!(
        matches!(frame, pb::server_frame::Frame::Error(e) if e.code == "conversation_not_found")
    );

    // Acme's history holds nothing from globex, and acme still reads it.
    let history = grpc::get_conversation(&mut client, platform.key("acme"), &conversation_id)
        .await
        .unwrap();
    assert!(
        history
            .events
            .iter()
            .all(|e| e.event.as_ref().unwrap().tenant_id == "acme")
    );
    assert!(!history.events.is_empty());
}

#[tokio::test]
async fn client_message_ids_are_scoped_to_their_tenant() {
    let platform = Platform::start(&[]).await;
    let send = |conversation_id: Option<String>| ClientFrame::Send {
        request_id: None,
        conversation_id,
        client_message_id: Some("shared-id".into()),
        text: "hello".into(),
    };
    let mut alice = platform.ws(platform.key("acme")).await;
    alice.send(&send(None)).await;
    let ServerFrame::Ack {
        event_id: alice_event,
        conversation_id: alice_conversation,
        duplicate: false,
        ..
    } = alice.next_frame().await
    else {
        panic!("first send is acked fresh")
    };

    let mut eve = platform.ws(platform.key("globex")).await;
    eve.send(&send(None)).await;
    match eve.next_frame().await {
        ServerFrame::Ack {
            event_id,
            conversation_id,
            duplicate,
            ..
        } => {
            assert!(!duplicate, "another tenant's id is not a duplicate");
            assert_ne!(event_id, alice_event);
            assert_ne!(
                conversation_id, alice_conversation,
                "and never reveals acme's conversation"
            );
        }
        other => panic!("{other:?}"),
    }

    // Acme's own retry is a duplicate of its first send.
    alice.send(&send(Some(alice_conversation.clone()))).await;
    match alice.next_frame().await {
        ServerFrame::Ack {
            event_id,
            duplicate,
            ..
        } => {
            assert!(duplicate);
            assert_eq!(event_id, alice_event);
        }
        other => panic!("{other:?}"),
    }
}
