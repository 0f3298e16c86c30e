//! The gRPC transport: one HTTP/2 connection per load connection, carrying
//! one `ChatService/Converse` stream, with the API key as metadata.
use chatstream_schemas::pb::events::event::Payload;
use chatstream_schemas::pb::gateway::{
    self as pb, chat_service_client::ChatServiceClient, client_frame::Frame as ClientKind,
    server_frame::Frame as ServerKind,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Endpoint;

use crate::protocol::{
    ASSISTANT_MESSAGE_TYPE, ERROR_EVENT_TYPE, Incoming, Outgoing, ReplyOutcome, TransportError,
};

/// Big enough for the largest frame the gateway sends by default.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

pub struct GrpcConnection {
    outgoing: mpsc::UnboundedSender<pb::ClientFrame>,
    incoming: tonic::Streaming<pb::ServerFrame>,
}

impl GrpcConnection {
    pub async fn connect(endpoint: &str, api_key: &str) -> Result<Self, TransportError> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| TransportError::Connect(format!("{endpoint}: invalid address: {e}")))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| TransportError::Connect(format!("{endpoint}: {}", error_chain(&e))))?;
        let mut client = ChatServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (outgoing, queue) = mpsc::unbounded_channel();
        let mut request = tonic::Request::new(UnboundedReceiverStream::new(queue));
        let bearer = format!("Bearer {api_key}")
            .parse()
            .map_err(|_| TransportError::Connect("the API key is not valid metadata".into()))?;
        request.metadata_mut().insert("authorization", bearer);
        let incoming = client
            .converse(request)
            .await
            .map_err(|status| {
                TransportError::Connect(format!(
                    "{endpoint}: Converse refused: {:?} {}",
                    status.code(),
                    status.message()
                ))
            })?
            .into_inner();
        Ok(Self { outgoing, incoming })
    }

    pub fn send(&mut self, frame: Outgoing) -> Result<(), TransportError> {
        self.outgoing
            .send(client_frame(frame))
            .map_err(|_| TransportError::Lost("the Converse stream's sender stopped".into()))
    }

    pub async fn recv(&mut self) -> Result<Incoming, TransportError> {
        match self.incoming.message().await {
            Ok(Some(frame)) => Ok(incoming_from(frame)),
            Ok(None) => Err(TransportError::Lost("the server ended the stream".into())),
            Err(status) => Err(TransportError::Lost(format!(
                "stream failed: {:?} {}",
                status.code(),
                status.message()
            ))),
        }
    }
}

/// "transport error: tcp connect error: Connection refused", not just the top.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn client_frame(frame: Outgoing) -> pb::ClientFrame {
    let frame = match frame {
        Outgoing::Open { request_id } => ClientKind::Open(pb::OpenConversationRequest {
            request_id,
            title: String::new(),
        }),
        Outgoing::Subscribe {
            request_id,
            conversation_id,
        } => ClientKind::Subscribe(pb::SubscribeRequest {
            request_id,
            conversation_id,
            after_position: None,
        }),
        Outgoing::Send {
            request_id,
            conversation_id,
            client_message_id,
            text,
        } => ClientKind::Send(pb::SendMessageRequest {
            request_id,
            conversation_id,
            client_message_id: client_message_id.unwrap_or_default(),
            text: text.to_string(),
        }),
    };
    pb::ClientFrame { frame: Some(frame) }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn incoming_from(frame: pb::ServerFrame) -> Incoming {
    match frame.frame {
        Some(ServerKind::Opened(opened)) => Incoming::Opened {
            request_id: non_empty(opened.request_id),
            conversation_id: opened.conversation_id,
        },
        Some(ServerKind::Subscribed(_)) => Incoming::Subscribed,
        Some(ServerKind::Ack(ack)) => Incoming::Ack {
            request_id: non_empty(ack.request_id),
            event_id: ack.event_id,
        },
        Some(ServerKind::Delta(delta)) => Incoming::Delta {
            reply_to: delta.reply_to,
        },
        Some(ServerKind::Event(committed)) => {
            let Some(event) = committed.event else {
                return Incoming::Other;
            };
            match event.payload {
                Some(Payload::AssistantMessage(_)) => Incoming::ReplyCommitted {
                    causation_id: event.causation_id,
                    outcome: ReplyOutcome::Answered,
                },
                Some(Payload::ErrorOccurred(error)) => Incoming::ReplyCommitted {
                    causation_id: event.causation_id,
                    outcome: ReplyOutcome::Failed { code: error.code },
                },
                // A payload this build does not know: the type string still tells.
                None if event.r#type == ASSISTANT_MESSAGE_TYPE => Incoming::ReplyCommitted {
                    causation_id: event.causation_id,
                    outcome: ReplyOutcome::Answered,
                },
                None if event.r#type == ERROR_EVENT_TYPE => Incoming::ReplyCommitted {
                    causation_id: event.causation_id,
                    outcome: ReplyOutcome::Failed {
                        code: "unknown".into(),
                    },
                },
                _ => Incoming::Other,
            }
        }
        Some(ServerKind::Error(error)) => Incoming::Error {
            request_id: non_empty(error.request_id),
            code: error.code,
            message: error.message,
        },
        Some(ServerKind::Unsubscribed(_)) | None => Incoming::Other,
    }
}
