//! The WebSocket close handshake after a frame over the cap, seen by a real
//! WebSocket client over real TCP: close 1009 arrives, and the connection
//! then ends cleanly (the server waited for the client's close reply and
//! read what the client had sent), not with a reset that client libraries
//! report as 1006.
mod support;

use std::time::Duration;

use chatstream_gateway::EdgeLimits;
use futures::{SinkExt, StreamExt};
use support::{MAX_MESSAGE_BYTES, TestGateway, start_gateway};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

const MAX_FRAME_BYTES: usize = 4 * 1024;

async fn start_ready_gateway() -> TestGateway {
    let gateway = start_gateway(EdgeLimits {
        max_frame_bytes: MAX_FRAME_BYTES,
        ..EdgeLimits::for_max_message_bytes(MAX_MESSAGE_BYTES)
    })
    .await;
    gateway.readiness.set_ready();
    gateway
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gateway: &TestGateway) -> Client {
    let mut request = gateway.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", gateway.api_key).parse().unwrap(),
    );
    let (mut client, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    match next(&mut client).await {
        Some(Ok(Message::Text(text))) => assert!(text.contains("authenticated"), "{text}"),
        other => panic!("expected the authenticated frame, got {other:?}"),
    }
    client
}

/// The next message, failing instead of hanging when none comes.
async fn next(client: &mut Client) -> Option<Result<Message, tungstenite::Error>> {
    tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .expect("the server answers within 10 s")
}

/// After close `code` the client's stream ends without an error: the server
/// took the client's close reply and closed TCP itself, with nothing left
/// unread that would make its kernel send a reset.
async fn expect_clean_close(client: &mut Client, code: CloseCode) {
    match next(client).await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, code, "{frame:?}");
        }
        other => panic!("expected close {code}, got {other:?}"),
    }
    // tokio-tungstenite replied to the close; the stream ends when the
    // server closes TCP. A reset or a close without the handshake is an error.
    match next(client).await {
        None => {}
        other => panic!("expected a clean end of the connection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_frame_over_the_cap_gets_close_1009_and_a_clean_close() {
    let gateway = start_ready_gateway().await;
    let mut client = connect(&gateway).await;

    // Far over the cap: most of it is still unread when the server refuses it.
    let oversized = "y".repeat(64 * MAX_FRAME_BYTES);
    client.send(Message::text(oversized)).await.unwrap();

    expect_clean_close(&mut client, CloseCode::Size).await;
}

#[tokio::test]
async fn a_fragmented_message_over_the_cap_gets_close_1009_and_a_clean_close() {
    let gateway = start_ready_gateway().await;
    let mut client = connect(&gateway).await;

    // Frames under the cap whose message is over it.
    let piece = "y".repeat(MAX_FRAME_BYTES / 2);
    let mut frames = Vec::new();
    frames.push(tungstenite::protocol::frame::Frame::message(
        piece.clone(),
        tungstenite::protocol::frame::coding::OpCode::Data(
            tungstenite::protocol::frame::coding::Data::Text,
        ),
        false,
    ));
    for index in 0..64 {
        frames.push(tungstenite::protocol::frame::Frame::message(
            piece.clone(),
            tungstenite::protocol::frame::coding::OpCode::Data(
                tungstenite::protocol::frame::coding::Data::Continue,
            ),
            index == 63,
        ));
    }
    for frame in frames {
        if client.feed(Message::Frame(frame)).await.is_err() {
            break;
        }
    }
    let _ = client.flush().await;

    expect_clean_close(&mut client, CloseCode::Size).await;
}

#[tokio::test]
async fn a_connection_under_the_cap_keeps_working() {
    let gateway = start_ready_gateway().await;
    let mut client = connect(&gateway).await;

    client
        .send(Message::text(r#"{"type":"open","request_id":"1"}"#))
        .await
        .unwrap();

    match next(&mut client).await {
        Some(Ok(Message::Text(text))) => assert!(text.contains("\"opened\""), "{text}"),
        other => panic!("expected the opened frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_authentication_gets_close_1008_and_a_clean_close() {
    let gateway = start_ready_gateway().await;
    let (mut client, _) = tokio_tungstenite::connect_async(gateway.ws_url())
        .await
        .unwrap();

    client
        .send(Message::text(r#"{"type":"auth","api_key":"cs_wrong"}"#))
        .await
        .unwrap();

    match next(&mut client).await {
        Some(Ok(Message::Text(text))) => assert!(text.contains("unauthenticated"), "{text}"),
        other => panic!("expected the unauthenticated error frame, got {other:?}"),
    }
    expect_clean_close(&mut client, CloseCode::Policy).await;
}
