//! A turn with a tool call: the model's request becomes `ToolCallRequested`,
//! the tool's result continues the turn, and the answer uses it.
mod support;

use std::sync::Arc;
use std::time::Duration;

use chatstream_core::runner::Processor;
use chatstream_router::ModelRouter;
use chatstream_router::mock::MockModel;
use chatstream_router::tools::MAX_TOOL_DEPTH;
use chatstream_schemas::ids::derived_event_id;
use chatstream_schemas::pb::events::event::Payload;
use chatstream_test_support::conformance::user_message;
use chatstream_test_support::embedded::{EmbeddedBackends, events_caused_by};
use support::completed;

#[tokio::test]
async fn a_tool_call_ends_the_step_and_its_result_continues_the_turn() {
    let (log, store, fanout, _dir) = EmbeddedBackends::open().into_parts();
    let router = ModelRouter::new(
        log.clone(),
        store,
        fanout,
        Arc::new(MockModel::new(Duration::ZERO)),
    );

    let message = user_message(
        "acme",
        "c",
        r#"/mock tool time.get_current_time {"timezone":"UTC"}"#,
    );
    let position = log.append("acme", &message).await.unwrap();
    router.handle(&message, position).await.unwrap();
    router.handle(&message, position).await.unwrap(); // redelivered

    let asked = events_caused_by(log.as_ref(), &message.id).await;
    assert_eq!(asked.len(), 1, "{asked:?}");
    let request = &asked[0];
    assert_eq!(request.id, derived_event_id(&message.id, 0));
    let Some(Payload::ToolCallRequested(call)) = &request.payload else {
        panic!("{request:?}")
    };
    assert_eq!(
        (call.server.as_str(), call.tool.as_str()),
        ("time", "get_current_time")
    );
    assert_eq!(call.arguments_json, r#"{"timezone":"UTC"}"#);
    assert_eq!(call.turn_depth, 1);

    let done = completed(request, "2026-11-26T12:00:00+00:00");
    let position = log.append("acme", &done).await.unwrap();
    router.handle(&done, position).await.unwrap();
    router.handle(&done, position).await.unwrap(); // redelivered

    let answers = events_caused_by(log.as_ref(), &done.id).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].correlation_id, message.id, "the same turn");
    let Some(Payload::AssistantMessage(answer)) = &answers[0].payload else {
        panic!("{:?}", answers[0])
    };
    assert!(
        answer.text.contains("2026-11-26T12:00:00+00:00"),
        "{answer:?}"
    );
    assert!(answer.text.contains("time__get_current_time"), "{answer:?}");
}

#[tokio::test]
async fn a_turn_stops_at_the_maximum_tool_depth() {
    let (log, store, fanout, _dir) = EmbeddedBackends::open().into_parts();
    let model = MockModel::new(Duration::ZERO);
    let router = ModelRouter::new(log.clone(), store, fanout, Arc::new(model.clone()));

    // A model that asks for a tool again after every result.
    let message = user_message("acme", "c", "/mock tool a.b {}");
    let position = log.append("acme", &message).await.unwrap();
    router.handle(&message, position).await.unwrap();
    let mut step = events_caused_by(log.as_ref(), &message.id).await.remove(0);
    for depth in 1..=MAX_TOOL_DEPTH {
        model.script([chatstream_router::mock::MockReply::ToolCall(
            chatstream_router::model::ToolCallChunk {
                call_id: format!("again-{depth}"),
                name: "a.b".into(),
                arguments_json: "{}".into(),
            },
        )]);
        let done = completed(&step, "more");
        let position = log.append("acme", &done).await.unwrap();
        router.handle(&done, position).await.unwrap();
        step = events_caused_by(log.as_ref(), &done.id).await.remove(0);
        if depth < MAX_TOOL_DEPTH {
            let Some(Payload::ToolCallRequested(call)) = &step.payload else {
                panic!("{step:?}")
            };
            assert_eq!(call.turn_depth, depth + 1);
        }
    }
    let Some(Payload::ErrorOccurred(error)) = &step.payload else {
        panic!("{step:?}")
    };
    assert_eq!(error.code, "tool_depth_exceeded");
}
