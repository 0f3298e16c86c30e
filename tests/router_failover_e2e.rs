//! Exactly-once answers across a processor crash, with every role in its
//! own process: one gateway, one conversation projector and three routers
//! on an 8-partition Kafka topic, the ScyllaDB store (the CQL test server)
//! and the Redis fan-out. Each tenant talks in several conversations at
//! once, so a router has many turns of one partition in flight when one
//! router is killed with SIGKILL mid-stream; the test then proves, as
//! clients and the projection see it, that every acked user message got
//! exactly one assistant message (one charge), none is lost, order holds
//! within each conversation, turns really overlapped, and the surviving
//! routers took over the dead one's partitions.
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chatstream_schemas::pb::events::event::Payload;
use chatstream_schemas::pb::gateway::GetConversationRequest;
use chatstream_schemas::ws::{ClientFrame, EventBody, EventJson, ServerFrame};
use support::cluster::{RoleProcess, SharedBackends};
use support::{Ws, authed, connect_ws};

const PARTITIONS: u32 = 8;
const TENANTS: usize = 16;
/// Conversations each tenant talks in at once: with two tenants on a
/// partition, up to eight of its turns are in flight together.
const CONVERSATIONS_PER_TENANT: usize = 4;
const MESSAGES_PER_CONVERSATION: usize = 4;
/// Slower tokens than the default, so turns overlap long enough to see.
const MOCK_TOKEN_DELAY_MS: &str = "60";
/// Long enough for a rebalance after a crash (session timeout 6 s) and
/// the redelivered turns.
const ANSWER_WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_router_loses_and_duplicates_nothing() {
    let tenant_ids: Vec<String> = (0..TENANTS).map(|i| format!("tenant-{i:02}")).collect();
    let Some(mut backends) = SharedBackends::create(PARTITIONS, &tenant_ids).await else {
        return;
    };
    backends.set_env("CHATSTREAM_MOCK_TOKEN_DELAY_MS", MOCK_TOKEN_DELAY_MS);
    let _projector = backends.processor("conversation-projector").await;
    let mut routers = Vec::new();
    for _ in 0..3 {
        routers.push(backends.processor("router").await);
    }
    wait_until_balanced(&routers).await;
    let most_in_flight = watch_in_flight(&routers);
    let gateway = backends.gateway().await;
    let gateway_http = gateway.http_addr.clone();

    // Every tenant's client sends its messages one after another, while
    // the main task kills a router a third of the way through.
    let acked = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for tenant in &tenant_ids {
        let api_key = backends.key(tenant).to_owned();
        let (http, acked) = (gateway_http.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            run_client(&http, &api_key, acked).await
        }));
    }
    let total = TENANTS * CONVERSATIONS_PER_TENANT * MESSAGES_PER_CONVERSATION;
    wait_for(
        || acked.load(Ordering::SeqCst) >= total / 3,
        "a third of the sends acked",
    )
    .await;
    let victim = busiest_router(&routers).await;
    let victim_partitions = assigned_partitions(&routers[victim]).await;
    assert!(
        !victim_partitions.is_empty(),
        "the router to kill owns partitions"
    );
    routers[victim].kill().await;
    let acked_at_kill = acked.load(Ordering::SeqCst);
    let survivors: Vec<RoleProcess> = routers
        .into_iter()
        .enumerate()
        .filter_map(|(i, router)| (i != victim).then_some(router))
        .collect();

    let mut conversations = Vec::new();
    for (tenant, client) in tenant_ids.iter().zip(clients) {
        for turns in client.await.expect("client task") {
            assert_exactly_one_answer_each(
                tenant,
                "the client",
                &turns.user_event_ids,
                &turns.events,
            );
            conversations.push((tenant.clone(), turns));
        }
    }
    assert_eq!(acked.load(Ordering::SeqCst), total, "every send was acked");
    let most_in_flight = most_in_flight.load(Ordering::SeqCst);
    assert!(
        most_in_flight > (PARTITIONS as usize).div_ceil(3),
        "turns of one partition overlapped: a router had {most_in_flight} in flight at most, \
         no more than the partitions it owns"
    );

    // The projection (GetConversation) holds exactly one answer per message, in order.
    let mut grpc = support::grpc_client(gateway.grpc_addr.as_deref().expect("gRPC")).await;
    for (tenant, turns) in &conversations {
        let history = grpc
            .get_conversation(authed(
                GetConversationRequest {
                    conversation_id: turns.conversation_id.clone(),
                    after_position: None,
                    page_size: 1000,
                },
                backends.key(tenant),
            ))
            .await
            .expect("GetConversation")
            .into_inner();
        let events: Vec<EventJson> = history
            .events
            .iter()
            .map(|committed| {
                let event = committed.event.as_ref().expect("event");
                EventJson::from_event(event).expect("an event with a known payload")
            })
            .collect();
        assert_exactly_one_answer_each(tenant, "the projection", &turns.user_event_ids, &events);
        let charged: u32 = history
            .events
            .iter()
            .filter_map(|c| match c.event.as_ref()?.payload.as_ref()? {
                Payload::AssistantMessage(answer) => Some(answer.usage?.completion_tokens),
                _ => None,
            })
            .sum();
        let seen_by_client: u32 = turns
            .events
            .iter()
            .filter_map(|event| match &event.body {
                EventBody::AssistantMessage { usage, .. } => Some(usage.completion_tokens),
                _ => None,
            })
            .sum();
        assert_eq!(
            charged, seen_by_client,
            "{tenant}: the tokens charged in the projection are the ones the client saw"
        );
    }

    // The survivors own every partition, the dead router's included (they
    // answered its tenants above; this checks they say so too).
    wait_until_balanced(&survivors).await;
    let mut taken_over = BTreeSet::new();
    for survivor in &survivors {
        taken_over.extend(assigned_partitions(survivor).await);
    }
    assert!(
        victim_partitions.is_subset(&taken_over),
        "survivors took over {victim_partitions:?}; they report {taken_over:?}"
    );
    eprintln!(
        "killed a router owning partitions {victim_partitions:?} after {acked_at_kill} of {total} acks \
         (at most {most_in_flight} turns in flight in one router); the survivors own {taken_over:?}"
    );
}

/// What one conversation's client saw.
struct Turns {
    conversation_id: String,
    /// Ids of its acked user messages, in send order.
    user_event_ids: Vec<String>,
    /// Committed events delivered on its subscription, in delivery order.
    events: Vec<EventJson>,
}

/// One tenant's client: opens its conversations, subscribes to each, then
/// sends round after round (one message to each conversation per round,
/// each acked before the next, never waiting for answers), so answers of
/// several conversations are due at once. Returns what each conversation saw.
async fn run_client(http_addr: &str, api_key: &str, acked: Arc<AtomicUsize>) -> Vec<Turns> {
    let mut ws = connect_ws(http_addr, api_key).await;
    let mut conversations = Vec::new();
    for _ in 0..CONVERSATIONS_PER_TENANT {
        conversations.push(Turns {
            conversation_id: ws.open_conversation().await,
            user_event_ids: Vec::new(),
            events: Vec::new(),
        });
    }
    // Subscribed only once all are open: `open_conversation` expects its
    // reply next, not a subscription's.
    for turns in &conversations {
        ws.send(&ClientFrame::Subscribe {
            request_id: None,
            conversation_id: turns.conversation_id.clone(),
            after_position: None,
        })
        .await;
    }
    for n in 0..MESSAGES_PER_CONVERSATION {
        for index in 0..conversations.len() {
            ws.send(&ClientFrame::Send {
                request_id: None,
                conversation_id: Some(conversations[index].conversation_id.clone()),
                client_message_id: Some(format!("message-{index}-{n}")),
                text: format!("message {n} in conversation {index}"),
            })
            .await;
            loop {
                match next_frame(&mut ws, &mut conversations).await {
                    Some(ServerFrame::Ack { event_id, .. }) => {
                        conversations[index].user_event_ids.push(event_id);
                        acked.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    Some(ServerFrame::Error { code, message, .. }) => {
                        panic!("send {n} to conversation {index} failed: {code}: {message}")
                    }
                    _ => {}
                }
            }
        }
    }
    // Every answer arrives on the subscriptions.
    let all_answered = |conversations: &[Turns]| {
        conversations
            .iter()
            .all(|turns| answers(&turns.events) >= MESSAGES_PER_CONVERSATION)
    };
    tokio::time::timeout(ANSWER_WAIT, async {
        while !all_answered(&conversations) {
            next_frame(&mut ws, &mut conversations).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let answered: Vec<usize> = conversations.iter().map(|t| answers(&t.events)).collect();
        panic!("answers per conversation after {ANSWER_WAIT:?}: {answered:?} of {MESSAGES_PER_CONVERSATION} each")
    });
    conversations
}

/// The next frame; a committed event is recorded with its conversation.
async fn next_frame(ws: &mut Ws, conversations: &mut [Turns]) -> Option<ServerFrame> {
    let frame = ws.next_frame().await;
    if let ServerFrame::Event { event, .. } = &frame {
        let turns = conversations
            .iter_mut()
            .find(|turns| turns.conversation_id == event.conversation_id)
            .expect("an event of a conversation this client subscribed to");
        turns.events.push(event.clone());
        return None;
    }
    Some(frame)
}

/// Samples every router's in-flight gauge while the test runs and keeps
/// the highest value one router showed.
fn watch_in_flight(routers: &[RoleProcess]) -> Arc<AtomicUsize> {
    let most = Arc::new(AtomicUsize::new(0));
    for router in routers {
        let (http, most) = (router.http_addr.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                if let Ok((_, metrics)) = support::http_get(&http, "/metrics").await {
                    let in_flight = metrics
                        .lines()
                        .find(|line| line.starts_with("chatstream_processor_in_flight{"))
                        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                        .unwrap_or(0.0);
                    most.fetch_max(in_flight as usize, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
    }
    most
}

fn answers(events: &[EventJson]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.body, EventBody::AssistantMessage { .. }))
        .count()
}

/// Each user message is followed by exactly one answer caused by it, the
/// answers come in the order of the messages, and no event repeats.
fn assert_exactly_one_answer_each(
    tenant: &str,
    seen_by: &str,
    user_event_ids: &[String],
    events: &[EventJson],
) {
    let mut ids = BTreeSet::new();
    for event in events {
        assert!(
            ids.insert(&event.id),
            "{tenant}: {seen_by} has event {} twice",
            event.id
        );
    }
    let answered: Vec<&str> = events
        .iter()
        .filter(|e| matches!(e.body, EventBody::AssistantMessage { .. }))
        .map(|e| e.causation_id.as_str())
        .collect();
    let expected: Vec<&str> = user_event_ids.iter().map(String::as_str).collect();
    assert_eq!(
        answered, expected,
        "{tenant}: {seen_by} shows one answer per acked message, in order"
    );
    for (index, event) in events.iter().enumerate() {
        if let EventBody::AssistantMessage { .. } = event.body {
            let asked_at = events
                .iter()
                .position(|e| e.id == event.causation_id)
                .unwrap_or_else(|| panic!("{tenant}: {seen_by} has the message answered"));
            assert!(asked_at < index, "{tenant}: an answer follows its message");
        }
    }
}

/// The partitions a router says it owns now (its assignment gauge).
async fn assigned_partitions(router: &RoleProcess) -> BTreeSet<u32> {
    router
        .metrics()
        .await
        .lines()
        .filter(|line| line.starts_with("chatstream_processor_partition_assigned{"))
        .filter(|line| line.ends_with(" 1"))
        .filter_map(|line| {
            let start = line.find("partition=\"")? + "partition=\"".len();
            let end = start + line[start..].find('"')?;
            line[start..end].parse().ok()
        })
        .collect()
}

/// Waits until every router owns some partitions and together they own
/// all of them, each once.
async fn wait_until_balanced(routers: &[RoleProcess]) {
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    loop {
        let mut owned = Vec::new();
        for router in routers {
            owned.push(assigned_partitions(router).await);
        }
        let union: BTreeSet<u32> = owned.iter().flatten().copied().collect();
        let disjoint = owned.iter().map(BTreeSet::len).sum::<usize>() == union.len();
        if union.len() == PARTITIONS as usize && disjoint && owned.iter().all(|o| !o.is_empty()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the routers never split the partitions: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The router with the most partitions.
async fn busiest_router(routers: &[RoleProcess]) -> usize {
    let mut busiest = (0, 0);
    for (index, router) in routers.iter().enumerate() {
        let count = assigned_partitions(router).await.len();
        if count > busiest.1 {
            busiest = (index, count);
        }
    }
    busiest.0
}

async fn wait_for(condition: impl Fn() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited too long for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
