//! The gRPC edge: `chatstream.gateway.v1.ChatService` (and the
//! `AnalyticsService` of `analytics/grpc.rs`), plus the standard
//! `grpc.health.v1` service and server reflection. Authenticates every call
//! from metadata: `authorization: Bearer <key>` or `x-api-key: <key>`.
use std::pin::Pin;

use chatstream_config::tenants::Principal;
use chatstream_schemas::pb::gateway::{
    self as pb,
    chat_service_server::{ChatService, ChatServiceServer},
    client_frame::Frame as ClientFrameKind,
    server_frame::Frame as ServerFrameKind,
};
use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::Gateway;
use crate::command::{
    ChatCommand, ChatReply, MessageAck, SendMessage, ToolCallDecision, non_empty,
};
use crate::error::ChatError;
use crate::session::Session;
use crate::traces::{CHAT_SERVICE, ConnectionTrace, grpc_span, record_grpc_status};

const OUTBOUND_BUFFER: usize = 1024;

/// Serves gRPC on `listener` until the gateway shuts down.
pub async fn serve(gateway: Gateway, listener: TcpListener) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_not_serving::<ChatServiceServer<GrpcChat>>()
        .await;
    tokio::spawn(report_health(health_reporter, gateway.clone()));
    // Both reflection versions: older grpcurl, Postman and evans speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(chatstream_schemas::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    let max_message = gateway.limits.max_frame_bytes;
    let shutdown = gateway.shutdown.clone();
    let analytics = crate::analytics::grpc::service(gateway.clone());
    let chat = ChatServiceServer::new(GrpcChat { gateway }).max_decoding_message_size(max_message);
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(chat)
        .add_service(analytics)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
}

/// Reads a `Converse` stream's frames until the client is done; returns the
/// status to end the stream with when it ends for another reason.
async fn serve_converse(
    session: &mut Session,
    inbound: &mut Streaming<pb::ClientFrame>,
    replies: &mpsc::Sender<ChatReply>,
    gateway: &Gateway,
) -> Option<Status> {
    let shutting_down = || Status::unavailable("server shutting down; reconnect and resubscribe");
    loop {
        let frame = tokio::select! {
            _ = gateway.shutdown.cancelled() => return Some(shutting_down()),
            _ = replies.closed() => return None,
            frame = inbound.message() => frame,
        };
        match frame {
            Ok(Some(frame)) => match command_from_frame(frame) {
                Ok(command) => session.handle(command).await,
                Err((request_id, error)) => session.reply_error(request_id, error).await,
            },
            // Half-closed: keep delivering subscriptions until the client cancels.
            Ok(None) => {
                if session.has_subscriptions() {
                    tokio::select! {
                        _ = gateway.shutdown.cancelled() => return Some(shutting_down()),
                        _ = replies.closed() => {}
                    }
                }
                return None;
            }
            // E.g. a frame over the size limit: tell the client why the stream ends.
            Err(status) => {
                tracing::debug!(%status, "converse request stream failed");
                return Some(status);
            }
        }
    }
}

/// SERVING once the gateway is ready, NOT_SERVING again when it shuts down.
async fn report_health(reporter: tonic_health::server::HealthReporter, gateway: Gateway) {
    tokio::select! {
        _ = gateway.shutdown.cancelled() => return,
        _ = gateway.readiness.wait_ready() => {}
    }
    reporter.set_serving::<ChatServiceServer<GrpcChat>>().await;
    gateway.shutdown.cancelled().await;
    reporter
        .set_not_serving::<ChatServiceServer<GrpcChat>>()
        .await;
}

pub struct GrpcChat {
    gateway: Gateway,
}

impl GrpcChat {
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        authenticate(&self.gateway, metadata)
    }
}

/// The caller of a gRPC call, from `authorization: Bearer <key>` or
/// `x-api-key: <key>`; every service of the gateway authenticates so.
pub(crate) fn authenticate(gateway: &Gateway, metadata: &MetadataMap) -> Result<Principal, Status> {
    if !gateway.readiness.is_ready() {
        return Err(Status::unavailable(
            "starting: not ready to accept calls yet, retry",
        ));
    }
    api_key(metadata)
        .and_then(|key| gateway.tenants.authenticate(key))
        .ok_or_else(|| ChatError::Unauthenticated.to_status())
}

/// The key a call carries: `authorization: Bearer <key>`, else `x-api-key`.
pub(crate) fn api_key(metadata: &MetadataMap) -> Option<&str> {
    let bearer = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim());
    bearer.or_else(|| metadata.get("x-api-key").and_then(|v| v.to_str().ok()))
}

type ServerFrames = Pin<Box<dyn Stream<Item = Result<pb::ServerFrame, Status>> + Send>>;

#[tonic::async_trait]
impl ChatService for GrpcChat {
    type ConverseStream = ServerFrames;

    async fn converse(
        &self,
        request: Request<Streaming<pb::ClientFrame>>,
    ) -> Result<Response<ServerFrames>, Status> {
        let principal = self.authenticate(request.metadata())?;
        let trace = ConnectionTrace::converse(request.metadata());
        let slot = self
            .gateway
            .connections
            .admit(&principal)
            .await
            .map_err(|error| error.to_status())?;
        let mut inbound = request.into_inner();
        let (replies, replies_rx) = mpsc::channel(OUTBOUND_BUFFER);
        let gateway = self.gateway.clone();
        let mut session = Session::new(
            gateway.core.clone(),
            principal,
            replies.clone(),
            gateway.limits.max_subscriptions_per_connection,
        )
        .with_trace(trace);
        // How the stream ends: OK when the client is done, else this status.
        let (ending, ended) = oneshot::channel::<Status>();
        tokio::spawn(async move {
            metrics::gauge!("chatstream_gateway_connections", "transport" => "grpc").increment(1.0);
            if let Some(status) =
                serve_converse(&mut session, &mut inbound, &replies, &gateway).await
            {
                let _ = ending.send(status);
            }
            // Dropping the session stops its subscriptions, which closes the reply stream.
            drop((session, slot));
            metrics::gauge!("chatstream_gateway_connections", "transport" => "grpc").decrement(1.0);
        });
        let frames = ReceiverStream::new(replies_rx)
            .filter_map(|reply| async move { frame_from_reply(reply).map(Ok) })
            .chain(
                futures::stream::once(ended)
                    .filter_map(|ending| async move { ending.ok().map(Err) }),
            );
        Ok(Response::new(Box::pin(frames)))
    }

    async fn open_conversation(
        &self,
        request: Request<pb::OpenConversationRequest>,
    ) -> Result<Response<pb::ConversationOpenedReply>, Status> {
        let span = grpc_span(CHAT_SERVICE, "OpenConversation", request.metadata());
        traced(span, self.open_conversation_call(request)).await
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::MessageAck>, Status> {
        let span = grpc_span(CHAT_SERVICE, "SendMessage", request.metadata());
        traced(span, self.send_message_call(request)).await
    }

    async fn decide_tool_call(
        &self,
        request: Request<pb::DecideToolCallRequest>,
    ) -> Result<Response<pb::MessageAck>, Status> {
        let span = grpc_span(CHAT_SERVICE, "DecideToolCall", request.metadata());
        traced(span, self.decide_tool_call_call(request)).await
    }

    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::GetConversationResponse>, Status> {
        let span = grpc_span(CHAT_SERVICE, "GetConversation", request.metadata());
        traced(span, self.get_conversation_call(request)).await
    }
}

impl GrpcChat {
    async fn open_conversation_call(
        &self,
        request: Request<pb::OpenConversationRequest>,
    ) -> Result<Response<pb::ConversationOpenedReply>, Status> {
        let principal = self.authenticate(request.metadata())?;
        let request = request.into_inner();
        let (conversation_id, position) = self
            .gateway
            .core
            .open_conversation(&principal, &request.title)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ConversationOpenedReply {
            request_id: request.request_id,
            conversation_id,
            position,
        }))
    }

    async fn send_message_call(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::MessageAck>, Status> {
        let principal = self.authenticate(request.metadata())?;
        let ack = self
            .gateway
            .core
            .send_message(&principal, send_from_request(request.into_inner()))
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(ack_to_pb(ack)))
    }

    async fn decide_tool_call_call(
        &self,
        request: Request<pb::DecideToolCallRequest>,
    ) -> Result<Response<pb::MessageAck>, Status> {
        let principal = self.authenticate(request.metadata())?;
        let ack = self
            .gateway
            .core
            .decide_tool_call(&principal, decision_from_request(request.into_inner()))
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(ack_to_pb(ack)))
    }

    async fn get_conversation_call(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::GetConversationResponse>, Status> {
        let principal = self.authenticate(request.metadata())?;
        let request = request.into_inner();
        let page_size = if request.page_size == 0 {
            100
        } else {
            request.page_size as usize
        };
        let (entries, next_after_position) = self
            .gateway
            .core
            .history(
                &principal,
                &request.conversation_id,
                request.after_position,
                page_size,
            )
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::GetConversationResponse {
            conversation_id: request.conversation_id,
            events: entries
                .into_iter()
                .map(|entry| pb::CommittedEvent {
                    position: entry.position.offset,
                    event: Some(entry.event),
                })
                .collect(),
            next_after_position,
        }))
    }
}

/// Runs a unary call inside its server span, recording its status there.
async fn traced<T>(
    span: tracing::Span,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let result = call.instrument(span.clone()).await;
    record_grpc_status(&span, result.as_ref().err());
    result
}

/// The command a frame carries, or the error for it with the frame's request id.
fn command_from_frame(frame: pb::ClientFrame) -> Result<ChatCommand, (Option<String>, ChatError)> {
    let Some(frame) = frame.frame else {
        let message =
            "a ClientFrame must set one of open, send, subscribe, unsubscribe, decide_tool_call";
        return Err((None, ChatError::InvalidRequest(message.into())));
    };
    Ok(match frame {
        ClientFrameKind::Open(open) => ChatCommand::Open {
            request_id: non_empty(open.request_id),
            title: open.title,
        },
        ClientFrameKind::Send(send) => ChatCommand::Send(send_from_request(send)),
        ClientFrameKind::Subscribe(subscribe) => ChatCommand::Subscribe {
            request_id: non_empty(subscribe.request_id),
            conversation_id: subscribe.conversation_id,
            after_position: subscribe.after_position,
        },
        ClientFrameKind::Unsubscribe(unsubscribe) => ChatCommand::Unsubscribe {
            request_id: non_empty(unsubscribe.request_id),
            conversation_id: unsubscribe.conversation_id,
        },
        ClientFrameKind::DecideToolCall(decision) => {
            ChatCommand::DecideToolCall(decision_from_request(decision))
        }
    })
}

fn decision_from_request(decision: pb::DecideToolCallRequest) -> ToolCallDecision {
    ToolCallDecision {
        request_id: non_empty(decision.request_id),
        conversation_id: decision.conversation_id,
        tool_call_event_id: decision.tool_call_event_id,
        approved: decision.approved,
        reason: decision.reason,
    }
}

fn send_from_request(send: pb::SendMessageRequest) -> SendMessage {
    SendMessage {
        request_id: non_empty(send.request_id),
        conversation_id: non_empty(send.conversation_id),
        client_message_id: non_empty(send.client_message_id),
        text: send.text,
        context: Vec::new(),
        model: String::new(),
    }
}

fn ack_to_pb(ack: MessageAck) -> pb::MessageAck {
    pb::MessageAck {
        request_id: ack.request_id.unwrap_or_default(),
        conversation_id: ack.conversation_id,
        event_id: ack.event_id,
        position: ack.position,
        duplicate: ack.duplicate,
    }
}

fn frame_from_reply(reply: ChatReply) -> Option<pb::ServerFrame> {
    let frame = match reply {
        ChatReply::Opened {
            request_id,
            conversation_id,
            position,
        } => ServerFrameKind::Opened(pb::ConversationOpenedReply {
            request_id: request_id.unwrap_or_default(),
            conversation_id,
            position,
        }),
        ChatReply::Ack(ack) => ServerFrameKind::Ack(ack_to_pb(ack)),
        ChatReply::Subscribed {
            request_id,
            conversation_id,
        } => ServerFrameKind::Subscribed(pb::Subscribed {
            request_id: request_id.unwrap_or_default(),
            conversation_id,
        }),
        ChatReply::Unsubscribed {
            request_id,
            conversation_id,
        } => ServerFrameKind::Unsubscribed(pb::Unsubscribed {
            request_id: request_id.unwrap_or_default(),
            conversation_id,
        }),
        ChatReply::Delta(delta) => ServerFrameKind::Delta(pb::TokenDelta {
            conversation_id: delta.conversation_id,
            reply_to: delta.reply_to,
            index: delta.index,
            text: delta.text,
        }),
        ChatReply::Event(entry) => ServerFrameKind::Event(pb::CommittedEvent {
            position: entry.position.offset,
            event: Some(entry.event),
        }),
        ChatReply::Error { request_id, error } => ServerFrameKind::Error(pb::Error {
            request_id: request_id.unwrap_or_default(),
            code: error.code().to_owned(),
            message: error.to_string(),
            retry_after_ms: error.retry_after().map_or(0, |d| d.as_millis() as u64),
        }),
    };
    Some(pb::ServerFrame { frame: Some(frame) })
}
