//! A WebSocket client of the gateway: frames as the protocol types, each
//! read within [`WAIT`], and the exchanges most tests start with (send and
//! wait for the ack, open, subscribe, expect an error).
use chatstream_schemas::ws::{ClientFrame, ServerFrame};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::platform::WAIT;

/// An authenticated WebSocket connection to the gateway at `http_addr`.
pub async fn connect_ws(http_addr: &str, api_key: &str) -> Ws {
    let mut request = format!("ws://{http_addr}/api/v2/chat/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {api_key}").parse().unwrap(),
    );
    let (stream, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket connects");
    let mut ws = Ws { stream };
    match ws.next_frame().await {
        ServerFrame::Authenticated { .. } => ws,
        other => panic!("expected authenticated, got {other:?}"),
    }
}

/// A WebSocket connection that has not authenticated.
pub async fn connect_ws_anonymous(http_addr: &str) -> Ws {
    let url = format!("ws://{http_addr}/api/v2/chat/ws");
    let (stream, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    Ws { stream }
}

/// A user message into `conversation_id` (a new conversation when `None`),
/// with no request or client message id.
pub fn send_frame(conversation_id: Option<&str>, text: &str) -> ClientFrame {
    ClientFrame::Send {
        request_id: None,
        conversation_id: conversation_id.map(str::to_owned),
        client_message_id: None,
        text: text.to_owned(),
    }
}

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_text(&serde_json::to_string(frame).unwrap()).await;
    }

    /// Sends a frame; `false` when the connection is gone (a killed server).
    pub async fn try_send(&mut self, frame: &ClientFrame) -> bool {
        let text = serde_json::to_string(frame).unwrap();
        self.stream.send(Message::text(text)).await.is_ok()
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("websocket send");
    }

    /// The next raw message (text, close, ...), within the wait limit.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a frame in time");
            match message {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn next_frame(&mut self) -> ServerFrame {
        match self.next_message().await {
            Some(Message::Text(text)) => {
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad frame {text}: {e}"))
            }
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Frames until `stop` returns true for one (included).
    pub async fn frames_until(
        &mut self,
        mut stop: impl FnMut(&ServerFrame) -> bool,
    ) -> Vec<ServerFrame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next_frame().await;
            let done = stop(&frame);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// Sends a message and returns its ack (event id, position, conversation).
    pub async fn send_message(
        &mut self,
        conversation_id: Option<&str>,
        text: &str,
    ) -> (String, u64, String) {
        let (ack, _duplicate) = self.send_keyed(conversation_id, None, text).await;
        ack
    }

    /// Sends a message with an idempotency key and returns its ack (event
    /// id, position, conversation) and whether it acks an earlier send.
    pub async fn send_once(
        &mut self,
        conversation_id: Option<&str>,
        client_message_id: &str,
        text: &str,
    ) -> ((String, u64, String), bool) {
        self.send_keyed(conversation_id, Some(client_message_id), text)
            .await
    }

    async fn send_keyed(
        &mut self,
        conversation_id: Option<&str>,
        client_message_id: Option<&str>,
        text: &str,
    ) -> ((String, u64, String), bool) {
        self.send(&ClientFrame::Send {
            request_id: Some("r".into()),
            conversation_id: conversation_id.map(str::to_owned),
            client_message_id: client_message_id.map(str::to_owned),
            text: text.into(),
        })
        .await;
        match self
            .frames_until(|f| matches!(f, ServerFrame::Ack { .. } | ServerFrame::Error { .. }))
            .await
            .pop()
        {
            Some(ServerFrame::Ack {
                event_id,
                position,
                conversation_id,
                duplicate,
                ..
            }) => ((event_id, position, conversation_id), duplicate),
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    /// Subscribes to a conversation from its start (no wait for the reply).
    pub async fn subscribe(&mut self, conversation_id: &str) {
        self.send(&ClientFrame::Subscribe {
            request_id: None,
            conversation_id: conversation_id.to_owned(),
            after_position: None,
        })
        .await;
    }

    /// Sends `text` in a new conversation and subscribes to it: the user
    /// message's event id and the conversation id.
    pub async fn send_and_subscribe(&mut self, text: &str) -> (String, String) {
        let (user_event_id, _, conversation_id) = self.send_message(None, text).await;
        self.subscribe(&conversation_id).await;
        (user_event_id, conversation_id)
    }

    /// Opens a conversation with an `open` frame and returns its id.
    pub async fn open_conversation(&mut self) -> String {
        self.send(&ClientFrame::Open {
            request_id: None,
            title: None,
        })
        .await;
        match self.next_frame().await {
            ServerFrame::Opened {
                conversation_id, ..
            } => conversation_id,
            other => panic!("expected opened, got {other:?}"),
        }
    }

    /// Expects an error frame with `code` (skipping deltas and events).
    pub async fn expect_error(&mut self, code: &str) -> String {
        match self
            .frames_until(|f| matches!(f, ServerFrame::Error { .. } | ServerFrame::Ack { .. }))
            .await
            .pop()
        {
            Some(ServerFrame::Error {
                code: got, message, ..
            }) => {
                assert_eq!(got, code, "error message: {message}");
                message
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }
}
