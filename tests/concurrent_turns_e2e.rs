//! Many turns of one tenant at once, on the real binary: the processors
//! work on many conversations of a partition side by side, keep each
//! conversation in order, and keep one tenant's flood from delaying
//! another tenant on the same partition. The model is an OpenAI-compatible
//! provider on loopback that takes a while to answer and counts how many
//! requests it is answering at once.
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chatstream_schemas::ws::{EventBody, EventJson, ServerFrame};
use chatstream_test_support::fake_provider::{End, Piece, ProviderServer, Reply, openai_stream};
use support::{Platform, Ws};

/// Conversations of one tenant that ask at once.
const CONVERSATIONS: usize = 200;
/// WebSocket connections the conversations are spread over, evenly.
const CONNECTIONS: usize = 8;
const _: () = assert!(CONVERSATIONS.is_multiple_of(CONNECTIONS));
/// Messages per conversation.
const MESSAGES: usize = 3;
/// How long answers may take in all; generous for a loaded 2-core machine
/// (the turns themselves need about 2 × `MESSAGES` seconds when they overlap).
const ANSWER_WAIT: Duration = Duration::from_secs(120);

/// A provider that waits `delay` before streaming a short answer.
async fn slow_provider(delay: Duration) -> ProviderServer {
    let provider = ProviderServer::start().await;
    provider.respond_with(move |_| Reply::Stream {
        pieces: vec![
            Piece::Pause(delay),
            Piece::Bytes(openai_stream(&["slow", " answer"], 3)),
        ],
        end: End::Close,
    });
    provider
}

/// A `chatstream.yaml` routing every turn to `provider`, with `extra` lines.
fn config_for(provider: &ProviderServer, extra: &str) -> tempfile::NamedTempFile {
    let config = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        config.path(),
        format!(
            r#"models:
  providers:
    slow: {{kind: openai, base_url: "{}/v1"}}
  catalog:
    slow-model: {{provider: slow, model: slow-model}}
  default_routing:
    candidates: [{{model: slow-model}}]
    retries: 0
{extra}"#,
            provider.base_url()
        ),
    )
    .expect("write the config");
    config
}

/// One conversation as its client saw it: the acked user messages (event
/// id, log position) and the committed events delivered to it.
#[derive(Default)]
struct Conversation {
    sent: Vec<(String, u64)>,
    events: Vec<EventJson>,
}

impl Conversation {
    fn answers(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter(|e| matches!(e.body, EventBody::AssistantMessage { .. }))
            .map(|e| e.causation_id.as_str())
            .collect()
    }
}

/// Reads frames until every conversation of this connection has
/// `answers` answers; acks and events are recorded by conversation.
async fn read_until_answered(
    ws: &mut Ws,
    conversations: &mut HashMap<String, Conversation>,
    answers: usize,
) {
    tokio::time::timeout(ANSWER_WAIT, async {
        while conversations.values().any(|c| c.answers().len() < answers) {
            match ws.next_frame().await {
                ServerFrame::Event { event, .. } => conversations
                    .get_mut(&event.conversation_id)
                    .expect("an event of a conversation this connection opened")
                    .events
                    .push(event),
                ServerFrame::Ack {
                    conversation_id,
                    event_id,
                    position,
                    ..
                } => conversations
                    .get_mut(&conversation_id)
                    .expect("an ack of a conversation this connection opened")
                    .sent
                    .push((event_id, position)),
                ServerFrame::Error { code, message, .. } => panic!("{code}: {message}"),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        let done = conversations
            .values()
            .filter(|c| c.answers().len() >= answers)
            .count();
        panic!(
            "{done} of {} conversations had {answers} answers after {ANSWER_WAIT:?}",
            conversations.len()
        )
    });
}

/// One connection's share: opens its conversations with a first message
/// each (acked, not answered), subscribes to all, then sends the later
/// messages without waiting and reads until everything is answered.
async fn run_connection(
    http_addr: String,
    api_key: String,
    count: usize,
) -> HashMap<String, Conversation> {
    let mut ws = support::connect_ws(&http_addr, &api_key).await;
    let mut conversations: HashMap<String, Conversation> = HashMap::new();
    for n in 0..count {
        let (event_id, position, conversation_id) =
            ws.send_message(None, &format!("first message {n}")).await;
        conversations
            .entry(conversation_id)
            .or_default()
            .sent
            .push((event_id, position));
    }
    let ids: Vec<String> = conversations.keys().cloned().collect();
    for id in &ids {
        ws.subscribe(id).await;
    }
    read_until_answered(&mut ws, &mut conversations, 1).await;
    for round in 1..MESSAGES {
        for id in &ids {
            ws.send(&support::send_frame(Some(id), &format!("message {round}")))
                .await;
        }
    }
    read_until_answered(&mut ws, &mut conversations, MESSAGES).await;
    conversations
}

/// Each user message has exactly one answer, the answers come in the
/// order the messages are on the log, and each follows its message.
fn assert_answered_in_order(conversation_id: &str, conversation: &Conversation) {
    let mut sent = conversation.sent.clone();
    sent.sort_by_key(|(_, position)| *position);
    let expected: Vec<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        conversation.answers(),
        expected,
        "conversation {conversation_id}: one answer per message, in log order"
    );
    for (index, event) in conversation.events.iter().enumerate() {
        if matches!(event.body, EventBody::AssistantMessage { .. }) {
            let asked_at = conversation
                .events
                .iter()
                .position(|e| e.id == event.causation_id)
                .expect("the answered message is in the conversation");
            assert!(
                asked_at < index,
                "conversation {conversation_id}: an answer follows its message"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_conversations_of_one_tenant_are_answered_side_by_side() {
    // Two seconds: time enough, on a loaded machine, for all the first
    // messages to arrive while the first model calls still run.
    let provider = slow_provider(Duration::from_secs(2)).await;
    let config = config_for(&provider, "");
    let platform = Platform::start(&[("CHATSTREAM_CONFIG", config.path().to_str().unwrap())]).await;

    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(tokio::spawn(run_connection(
            platform.http_addr.clone(),
            platform.key("acme").to_owned(),
            CONVERSATIONS / CONNECTIONS,
        )));
    }
    let mut conversations = HashMap::new();
    for client in clients {
        conversations.extend(client.await.expect("client task"));
    }

    assert_eq!(
        conversations.len(),
        CONVERSATIONS,
        "every first message opened its own conversation"
    );
    for (id, conversation) in &conversations {
        assert_eq!(
            conversation.sent.len(),
            MESSAGES,
            "conversation {id}: every send acked"
        );
        assert_answered_in_order(id, conversation);
    }
    let calls = provider.requests().len();
    assert_eq!(
        calls,
        CONVERSATIONS * MESSAGES,
        "one model call per message"
    );
    // The first messages of all conversations were sent within a fraction
    // of the model's second: handled one at a time (as a partition used to
    // be), the provider would never see more than one request at once.
    let most = provider.most_in_flight();
    assert!(
        most >= CONVERSATIONS * 3 / 4,
        "the model was asked by at most {most} turns at once; expected most of the {CONVERSATIONS}"
    );
    eprintln!(
        "{CONVERSATIONS} conversations × {MESSAGES} messages: up to {most} model calls in flight at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_flooding_its_partition_does_not_delay_another_tenant() {
    const FLOOD: usize = 160;
    const PER_TENANT: usize = 4;
    const FLOOD_CONNECTIONS: usize = 4;
    let provider = slow_provider(Duration::from_millis(400)).await;
    let config = config_for(&provider, "");
    // One partition: both tenants' records are in one queue.
    let platform = Platform::start(&[
        ("CHATSTREAM_CONFIG", config.path().to_str().unwrap()),
        ("CHATSTREAM_LOG_PARTITIONS", "1"),
        (
            "CHATSTREAM_MAX_IN_FLIGHT_PER_TENANT",
            &PER_TENANT.to_string(),
        ),
    ])
    .await;

    // acme floods: FLOOD turns at once (over several connections: one
    // holds at most 100 subscriptions), of which only PER_TENANT run at a
    // time, so its queue takes FLOOD / PER_TENANT × 0.4 s = 16 s to drain.
    let flood_sent = Arc::new(AtomicUsize::new(0));
    let flood_answered = Arc::new(AtomicUsize::new(0));
    let mut flood_readers = Vec::new();
    for connection in 0..FLOOD_CONNECTIONS {
        let mut ws = platform.ws(platform.key("acme")).await;
        let (sent, answered) = (flood_sent.clone(), flood_answered.clone());
        flood_readers.push(tokio::spawn(async move {
            let count = FLOOD / FLOOD_CONNECTIONS;
            let mut ids = Vec::new();
            for n in 0..count {
                let text = format!("flood {connection}/{n}");
                ids.push(ws.send_message(None, &text).await.2);
                sent.fetch_add(1, Ordering::SeqCst);
            }
            for id in &ids {
                ws.subscribe(id).await;
            }
            let mut mine = 0;
            while mine < count {
                match ws.next_frame().await {
                    ServerFrame::Event { event, .. }
                        if matches!(event.body, EventBody::AssistantMessage { .. }) =>
                    {
                        mine += 1;
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    ServerFrame::Error { code, message, .. } => panic!("{code}: {message}"),
                    _ => {}
                }
            }
        }));
    }
    while flood_sent.load(Ordering::SeqCst) < FLOOD {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // globex, on the same partition and behind acme's whole queue on the
    // log, asks once.
    let mut other = platform.ws(platform.key("globex")).await;
    let (user_event_id, conversation_id) = other.send_and_subscribe("am I served?").await;
    let answer = tokio::time::timeout(ANSWER_WAIT, async {
        loop {
            if let ServerFrame::Event { event, .. } = other.next_frame().await
                && event.causation_id == user_event_id
                && event.conversation_id == conversation_id
                && matches!(event.body, EventBody::AssistantMessage { .. })
            {
                return event;
            }
        }
    })
    .await
    .expect("globex is answered");
    let flood_done_then = flood_answered.load(Ordering::SeqCst);
    assert!(
        flood_done_then < FLOOD / 2,
        "globex waited behind acme's queue: {flood_done_then} of acme's {FLOOD} turns were answered first"
    );
    assert!(
        matches!(answer.body, EventBody::AssistantMessage { ref text, .. } if text == "slow answer")
    );

    // acme's queue is not lost, only paced: every turn is answered.
    for reader in flood_readers {
        tokio::time::timeout(ANSWER_WAIT, reader)
            .await
            .expect("every flooded turn is answered in time")
            .expect("flood reader");
    }
    assert!(
        provider.most_in_flight() <= PER_TENANT + 1,
        "acme held to {PER_TENANT} turns at once (+1 for globex): the provider saw {}",
        provider.most_in_flight()
    );
    eprintln!("globex was answered after {flood_done_then} of acme's {FLOOD} flooded turns");
}
