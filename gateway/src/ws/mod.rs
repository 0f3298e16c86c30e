//! The WebSocket edge at `/api/v2/chat/ws`: JSON text frames in
//! (`chatstream_schemas::ws::ClientFrame`), JSON text frames out
//! (`ServerFrame`). Authenticates with an `Authorization: Bearer` header on
//! the upgrade request or an `auth` frame first. A close the server starts
//! is finished by reading the client's close reply (`close`).
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chatstream_config::tenants::Principal;
use chatstream_schemas::ws::{ClientFrame, EventJson, ServerFrame};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::Gateway;
use crate::command::{ChatCommand, ChatReply, SendMessage, non_empty};
use crate::error::ChatError;
use crate::session::Session;
use crate::traces::ConnectionTrace;

mod close;
mod upgrade;

use upgrade::{Socket, Upgrade};

/// Close codes (RFC 6455 and the registered range).
pub mod close_code {
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Authentication failed or did not happen in time.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame was larger than the gateway accepts.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// A backend the connection needs is unavailable: reconnect later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// How long a connection may stay unauthenticated.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies buffered per connection before delivery waits for the client.
const OUTBOUND_BUFFER: usize = 1024;

pub async fn upgrade(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    upgrade: Upgrade,
) -> Response {
    if !gateway.readiness.is_ready() {
        let body = "starting: not ready to accept chat connections yet, retry";
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    let principal = match bearer_token(&headers) {
        Some(key) => match gateway.tenants.authenticate(key) {
            Some(principal) => Some(principal),
            None => return (StatusCode::UNAUTHORIZED, "unknown API key").into_response(),
        },
        None => None,
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(gateway.limits.max_frame_bytes))
        .max_frame_size(Some(gateway.limits.max_frame_bytes))
        // Small initial buffers (they grow for big frames): idle connections stay cheap.
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024);
    let trace = ConnectionTrace::websocket(&headers);
    upgrade.on_upgrade(config, move |socket| {
        connection(socket, gateway, principal, trace)
    })
}

/// The API key from `Authorization: Bearer <key>`.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

enum Outbound {
    Reply(ChatReply),
    Frame(ServerFrame),
    Close(u16, String),
}

async fn connection(
    socket: Socket,
    gateway: Gateway,
    principal: Option<Principal>,
    trace: ConnectionTrace,
) {
    metrics::gauge!("chatstream_gateway_connections", "transport" => "websocket").increment(1.0);
    let (sink, mut inbound) = socket.split();
    let (outbound, outbound_rx) = mpsc::channel::<Outbound>(16);
    let (replies, replies_rx) = mpsc::channel::<ChatReply>(OUTBOUND_BUFFER);
    let writer = tokio::spawn(write_frames(sink, outbound_rx, replies_rx));

    let principal = match principal {
        Some(principal) => Some(principal),
        None => authenticate_by_frame(&mut inbound, &outbound, &gateway).await,
    };
    let slot = match &principal {
        Some(principal) => match gateway.connections.admit(principal).await {
            Ok(slot) => Some(slot),
            Err(error) => {
                refuse(&outbound, &error).await;
                None
            }
        },
        None => None,
    };
    if let (Some(principal), Some(_slot)) = (principal, slot) {
        let _ = outbound
            .send(Outbound::Frame(ServerFrame::Authenticated {
                tenant_id: principal.tenant.id.clone(),
                key_id: principal.key_id.clone(),
            }))
            .await;
        let session = Session::new(
            gateway.core.clone(),
            principal,
            replies.clone(),
            gateway.limits.max_subscriptions_per_connection,
        )
        .with_trace(trace);
        serve_session(session, &mut inbound, &outbound, &gateway).await;
    }
    drop((outbound, replies));
    if let Ok((sink, Closed::ByServer)) = writer.await
        && let Ok(mut socket) = sink.reunite(inbound)
    {
        socket.get_mut().finish_close().await;
    }
    metrics::gauge!("chatstream_gateway_connections", "transport" => "websocket").decrement(1.0);
}

/// Refuses a connection the tenant may not open now: an error frame, then
/// a close saying whether to come back later.
async fn refuse(outbound: &mpsc::Sender<Outbound>, error: &ChatError) {
    let _ = outbound
        .send(Outbound::Frame(error_frame(None, error)))
        .await;
    let code = match error {
        ChatError::Unavailable(_) => close_code::TRY_AGAIN_LATER,
        _ => close_code::POLICY_VIOLATION,
    };
    let _ = outbound
        .send(Outbound::Close(code, error.to_string()))
        .await;
}

/// Waits for the `auth` frame; on failure sends an error frame and closes
/// with 1008.
async fn authenticate_by_frame(
    inbound: &mut SplitStream<Socket>,
    outbound: &mpsc::Sender<Outbound>,
    gateway: &Gateway,
) -> Option<Principal> {
    let first = tokio::time::timeout(AUTH_TIMEOUT, inbound.next()).await;
    let reason = match first {
        Err(_) => "no auth frame within 10 s",
        Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return None,
        Ok(Some(Ok(Message::Text(text)))) => match parse_client_frame(&text) {
            Ok(ClientFrame::Auth { api_key }) => match gateway.tenants.authenticate(&api_key) {
                Some(principal) => return Some(principal),
                None => "unknown API key",
            },
            Ok(_) => "the first frame must be {\"type\":\"auth\",\"api_key\":\"...\"}",
            Err(_) => "the first frame must be a valid auth frame",
        },
        Ok(Some(Ok(_))) => "the first frame must be a JSON text frame of type auth",
    };
    let _ = outbound
        .send(Outbound::Frame(error_frame(
            None,
            &ChatError::Unauthenticated,
        )))
        .await;
    let _ = outbound
        .send(Outbound::Close(
            close_code::POLICY_VIOLATION,
            reason.to_owned(),
        ))
        .await;
    None
}

/// Reads frames until the client leaves or the server shuts down.
async fn serve_session(
    mut session: Session,
    inbound: &mut SplitStream<Socket>,
    outbound: &mpsc::Sender<Outbound>,
    gateway: &Gateway,
) {
    loop {
        let message = tokio::select! {
            _ = gateway.shutdown.cancelled() => {
                let _ = outbound.send(Outbound::Close(close_code::GOING_AWAY, "server shutting down".into())).await;
                return;
            }
            message = inbound.next() => message,
        };
        match message {
            None | Some(Ok(Message::Close(_))) => return,
            Some(Ok(Message::Text(text))) => match parse_client_frame(&text) {
                Ok(ClientFrame::Auth { .. }) => {
                    let error = ChatError::InvalidRequest("already authenticated".into());
                    session.reply_error(None, error).await;
                }
                Ok(frame) => session.handle(command_from_frame(frame)).await,
                Err(error) => session.reply_error(request_id_of(&text), error).await,
            },
            Some(Ok(Message::Binary(_))) => {
                let error = ChatError::InvalidRequest(
                    "binary frames are not supported; send JSON text frames".into(),
                );
                session.reply_error(None, error).await;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Err(error)) => {
                tracing::debug!(%error, "websocket read failed");
                if let tungstenite::Error::Capacity(_) = error {
                    let reason =
                        format!("frame larger than {} bytes", gateway.limits.max_frame_bytes);
                    let _ = outbound
                        .send(Outbound::Close(close_code::MESSAGE_TOO_BIG, reason))
                        .await;
                }
                return;
            }
        }
    }
}

/// Parses a client frame, telling apart broken JSON, unknown types and
/// missing or wrong fields.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, ChatError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ChatError::InvalidJson(e.to_string()))?;
    let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
        return Err(ChatError::InvalidRequest(
            "a frame is a JSON object with a string field \"type\"".into(),
        ));
    };
    if !matches!(
        kind,
        "auth" | "open" | "send" | "subscribe" | "unsubscribe" | "decide_tool_call"
    ) {
        return Err(ChatError::UnknownType(kind.to_owned()));
    }
    let kind = kind.to_owned();
    serde_json::from_value(value)
        .map_err(|e| ChatError::InvalidRequest(format!("invalid {kind} frame: {e}")))
}

/// The `request_id` of a frame that failed to parse, when it has one, so
/// the client can match the error to its request.
fn request_id_of(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get("request_id")?.as_str().map(str::to_owned)
}

fn command_from_frame(frame: ClientFrame) -> ChatCommand {
    match frame {
        ClientFrame::Open { request_id, title } => ChatCommand::Open {
            request_id,
            title: title.unwrap_or_default(),
        },
        ClientFrame::Send {
            request_id,
            conversation_id,
            client_message_id,
            text,
        } => ChatCommand::Send(SendMessage {
            request_id,
            conversation_id: conversation_id.and_then(non_empty),
            client_message_id: client_message_id.and_then(non_empty),
            text,
            context: Vec::new(),
            model: String::new(),
        }),
        ClientFrame::Subscribe {
            request_id,
            conversation_id,
            after_position,
        } => ChatCommand::Subscribe {
            request_id,
            conversation_id,
            after_position,
        },
        ClientFrame::Unsubscribe {
            request_id,
            conversation_id,
        } => ChatCommand::Unsubscribe {
            request_id,
            conversation_id,
        },
        ClientFrame::DecideToolCall {
            request_id,
            conversation_id,
            tool_call_event_id,
            approved,
            reason,
        } => ChatCommand::DecideToolCall(crate::command::ToolCallDecision {
            request_id,
            conversation_id,
            tool_call_event_id,
            approved,
            reason: reason.unwrap_or_default(),
        }),
        ClientFrame::Auth { .. } => unreachable!("auth frames are handled before commands"),
    }
}

pub fn error_frame(request_id: Option<String>, error: &ChatError) -> ServerFrame {
    ServerFrame::Error {
        request_id,
        code: error.code().to_owned(),
        message: error.to_string(),
        retry_after_ms: error.retry_after().map(|d| d.as_millis() as u64),
    }
}

/// The JSON frame for a reply; `None` for an event without a payload.
pub fn frame_from_reply(reply: ChatReply) -> Option<ServerFrame> {
    Some(match reply {
        ChatReply::Opened {
            request_id,
            conversation_id,
            position,
        } => ServerFrame::Opened {
            request_id,
            conversation_id,
            position,
        },
        ChatReply::Ack(ack) => ServerFrame::Ack {
            request_id: ack.request_id,
            conversation_id: ack.conversation_id,
            event_id: ack.event_id,
            position: ack.position,
            duplicate: ack.duplicate,
        },
        ChatReply::Subscribed {
            request_id,
            conversation_id,
        } => ServerFrame::Subscribed {
            request_id,
            conversation_id,
        },
        ChatReply::Unsubscribed {
            request_id,
            conversation_id,
        } => ServerFrame::Unsubscribed {
            request_id,
            conversation_id,
        },
        ChatReply::Delta(delta) => ServerFrame::Delta {
            conversation_id: delta.conversation_id,
            reply_to: delta.reply_to,
            index: delta.index,
            text: delta.text,
        },
        ChatReply::Event(entry) => ServerFrame::Event {
            position: entry.position.offset,
            event: EventJson::from_event(&entry.event)?,
        },
        ChatReply::Error { request_id, error } => error_frame(request_id, &error),
    })
}

/// Who closed the WebSocket connection, as far as the writer knows.
enum Closed {
    /// The server sent a close frame: the client's reply is still to come.
    ByServer,
    /// The client left, or the connection broke.
    Otherwise,
}

/// Frames written before one flush at most, so a busy connection still
/// flushes often.
const FRAMES_PER_FLUSH: usize = 64;

/// Writes control frames and replies until both channels close or a close
/// frame was sent; gives the sink back to finish the close. Frames that
/// are already waiting are written together and flushed once (one write
/// to the socket for a burst of deltas, not one per frame).
async fn write_frames(
    mut sink: SplitSink<Socket, Message>,
    mut outbound: mpsc::Receiver<Outbound>,
    mut replies: mpsc::Receiver<ChatReply>,
) -> (SplitSink<Socket, Message>, Closed) {
    let mut closed = Closed::Otherwise;
    'connection: loop {
        let first = tokio::select! {
            biased;
            item = outbound.recv() => match item {
                Some(item) => item,
                None => match replies.recv().await {
                    Some(reply) => Outbound::Reply(reply),
                    None => break,
                },
            },
            Some(reply) = replies.recv() => Outbound::Reply(reply),
        };
        let mut next = Some(first);
        let mut written = 0;
        while let Some(item) = next {
            let message = match item {
                Outbound::Reply(reply) => frame_from_reply(reply).map(|frame| text_message(&frame)),
                Outbound::Frame(frame) => Some(text_message(&frame)),
                Outbound::Close(code, reason) => {
                    let sent = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: code.into(),
                            reason: Utf8Bytes::from(reason),
                        })))
                        .await;
                    if sent.is_ok() {
                        closed = Closed::ByServer;
                    }
                    break 'connection;
                }
            };
            if let Some(message) = message {
                if sink.feed(message).await.is_err() {
                    break 'connection;
                }
                written += 1;
            }
            next = if written < FRAMES_PER_FLUSH {
                outbound
                    .try_recv()
                    .ok()
                    .or_else(|| replies.try_recv().ok().map(Outbound::Reply))
            } else {
                None
            };
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
    (sink, closed)
}

fn text_message(frame: &ServerFrame) -> Message {
    let json = serde_json::to_string(frame).expect("server frames always serialize");
    Message::Text(Utf8Bytes::from(json))
}
