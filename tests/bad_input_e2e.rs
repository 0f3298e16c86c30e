//! Every kind of bad input gets a clear error on every way in, and the
//! connection and the process survive where that makes sense.
mod support;

use chatstream_schemas::pb::gateway as pb;
use chatstream_schemas::ws::{ClientFrame, ServerFrame};
use chatstream_test_support::grpc;
use support::{Platform, authed, http_request, send_frame};
use tokio_tungstenite::tungstenite::Message;

const SMALL_LIMIT: &str = "1024";

#[tokio::test]
async fn websocket_rejects_bad_frames_and_keeps_the_connection() {
    let platform = Platform::start(&[("CHATSTREAM_MAX_MESSAGE_BYTES", SMALL_LIMIT)]).await;
    let mut ws = platform.ws(platform.key("acme")).await;

    ws.send_text("{not json").await;
    ws.expect_error("invalid_json").await;
    ws.send_text(r#"{"type":"launch_rockets","request_id":"x"}"#)
        .await;
    ws.send_text(r#"[1,2,3]"#).await;
    ws.send_text(r#"{"type":"send","request_id":"no-text"}"#)
        .await;
    ws.send_text(r#"{"type":"send","text":"hi","surprise":true}"#)
        .await;
    ws.send_text(r#"{"type":"send","text":"   "}"#).await;
    match ws.next_frame().await {
        ServerFrame::Error {
            code, request_id, ..
        } => {
            assert_eq!(code, "unknown_type");
            assert_eq!(
                request_id.as_deref(),
                Some("x"),
                "errors carry the request id when the frame had one"
            );
        }
        other => panic!("{other:?}"),
    }
    ws.expect_error("invalid_request").await;
    let message = ws.expect_error("invalid_request").await;
    assert!(
        message.contains("text"),
        "names the missing field: {message}"
    );
    let message = ws.expect_error("invalid_request").await;
    assert!(
        message.contains("surprise"),
        "names the unknown field: {message}"
    );
    ws.expect_error("invalid_request").await;

    ws.send(&send_frame(None, &"x".repeat(1025))).await;
    let message = ws.expect_error("message_too_large").await;
    assert!(
        message.contains("1025") && message.contains("1024"),
        "{message}"
    );

    ws.send(&send_frame(Some("no-such-conversation"), "hi"))
        .await;
    ws.expect_error("conversation_not_found").await;
    ws.send(&ClientFrame::Subscribe {
        request_id: None,
        conversation_id: "no-such-conversation".into(),
        after_position: None,
    })
    .await;
    ws.expect_error("conversation_not_found").await;

    futures::SinkExt::send(&mut ws.stream, Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    ws.expect_error("invalid_request").await;
    ws.send(&ClientFrame::Auth {
        api_key: "again".into(),
    })
    .await;
    ws.expect_error("invalid_request").await;

    // After all that, the same connection still works.
    let (_, position, _) = ws.send_message(None, "still here").await;
    assert!(position > 0);

    // A frame beyond the transport cap closes the connection with 1009.
    ws.send_text(&"y".repeat(200 * 1024)).await;
    match ws.next_message().await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1009, "{frame:?}"),
        other => panic!("expected close 1009, got {other:?}"),
    }
    // The process survived it.
    let mut ws = platform.ws(platform.key("acme")).await;
    ws.send_message(None, "new connection").await;
}

#[tokio::test]
async fn wrong_api_keys_are_rejected_on_every_way_in() {
    let platform = Platform::start(&[]).await;

    // WebSocket with a bad header: the upgrade is refused with 401.
    let upgrade = format!(
        "GET /api/v2/chat/ws HTTP/1.1\r\nHost: {0}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer cs_wrong\r\n\r\n",
        platform.http_addr
    );
    let (status, _) = http_request(&platform.http_addr, &upgrade).await.unwrap();
    assert_eq!(status, 401);

    // WebSocket with a bad auth frame: error frame, then close 1008.
    let mut ws = platform.ws_anonymous().await;
    ws.send(&ClientFrame::Auth {
        api_key: "cs_wrong".into(),
    })
    .await;
    ws.expect_error("unauthenticated").await;
    match ws.next_message().await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected close 1008, got {other:?}"),
    }

    // WebSocket that sends anything but auth first: same.
    let mut ws = platform.ws_anonymous().await;
    ws.send(&send_frame(None, "hi")).await;
    ws.expect_error("unauthenticated").await;

    // WebSocket with a good auth frame works.
    let mut ws = platform.ws_anonymous().await;
    ws.send(&ClientFrame::Auth {
        api_key: platform.key("acme").into(),
    })
    .await;
    assert!(
        matches!(ws.next_frame().await, ServerFrame::Authenticated { tenant_id, .. } if tenant_id == "acme")
    );

    // gRPC: no key and a wrong key are UNAUTHENTICATED on every method.
    let mut client = platform.grpc().await;
    let no_key = client
        .send_message(tonic::Request::new(pb::SendMessageRequest {
            text: "hi".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(no_key.unwrap_err().code(), tonic::Code::Unauthenticated);
    let wrong = grpc::get_conversation(&mut client, "cs_wrong", "c").await;
    assert_eq!(wrong.unwrap_err().code(), tonic::Code::Unauthenticated);
    let (_tx, rx) = tokio::sync::mpsc::channel::<pb::ClientFrame>(1);
    let converse = client
        .converse(authed(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            "cs_wrong",
        ))
        .await;
    assert_eq!(converse.unwrap_err().code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn grpc_maps_bad_input_to_statuses() {
    let platform = Platform::start(&[("CHATSTREAM_MAX_MESSAGE_BYTES", SMALL_LIMIT)]).await;
    let key = platform.key("acme");
    let mut client = platform.grpc().await;

    let too_big = client
        .send_message(authed(
            pb::SendMessageRequest {
                text: "x".repeat(2000),
                ..Default::default()
            },
            key,
        ))
        .await;
    assert_eq!(too_big.unwrap_err().code(), tonic::Code::InvalidArgument);
    let unknown = grpc::send_message(&mut client, key, "nope", "hi").await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
    let history = grpc::get_conversation(&mut client, key, "nope").await;
    assert_eq!(history.unwrap_err().code(), tonic::Code::NotFound);

    // In a Converse stream, bad frames become error frames and the stream goes on.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut stream = client
        .converse(authed(tokio_stream::wrappers::ReceiverStream::new(rx), key))
        .await
        .unwrap()
        .into_inner();
    tx.send(pb::ClientFrame { frame: None }).await.unwrap();
    tx.send(pb::ClientFrame {
        frame: Some(pb::client_frame::Frame::Send(pb::SendMessageRequest {
            request_id: "big".into(),
            text: "x".repeat(2000),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    tx.send(pb::ClientFrame {
        frame: Some(pb::client_frame::Frame::Send(pb::SendMessageRequest {
            request_id: "ok".into(),
            text: "fine".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    assert!(
        matches!(stream.message().await.unwrap().unwrap().frame.unwrap(), pb::server_frame::Frame::Error(e) if e.code == "invalid_request")
    );
    assert!(
        matches!(stream.message().await.unwrap().unwrap().frame.unwrap(), pb::server_frame::Frame::Error(e) if e.code == "message_too_large" && e.request_id == "big")
    );
    assert!(
        matches!(stream.message().await.unwrap().unwrap().frame.unwrap(), pb::server_frame::Frame::Ack(a) if a.request_id == "ok")
    );

    // A request id longer than 256 bytes is refused, without echoing it.
    tx.send(pb::ClientFrame {
        frame: Some(pb::client_frame::Frame::Open(pb::OpenConversationRequest {
            request_id: "r".repeat(300),
            title: String::new(),
        })),
    })
    .await
    .unwrap();
    assert!(
        matches!(stream.message().await.unwrap().unwrap().frame.unwrap(), pb::server_frame::Frame::Error(e) if e.code == "invalid_request" && e.request_id.is_empty())
    );

    // A frame beyond the transport cap ends the stream with an error status, not OK.
    tx.send(pb::ClientFrame {
        frame: Some(pb::client_frame::Frame::Send(pb::SendMessageRequest {
            text: "z".repeat(200 * 1024),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let ended = stream.message().await;
    assert!(
        ended.is_err(),
        "stream must end with an error status, got {ended:?}"
    );
}

#[tokio::test]
async fn model_failures_become_error_events_the_client_sees() {
    let platform = Platform::start(&[]).await;
    let mut ws = platform.ws(platform.key("acme")).await;
    let (event_id, _, conversation_id) =
        ws.send_message(None, "/mock error the model is down").await;
    ws.send(&ClientFrame::Subscribe {
        request_id: None,
        conversation_id,
        after_position: None,
    })
    .await;
    let frames = ws
        .frames_until(
            |f| matches!(f, ServerFrame::Event { event, .. } if event.causation_id == event_id),
        )
        .await;
    match frames.last() {
        Some(ServerFrame::Event { event, .. }) => match &event.body {
            chatstream_schemas::ws::EventBody::ErrorOccurred {
                code,
                message,
                source,
                ..
            } => {
                assert_eq!((code.as_str(), source.as_str()), ("model_error", "router"));
                assert_eq!(message, "the model is down");
            }
            other => panic!("expected an error event, got {other:?}"),
        },
        other => panic!("{other:?}"),
    }
}
