//! Router-specific test helpers: collecting a model's stream and the mcp
//! processor's answer to a tool request. The scripted provider server and
//! the SSE builders come from `chatstream_test_support::fake_provider`.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of this module

use futures::StreamExt;

pub use chatstream_test_support::fake_provider::*;

/// Collects a model stream into (text, the final item).
pub async fn collect(
    model: &dyn chatstream_router::model::ChatModel,
    request: chatstream_router::model::CompletionRequest,
) -> (
    String,
    Vec<Result<chatstream_router::model::ModelChunk, chatstream_router::model::ModelError>>,
) {
    use chatstream_router::model::ModelChunk;
    let chunks: Vec<_> = model.stream(request).collect().await;
    let text = chunks
        .iter()
        .filter_map(|c| match c {
            Ok(ModelChunk::Token(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    (text, chunks)
}

/// The mcp processor's answer to the tool request `request`: `text`.
pub fn completed(request: &chatstream_schemas::Event, text: &str) -> chatstream_schemas::Event {
    use chatstream_schemas::event::{EventContext, new_event};
    use chatstream_schemas::pb::events::{ToolCallCompleted, event::Payload};
    let Some(Payload::ToolCallRequested(asked)) = &request.payload else {
        panic!("{request:?}")
    };
    new_event(
        chatstream_schemas::ids::derived_event_id(&request.id, 0),
        EventContext {
            tenant_id: &request.tenant_id,
            conversation_id: &request.conversation_id,
            causation_id: &request.id,
            correlation_id: &request.correlation_id,
        },
        Payload::ToolCallCompleted(Box::new(ToolCallCompleted {
            call_id: asked.call_id.clone(),
            request: Some((**asked).clone()),
            content_text: text.into(),
            ..Default::default()
        })),
    )
}
