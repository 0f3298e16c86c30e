//! `POST /v1/chat/completions`: the turn's user message is appended like
//! any other message, then the reply is returned whole or streamed as
//! server-sent `chat.completion.chunk` events ending with `data: [DONE]`.
use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::authenticate;
use super::completion::{self, CompletionMeta, SSE_DONE, sse_event};
use super::error::OpenAiError;
use super::request::{ChatRequest, parse_chat_request};
use super::turn::{ReplyUpdate, ReplyWatch, start_turn};
use crate::Gateway;
use crate::command::SendMessage;
use crate::error::ChatError;

/// The conversation each completion was recorded in, for clients that
/// want to read its events (WebSocket `subscribe`, gRPC `GetConversation`).
pub const CONVERSATION_ID_HEADER: &str = "x-chatstream-conversation-id";
/// OpenAI's SDKs send it to make retries safe; it becomes the message's
/// `client_message_id`.
const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

pub async fn create(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = crate::traces::http_span("POST", "/v1/chat/completions", &headers);
    let response = match respond(gateway, headers, body)
        .instrument(span.clone())
        .await
    {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    crate::traces::record_http_status(&span, response.status().as_u16());
    response
}

async fn respond(
    gateway: Gateway,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    if !gateway.readiness.is_ready() {
        return Err(OpenAiError::not_ready());
    }
    let who = authenticate(&gateway, &headers)?;
    let body = body.map_err(OpenAiError::from_body_rejection)?;
    let request = parse_chat_request(&body)?;
    if !gateway.models.offers(&who, &request.model) {
        return Err(OpenAiError::model_not_found(&request.model));
    }
    let idempotency_key = headers
        .get(IDEMPOTENCY_KEY_HEADER)
        .map(|value| {
            value.to_str().map(str::to_owned).map_err(|_| {
                OpenAiError::invalid_body("the Idempotency-Key header must be visible ASCII")
            })
        })
        .transpose()?;
    let ChatRequest {
        model,
        text,
        context,
        stream,
        include_usage,
    } = request;
    let message = SendMessage {
        request_id: None,
        conversation_id: None,
        client_message_id: idempotency_key,
        text,
        context,
        model: model.clone(),
    };
    let (ack, watch) = start_turn(&gateway, &who, message).await?;
    metrics::counter!("chatstream_gateway_openai_completions_total", "tenant" => who.tenant.id.clone(), "stream" => stream.to_string())
        .increment(1);
    let meta = CompletionMeta {
        id: format!("chatcmpl-{}", ack.event_id),
        created: unix_seconds(),
        model,
    };
    let mut response = if stream {
        stream_reply(meta, watch, include_usage, &ack.conversation_id, &gateway)
    } else {
        whole_reply(meta, watch, &ack.conversation_id, &gateway)
            .await?
            .into_response()
    };
    // Conversation ids are UUIDs, always a valid header value.
    if let Ok(conversation_id) = HeaderValue::from_str(&ack.conversation_id) {
        response
            .headers_mut()
            .insert(CONVERSATION_ID_HEADER, conversation_id);
    }
    Ok(response)
}

/// Waits for the committed reply and answers with all of it.
async fn whole_reply(
    meta: CompletionMeta,
    mut watch: ReplyWatch,
    conversation_id: &str,
    gateway: &Gateway,
) -> Result<Json<Value>, OpenAiError> {
    let timeout = gateway.limits.reply_timeout;
    let outcome = tokio::time::timeout(timeout, async {
        loop {
            tokio::select! {
                _ = gateway.shutdown.cancelled() => return Err(OpenAiError::shutting_down()),
                update = watch.next() => match update {
                    Some(ReplyUpdate::Delta(_)) => continue,
                    Some(ReplyUpdate::Completed { reply, .. }) => {
                        return Ok(Json(completion::completion(&meta, &reply)));
                    }
                    Some(ReplyUpdate::Failed(error)) => {
                        return Err(OpenAiError::model_failed(&error.code, &error.message));
                    }
                    Some(ReplyUpdate::Interrupted(error)) => return Err(error.into()),
                    None => return Err(delivery_ended()),
                },
            }
        }
    })
    .await;
    outcome.unwrap_or_else(|_| Err(OpenAiError::reply_timeout(timeout, conversation_id)))
}

/// A `text/event-stream` of chunks: the role, each delta, the finish
/// reason, the usage when asked, then `[DONE]`. Errors after the response
/// started are an `{"error": ...}` event that ends the stream (no `[DONE]`),
/// which the OpenAI SDKs raise as an API error.
fn stream_reply(
    meta: CompletionMeta,
    watch: ReplyWatch,
    include_usage: bool,
    conversation_id: &str,
    gateway: &Gateway,
) -> Response {
    let stream = SseReply {
        meta,
        watch,
        include_usage,
        conversation_id: conversation_id.to_owned(),
        idle_timeout: gateway.limits.reply_timeout,
        shutdown: gateway.shutdown.clone(),
        state: SseState::Start,
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let bytes = stream.next_event().await?;
        Some((Ok::<_, Infallible>(bytes), stream))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

struct SseReply {
    meta: CompletionMeta,
    watch: ReplyWatch,
    include_usage: bool,
    conversation_id: String,
    /// Longest wait for the next part of the reply.
    idle_timeout: Duration,
    shutdown: CancellationToken,
    state: SseState,
}

enum SseState {
    Start,
    Streaming,
    Ended,
}

impl SseReply {
    /// The bytes of the next event(s); `None` once the stream is over.
    async fn next_event(&mut self) -> Option<Bytes> {
        match self.state {
            SseState::Ended => None,
            SseState::Start => {
                self.state = SseState::Streaming;
                let role = json!({ "role": "assistant", "content": "" });
                Some(sse_event(&self.chunk(role, None)))
            }
            SseState::Streaming => loop {
                let update = tokio::select! {
                    _ = self.shutdown.cancelled() => Err(OpenAiError::shutting_down()),
                    update = tokio::time::timeout(self.idle_timeout, self.watch.next()) => {
                        update.map_err(|_| self.timeout_error())
                    }
                };
                return Some(match update {
                    Ok(Some(ReplyUpdate::Delta(text))) if text.is_empty() => continue,
                    Ok(Some(ReplyUpdate::Delta(text))) => {
                        sse_event(&self.chunk(json!({ "content": text }), None))
                    }
                    Ok(Some(ReplyUpdate::Completed { unstreamed, reply })) => {
                        self.state = SseState::Ended;
                        let mut events = Vec::new();
                        if !unstreamed.is_empty() {
                            let rest = self.chunk(json!({ "content": unstreamed }), None);
                            events.extend_from_slice(&sse_event(&rest));
                        }
                        let finish = completion::finish_reason(&reply);
                        events.extend_from_slice(&sse_event(&self.chunk(json!({}), Some(finish))));
                        if self.include_usage {
                            let usage = completion::usage_chunk(&self.meta, &reply);
                            events.extend_from_slice(&sse_event(&usage));
                        }
                        events.extend_from_slice(SSE_DONE);
                        Bytes::from(events)
                    }
                    Ok(Some(ReplyUpdate::Failed(error))) => {
                        self.end_with(OpenAiError::model_failed(&error.code, &error.message))
                    }
                    Ok(Some(ReplyUpdate::Interrupted(error))) => self.end_with(error.into()),
                    Ok(None) => self.end_with(delivery_ended()),
                    Err(error) => self.end_with(error),
                });
            },
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        completion::chunk(&self.meta, delta, finish_reason, self.include_usage)
    }

    fn timeout_error(&self) -> OpenAiError {
        OpenAiError::reply_timeout(self.idle_timeout, &self.conversation_id)
    }

    fn end_with(&mut self, error: OpenAiError) -> Bytes {
        self.state = SseState::Ended;
        sse_event(&error.body())
    }
}

/// The conversation's delivery stopped without saying why.
fn delivery_ended() -> OpenAiError {
    ChatError::Unavailable("live delivery".into()).into()
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
