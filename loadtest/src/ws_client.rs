//! The WebSocket transport: JSON text frames (docs/protocol.md section 4),
//! authenticated with the `Authorization` header on the upgrade. Writes go
//! through their own task, so the measuring loop never blocks on a full
//! socket while the server is blocked writing to us.
use std::borrow::Cow;

use chatstream_schemas::ws::ClientFrame;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::protocol::{
    ASSISTANT_MESSAGE_TYPE, ERROR_EVENT_TYPE, Incoming, Outgoing, ReplyOutcome, TransportError,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct WsConnection {
    outgoing: mpsc::UnboundedSender<Message>,
    incoming: futures::stream::SplitStream<Socket>,
}

impl WsConnection {
    /// Connects and waits for the `authenticated` frame.
    pub async fn connect(url: &str, api_key: &str) -> Result<Self, TransportError> {
        let mut socket = open_authenticated(url, api_key).await?;
        match next_text(&mut socket).await {
            Ok(Some(text)) if text.contains("\"authenticated\"") => {}
            Ok(Some(text)) => {
                return Err(TransportError::Connect(format!(
                    "{url}: expected an `authenticated` frame, got {text}"
                )));
            }
            Ok(None) => {
                return Err(TransportError::Connect(format!(
                    "{url}: closed before authenticating"
                )));
            }
            Err(error) => return Err(TransportError::Connect(format!("{url}: {error}"))),
        }
        let (mut sink, incoming) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.feed(message).await.is_err() {
                    return;
                }
                // Batch whatever else is queued into one flush.
                while let Ok(message) = queue.try_recv() {
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        Ok(Self { outgoing, incoming })
    }

    pub fn send(&mut self, frame: Outgoing) -> Result<(), TransportError> {
        let json = serde_json::to_string(&client_frame(frame))
            .map_err(|e| TransportError::Lost(format!("cannot encode a frame: {e}")))?;
        self.outgoing
            .send(Message::text(json))
            .map_err(|_| TransportError::Lost("the connection's writer stopped".into()))
    }

    pub async fn recv(&mut self) -> Result<Incoming, TransportError> {
        loop {
            match self.incoming.next().await {
                Some(Ok(Message::Text(text))) => return Ok(parse_server_frame(&text)),
                Some(Ok(Message::Close(frame))) => {
                    let why = frame
                        .map(|f| {
                            format!("closed by the server: {} {}", u16::from(f.code), f.reason)
                        })
                        .unwrap_or_else(|| "closed by the server".into());
                    return Err(TransportError::Lost(why));
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(TransportError::Lost(error.to_string())),
                None => return Err(TransportError::Lost("connection closed".into())),
            }
        }
    }
}

/// A WebSocket that only authenticates and then sits idle, for the memory test.
pub struct IdleWs {
    _socket: Socket,
}

impl IdleWs {
    pub async fn connect(url: &str, api_key: &str) -> Result<Self, TransportError> {
        let mut socket = open_authenticated(url, api_key).await?;
        match next_text(&mut socket).await {
            Ok(Some(text)) if text.contains("\"authenticated\"") => Ok(Self { _socket: socket }),
            Ok(other) => Err(TransportError::Connect(format!(
                "{url}: expected an `authenticated` frame, got {other:?}"
            ))),
            Err(error) => Err(TransportError::Connect(format!("{url}: {error}"))),
        }
    }
}

async fn open_authenticated(url: &str, api_key: &str) -> Result<Socket, TransportError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| TransportError::Connect(format!("{url}: invalid WebSocket URL: {e}")))?;
    let bearer = format!("Bearer {api_key}")
        .parse()
        .map_err(|_| TransportError::Connect("the API key is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", bearer);
    // Nagle's algorithm would hold small frames back and add its delay to
    // every latency measured.
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .map_err(|error| TransportError::Connect(describe_connect_error(url, error)))?;
    Ok(socket)
}

fn describe_connect_error(url: &str, error: tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Http(response) if response.status() == 401 => {
            format!("{url}: the API key was refused (HTTP 401 unknown API key)")
        }
        tungstenite::Error::Http(response) => {
            format!("{url}: upgrade refused with HTTP {}", response.status())
        }
        other => format!("{url}: {other}"),
    }
}

async fn next_text(socket: &mut Socket) -> Result<Option<String>, tungstenite::Error> {
    while let Some(message) = socket.next().await {
        match message? {
            Message::Text(text) => return Ok(Some(text.to_string())),
            Message::Close(_) => return Ok(None),
            _ => continue,
        }
    }
    Ok(None)
}

fn client_frame(frame: Outgoing) -> ClientFrame {
    match frame {
        Outgoing::Open { request_id } => ClientFrame::Open {
            request_id: Some(request_id),
            title: None,
        },
        Outgoing::Subscribe {
            request_id,
            conversation_id,
        } => ClientFrame::Subscribe {
            request_id: Some(request_id),
            conversation_id,
            after_position: None,
        },
        Outgoing::Send {
            request_id,
            conversation_id,
            client_message_id,
            text,
        } => ClientFrame::Send {
            request_id: Some(request_id),
            conversation_id: Some(conversation_id),
            client_message_id,
            text: text.to_string(),
        },
    }
}

/// Only the fields the load generator reads. Unknown fields and frame types
/// are ignored, as the protocol asks of clients, and the strings are
/// borrowed from the frame where possible: parsing is on the hot path.
#[derive(Deserialize)]
struct WireFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    conversation_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reply_to: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    event: Option<WireEvent<'a>>,
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    causation_id: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<WireEventData<'a>>,
}

#[derive(Deserialize)]
struct WireEventData<'a> {
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
}

pub fn parse_server_frame(text: &str) -> Incoming {
    let Ok(frame) = serde_json::from_str::<WireFrame>(text) else {
        return Incoming::Error {
            request_id: None,
            code: "unparseable_frame".into(),
            message: text.chars().take(200).collect(),
        };
    };
    let owned = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned);
    match frame.kind.as_ref() {
        "opened" => Incoming::Opened {
            request_id: owned(frame.request_id),
            conversation_id: owned(frame.conversation_id).unwrap_or_default(),
        },
        "subscribed" => Incoming::Subscribed,
        "ack" => Incoming::Ack {
            request_id: owned(frame.request_id),
            event_id: owned(frame.event_id).unwrap_or_default(),
        },
        "delta" => Incoming::Delta {
            reply_to: owned(frame.reply_to).unwrap_or_default(),
        },
        "event" => match frame.event {
            Some(event) if event.kind == ASSISTANT_MESSAGE_TYPE => Incoming::ReplyCommitted {
                causation_id: event.causation_id.into_owned(),
                outcome: ReplyOutcome::Answered,
            },
            Some(event) if event.kind == ERROR_EVENT_TYPE => Incoming::ReplyCommitted {
                causation_id: event.causation_id.into_owned(),
                outcome: ReplyOutcome::Failed {
                    code: owned(event.data.and_then(|d| d.code))
                        .unwrap_or_else(|| "unknown".into()),
                },
            },
            _ => Incoming::Other,
        },
        "error" => Incoming::Error {
            request_id: owned(frame.request_id),
            code: owned(frame.code).unwrap_or_else(|| "unknown".into()),
            message: owned(frame.message).unwrap_or_default(),
        },
        _ => Incoming::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_from_the_protocol_document_parse() {
        let ack = r#"{"type":"ack","request_id":"3","conversation_id":"C","event_id":"U1","position":41,"duplicate":false}"#;
        assert_eq!(
            parse_server_frame(ack),
            Incoming::Ack {
                request_id: Some("3".into()),
                event_id: "U1".into()
            }
        );
        let delta =
            r#"{"type":"delta","conversation_id":"C","reply_to":"U1","index":1,"text":" said:"}"#;
        assert_eq!(
            parse_server_frame(delta),
            Incoming::Delta {
                reply_to: "U1".into()
            }
        );
        let reply = r#"{"type":"event","position":44,"event":{"id":"A1","tenant_id":"t","conversation_id":"C","occurred_at":"2025-01-15T10:21:33Z","causation_id":"U1","correlation_id":"U1","schema_version":1,"type":"chatstream.assistant_message.v1","data":{"text":"You said: \"hi\"","model":"mock","usage":{"prompt_tokens":1,"completion_tokens":3,"total_tokens":4},"finish_reason":"stop"}}}"#;
        assert_eq!(
            parse_server_frame(reply),
            Incoming::ReplyCommitted {
                causation_id: "U1".into(),
                outcome: ReplyOutcome::Answered
            }
        );
        let failed = r#"{"type":"event","position":46,"event":{"id":"E","tenant_id":"t","conversation_id":"C","occurred_at":"2025-01-15T10:21:33Z","causation_id":"U2","correlation_id":"U2","schema_version":1,"type":"chatstream.error.v1","data":{"code":"model_error","message":"down","source":"router","retryable":true}}}"#;
        assert_eq!(
            parse_server_frame(failed),
            Incoming::ReplyCommitted {
                causation_id: "U2".into(),
                outcome: ReplyOutcome::Failed {
                    code: "model_error".into()
                }
            }
        );
        let error = r#"{"type":"error","request_id":"5","code":"conversation_not_found","message":"conversation \"nope\" not found"}"#;
        assert_eq!(
            parse_server_frame(error),
            Incoming::Error {
                request_id: Some("5".into()),
                code: "conversation_not_found".into(),
                message: "conversation \"nope\" not found".into()
            }
        );
    }

    #[test]
    fn unknown_frames_and_fields_are_ignored() {
        assert_eq!(
            parse_server_frame(r#"{"type":"presence","who":"x"}"#),
            Incoming::Other
        );
        let ack = r#"{"type":"ack","event_id":"U","new_field":[1,2],"position":1,"duplicate":false,"conversation_id":"C"}"#;
        assert!(matches!(parse_server_frame(ack), Incoming::Ack { .. }));
        assert!(matches!(
            parse_server_frame("not json"),
            Incoming::Error { .. }
        ));
    }
}
