//! The router answers each user message once: redelivery after a crash and
//! a client's retried send do not produce a second answer.
use std::sync::Arc;
use std::time::Duration;

use chatstream_router::ModelRouter;
use chatstream_router::mock::MockModel;
use chatstream_runtime::conformance::user_message;
use chatstream_runtime::fanout::in_process::InProcessFanOut;
use chatstream_runtime::fanout::{FanOut, FanOutMessage};
use chatstream_runtime::log::EventLog;
use chatstream_runtime::log::embedded::EmbeddedLog;
use chatstream_runtime::runner::Processor;
use chatstream_runtime::store::ProjectionStore;
use chatstream_runtime::store::embedded::EmbeddedStore;
use chatstream_schemas::codec;
use chatstream_schemas::pb::events::event::Payload;
use futures::StreamExt;

struct Setup {
    log: Arc<dyn EventLog>,
    fanout: Arc<dyn FanOut>,
    router: ModelRouter,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap());
    let store: Arc<dyn ProjectionStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let fanout: Arc<dyn FanOut> = Arc::new(InProcessFanOut::new());
    let model = Arc::new(MockModel::new(Duration::ZERO));
    let router = ModelRouter::new(log.clone(), store, fanout.clone(), model);
    Setup {
        log,
        fanout,
        router,
        _dir: dir,
    }
}

/// Answers on the log to the user message `cause`.
async fn answers_to(log: &dyn EventLog, cause: &str) -> Vec<chatstream_schemas::Event> {
    let records = log.read(0, 0, 1000).await.unwrap();
    records
        .iter()
        .map(|r| codec::decode(&r.value).unwrap())
        .filter(|e| e.causation_id == cause)
        .collect()
}

#[tokio::test]
async fn a_redelivered_message_is_answered_once_with_a_deterministic_id() {
    let setup = setup();
    let mut live = setup.fanout.subscribe("acme", "c").await.unwrap();
    let message = user_message("acme", "c", "hello world");
    let position = setup.log.append("acme", &message).await.unwrap();

    setup.router.handle(&message, position).await.unwrap();
    setup.router.handle(&message, position).await.unwrap(); // redelivered after a crash

    let answers = answers_to(setup.log.as_ref(), &message.id).await;
    assert_eq!(answers.len(), 1, "one answer on the log");
    let answer = &answers[0];
    assert_eq!(
        answer.id,
        chatstream_schemas::ids::derived_event_id(&message.id, 0)
    );
    let Some(Payload::AssistantMessage(reply)) = &answer.payload else {
        panic!("{answer:?}")
    };
    assert_eq!(reply.text, "You said: hello world");
    assert_eq!(reply.model, "mock");
    assert_eq!(reply.usage.unwrap().completion_tokens, 4);

    // The deltas of the one model call, in order.
    let mut streamed = String::new();
    for index in 0..4 {
        match live.next().await.unwrap().unwrap() {
            FanOutMessage::Delta(delta) => {
                assert_eq!(
                    (delta.index, delta.reply_to.as_str()),
                    (index, message.id.as_str())
                );
                streamed.push_str(&delta.text);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(streamed, reply.text);
}

#[tokio::test]
async fn a_retried_send_with_the_same_client_message_id_is_answered_once() {
    let setup = setup();
    let original = user_message("acme", "c", "once please");
    let mut retry = user_message("acme", "c", "once please");
    let Some(Payload::UserMessageSent(sent)) = &mut retry.payload else {
        unreachable!()
    };
    let Some(Payload::UserMessageSent(first)) = &original.payload else {
        unreachable!()
    };
    sent.client_message_id = first.client_message_id.clone();

    let first_position = setup.log.append("acme", &original).await.unwrap();
    let retry_position = setup.log.append("acme", &retry).await.unwrap();
    setup
        .router
        .handle(&original, first_position)
        .await
        .unwrap();
    setup.router.handle(&retry, retry_position).await.unwrap();

    assert_eq!(answers_to(setup.log.as_ref(), &original.id).await.len(), 1);
    assert!(
        answers_to(setup.log.as_ref(), &retry.id).await.is_empty(),
        "the retry is not answered"
    );
}

#[tokio::test]
async fn a_model_failure_is_answered_with_an_error_event() {
    let setup = setup();
    let message = user_message("acme", "c", "/mock error provider down");
    let position = setup.log.append("acme", &message).await.unwrap();
    setup.router.handle(&message, position).await.unwrap();
    let answers = answers_to(setup.log.as_ref(), &message.id).await;
    let Some(Payload::ErrorOccurred(error)) = &answers[0].payload else {
        panic!("{answers:?}")
    };
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("model_error", "provider down")
    );
}
