//! Golden tests of the conversation projection: an event stream from
//! `tests/data/projector/<case>.input.json` is replayed through the
//! projector (twice, as after a crash before the commit), and the projected
//! state must equal `<case>.expected.json`. Set `UPDATE_GOLDEN=1` to rewrite
//! the expected files after a deliberate change, then review the diff.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chatstream_core::fanout::in_process::InProcessFanOut;
use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_core::log::{EventLog, LogPosition};
use chatstream_core::runner::Processor;
use chatstream_core::store::ProjectionStore;
use chatstream_core::store::embedded::EmbeddedStore;
use chatstream_projector::ConversationProjector;
use chatstream_schemas::ws::EventJson;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct InputRecord {
    position: u64,
    event: EventJson,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/projector")
}

/// The projected state of every (tenant, conversation) in the input, as JSON.
async fn projected_state(store: &dyn ProjectionStore, input: &[InputRecord]) -> Value {
    let mut keys: Vec<(String, String)> = input
        .iter()
        .map(|r| (r.event.tenant_id.clone(), r.event.conversation_id.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut conversations = Vec::new();
    for (tenant, conversation) in keys {
        let record = store
            .get_conversation(&tenant, &conversation)
            .await
            .unwrap();
        let history = store
            .read_history(&tenant, &conversation, None, 1000)
            .await
            .unwrap();
        conversations.push(json!({
            "tenant_id": tenant,
            "conversation_id": conversation,
            "title": record.map(|r| r.title),
            "history": history.iter().map(|entry| json!({
                "position": entry.position.offset,
                "id": entry.event.id,
                "type": entry.event.r#type,
            })).collect::<Vec<_>>(),
        }));
    }
    let mut client_messages = Vec::new();
    for record in input {
        if let chatstream_schemas::ws::EventBody::UserMessageSent {
            client_message_id, ..
        } = &record.event.body
        {
            let claimed = store
                .get_client_message(&record.event.tenant_id, client_message_id)
                .await
                .unwrap();
            client_messages.push(json!({
                "tenant_id": record.event.tenant_id,
                "client_message_id": client_message_id,
                "event_id": claimed.as_ref().map(|c| c.event_id.clone()),
                "position": claimed.map(|c| c.position.offset),
            }));
        }
    }
    client_messages.dedup();
    json!({ "conversations": conversations, "client_messages": client_messages })
}

async fn check_case(case: &str) {
    let input_text =
        std::fs::read_to_string(data_dir().join(format!("{case}.input.json"))).unwrap();
    let input: Vec<InputRecord> = serde_json::from_str(&input_text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ProjectionStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    // The events are handed over directly: the log holds no claims, so the
    // store's claim decides which copy of a send counts.
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap());
    let projector =
        ConversationProjector::new(log, store.clone(), Arc::new(InProcessFanOut::new()));
    for _replay in 0..2 {
        for record in &input {
            let event = record.event.to_event().unwrap();
            let position = LogPosition {
                partition: 0,
                offset: record.position,
            };
            projector.handle(&event, position).await.unwrap();
        }
    }

    let actual = serde_json::to_string_pretty(&projected_state(store.as_ref(), &input).await)
        .unwrap()
        + "\n";
    let expected_path = data_dir().join(format!("{case}.expected.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    assert_eq!(
        actual,
        expected,
        "projection of {case} differs from {}",
        expected_path.display()
    );
}

#[tokio::test]
async fn retried_send_and_redelivery() {
    check_case("retried_send_and_redelivery").await;
}
