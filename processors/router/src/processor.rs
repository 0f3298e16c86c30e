//! Answers each user message once: deltas go to the fan-out as they
//! stream, the result goes to the log with an id derived from the user
//! message's id, and the side effect is marked done so a redelivery after
//! a crash neither calls the model nor appends again.
use std::sync::Arc;

use async_trait::async_trait;
use chatstream_runtime::fanout::{FanOut, FanOutMessage, TokenDelta};
use chatstream_runtime::log::{EventLog, LogPosition};
use chatstream_runtime::projector::is_first_send;
use chatstream_runtime::runner::{ProcessError, Processor};
use chatstream_runtime::store::ProjectionStore;
use chatstream_schemas::Event;
use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::ids::derived_event_id;
use chatstream_schemas::pb::events::{AssistantMessage, ErrorOccurred, TokenUsage, event::Payload};
use futures::StreamExt;

use crate::model::{ChatModel, CompletionRequest, ModelChunk, ModelError};

pub struct ModelRouter {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    fanout: Arc<dyn FanOut>,
    model: Arc<dyn ChatModel>,
}

impl ModelRouter {
    pub const NAME: &'static str = "router";

    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        fanout: Arc<dyn FanOut>,
        model: Arc<dyn ChatModel>,
    ) -> Self {
        Self {
            log,
            store,
            fanout,
            model,
        }
    }

    /// Streams the model's reply as deltas and returns the payload of the
    /// durable outcome: the assistant message, or the error.
    async fn answer(&self, user_message: &Event, text: &str) -> Payload {
        let request = CompletionRequest {
            tenant_id: user_message.tenant_id.clone(),
            conversation_id: user_message.conversation_id.clone(),
            text: text.to_owned(),
        };
        let mut chunks = self.model.stream(request);
        let mut reply = String::new();
        let mut index = 0u32;
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(ModelChunk::Token(token)) => {
                    let delta = TokenDelta {
                        conversation_id: user_message.conversation_id.clone(),
                        reply_to: user_message.id.clone(),
                        index,
                        text: token.clone(),
                    };
                    index += 1;
                    reply.push_str(&token);
                    let published = self
                        .fanout
                        .publish(
                            &user_message.tenant_id,
                            &user_message.conversation_id,
                            FanOutMessage::Delta(delta),
                        )
                        .await;
                    if let Err(error) = published {
                        tracing::warn!(event_id = %user_message.id, %error, "could not publish token delta");
                    }
                }
                Ok(ModelChunk::Done {
                    usage,
                    finish_reason,
                }) => {
                    metrics::counter!("chatstream_router_tokens_total", "model" => self.model.name().to_owned(), "kind" => "completion")
                        .increment(u64::from(usage.completion_tokens));
                    return Payload::AssistantMessage(AssistantMessage {
                        text: reply,
                        model: self.model.name().to_owned(),
                        usage: Some(TokenUsage {
                            prompt_tokens: usage.prompt_tokens,
                            completion_tokens: usage.completion_tokens,
                            total_tokens: usage.prompt_tokens + usage.completion_tokens,
                        }),
                        finish_reason,
                    });
                }
                Err(ModelError::Failed(message)) => return model_error(message),
            }
        }
        model_error("the model ended its stream without finishing".into())
    }
}

fn model_error(message: String) -> Payload {
    Payload::ErrorOccurred(ErrorOccurred {
        code: "model_error".into(),
        message,
        source: ModelRouter::NAME.into(),
        retryable: true,
    })
}

#[async_trait]
impl Processor for ModelRouter {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn handle(&self, event: &Event, position: LogPosition) -> Result<(), ProcessError> {
        let Some(Payload::UserMessageSent(sent)) = &event.payload else {
            return Ok(());
        };
        let retryable =
            |e: chatstream_runtime::store::StoreError| ProcessError::Retryable(e.to_string());
        if !is_first_send(self.store.as_ref(), event, position)
            .await
            .map_err(retryable)?
            || self
                .store
                .is_processed(Self::NAME, &event.id)
                .await
                .map_err(retryable)?
        {
            return Ok(());
        }

        let outcome = self.answer(event, &sent.text).await;
        let correlation_id = if event.correlation_id.is_empty() {
            &event.id
        } else {
            &event.correlation_id
        };
        let answer = new_event(
            derived_event_id(&event.id, 0),
            EventContext {
                tenant_id: &event.tenant_id,
                conversation_id: &event.conversation_id,
                causation_id: &event.id,
                correlation_id,
            },
            outcome,
        );
        self.log
            .append(&event.tenant_id, &answer)
            .await
            .map_err(|e| ProcessError::Retryable(e.to_string()))?;
        self.store
            .mark_processed(Self::NAME, &event.id)
            .await
            .map_err(retryable)?;
        Ok(())
    }
}
