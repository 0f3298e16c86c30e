//! The router answers each user message once: redelivery after a crash and
//! a client's retried send do not produce a second answer or a second charge,
//! also when the runner handles a partition's conversations side by side and
//! they finish out of order.
mod support;

use std::sync::Arc;
use std::time::Duration;

use chatstream_core::fanout::{FanOut, FanOutMessage};
use chatstream_core::log::{ClaimedAppend, EventLog, SendClaim};
use chatstream_core::runner::{Processor, ProcessorRunner, RunnerConfig};
use chatstream_core::store::ProjectionStore;
use chatstream_router::ModelRouter;
use chatstream_router::mock::MockModel;
use chatstream_router::model::{ChatModel, CompletionRequest, ModelChunk, ModelError, Role};
use chatstream_schemas::codec;
use chatstream_schemas::pb::events::event::Payload;
use chatstream_test_support::conformance::user_message;
use chatstream_test_support::embedded::{EmbeddedBackends, events_caused_by};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

struct Setup {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    fanout: Arc<dyn FanOut>,
    router: ModelRouter,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let (log, store, fanout, dir) = EmbeddedBackends::open().into_parts();
    let model = Arc::new(MockModel::new(Duration::ZERO));
    let router = ModelRouter::new(log.clone(), store.clone(), fanout.clone(), model);
    Setup {
        log,
        store,
        fanout,
        router,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_redelivered_message_is_answered_once_with_a_deterministic_id() {
    let setup = setup();
    let mut live = setup.fanout.subscribe("acme", "c").await.unwrap();
    let message = user_message("acme", "c", "hello world");
    let position = setup.log.append("acme", &message).await.unwrap();

    setup.router.handle(&message, position).await.unwrap();
    setup.router.handle(&message, position).await.unwrap(); // redelivered after a crash

    let answers = events_caused_by(setup.log.as_ref(), &message.id).await;
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

    assert_eq!(
        events_caused_by(setup.log.as_ref(), &original.id)
            .await
            .len(),
        1
    );
    assert!(
        events_caused_by(setup.log.as_ref(), &retry.id)
            .await
            .is_empty(),
        "the retry is not answered"
    );
}

#[tokio::test]
async fn a_send_the_log_claimed_is_told_apart_from_a_copy_by_the_log() {
    let setup = setup();
    let original = user_message("acme", "c", "once please");
    let Some(Payload::UserMessageSent(sent)) = &original.payload else {
        unreachable!()
    };
    let client_message_id = sent.client_message_id.clone();
    let mut copy = user_message("acme", "c", "once please");
    if let Some(Payload::UserMessageSent(sent)) = &mut copy.payload {
        sent.client_message_id = client_message_id.clone();
    }
    let claim = SendClaim {
        tenant_id: "acme".into(),
        client_message_id: client_message_id.clone(),
    };
    let claims = setup.log.claiming().expect("the embedded log claims sends");
    let ClaimedAppend::Appended(positions) = claims
        .append_claiming("acme", &claim, std::slice::from_ref(&original))
        .await
        .unwrap()
    else {
        panic!("the first send appends");
    };
    // A copy that went around the claim (as on a log without claims).
    let copy_position = setup.log.append("acme", &copy).await.unwrap();

    setup.router.handle(&copy, copy_position).await.unwrap();
    setup.router.handle(&original, positions[0]).await.unwrap();

    assert!(
        events_caused_by(setup.log.as_ref(), &copy.id)
            .await
            .is_empty(),
        "the copy is not answered, though it came first"
    );
    assert_eq!(
        events_caused_by(setup.log.as_ref(), &original.id)
            .await
            .len(),
        1
    );
    assert_eq!(
        setup
            .store
            .get_client_message("acme", &client_message_id)
            .await
            .unwrap(),
        None,
        "the log answered: the router claimed nothing in the store"
    );
}

#[tokio::test]
async fn a_model_failure_is_answered_with_an_error_event() {
    let setup = setup();
    let message = user_message("acme", "c", "/mock error provider down");
    let position = setup.log.append("acme", &message).await.unwrap();
    setup.router.handle(&message, position).await.unwrap();
    let answers = events_caused_by(setup.log.as_ref(), &message.id).await;
    let Some(Payload::ErrorOccurred(error)) = &answers[0].payload else {
        panic!("{answers:?}")
    };
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("model_error", "provider down")
    );
}

/// A router over a real OpenAI-compatible server, for `tenant` with a budget.
fn routed_router(
    server: &support::ProviderServer,
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    fanout: Arc<dyn FanOut>,
) -> ModelRouter {
    let config: chatstream_config::models::ModelsConfig = serde_yaml_ng::from_str(&format!(
        "providers: {{p: {{kind: openai, base_url: '{}/v1'}}}}\ncatalog: {{gpt: {{provider: p, prompt_usd_per_million: 1.0}}}}\ndefault_routing: {{candidates: [{{model: gpt}}]}}\n",
        server.base_url()
    ))
    .unwrap();
    let tenants = chatstream_config::tenants::TenantRegistry::parse(&format!(
        "tenants:\n  - id: acme\n    api_keys: [{{id: k, sha256: {}}}]\n    limits: {{monthly_token_budget: 100}}\n",
        chatstream_config::tenants::hash_api_key("k")
    ))
    .unwrap();
    let catalog =
        chatstream_router::providers::build_catalog(&config, &MockModel::new(Duration::ZERO))
            .unwrap();
    let routing =
        chatstream_router::routing::Routing::new(&config, catalog, tenants.tenants()).unwrap();
    ModelRouter::with_routing(log, store, fanout, Arc::new(routing))
}

fn usage_events(events: &[chatstream_schemas::Event]) -> Vec<&chatstream_schemas::Event> {
    events
        .iter()
        .filter(|e| matches!(e.payload, Some(Payload::ModelUsageRecorded(_))))
        .collect()
}

/// A provider that answers every request with "hi".
async fn provider_saying_hi() -> support::ProviderServer {
    let server = support::ProviderServer::start().await;
    server.set_default(support::Reply::sse(&support::openai_stream(&["hi"], 5)));
    server
}

#[tokio::test]
async fn a_redelivered_or_restarted_turn_calls_the_provider_and_charges_once() {
    let server = provider_saying_hi().await;
    let (log, store, fanout, _dir) = EmbeddedBackends::open().into_parts();
    let message = user_message("acme", "c", "hello");
    let position = log.append("acme", &message).await.unwrap();

    let router = routed_router(&server, log.clone(), store.clone(), fanout.clone());
    router.handle(&message, position).await.unwrap();
    router.handle(&message, position).await.unwrap(); // redelivered
    let restarted = routed_router(&server, log.clone(), store.clone(), fanout.clone());
    restarted.handle(&message, position).await.unwrap(); // after a restart

    assert_eq!(server.requests().len(), 1, "one provider call");
    let caused = events_caused_by(log.as_ref(), &message.id).await;
    let usage = usage_events(&caused);
    assert_eq!(usage.len(), 1, "one charge");
    assert_eq!(
        usage[0].id,
        chatstream_schemas::ids::derived_event_id(
            &message.id,
            chatstream_router::USAGE_EVENT_INDEX
        )
    );
    let answers: Vec<_> = caused
        .iter()
        .filter(|e| matches!(e.payload, Some(Payload::AssistantMessage(_))))
        .collect();
    assert_eq!(answers.len(), 1, "one answer");
    assert_eq!(
        answers[0].id,
        chatstream_schemas::ids::derived_event_id(&message.id, 0)
    );
}

#[tokio::test]
async fn a_turn_repeated_after_a_lost_mark_reproduces_the_same_ids_and_is_counted_once() {
    // A crash after the answer was appended but before the side effect was
    // marked: the turn runs again (a second provider call cannot be
    // avoided), but every event it appends has the id of the first copy,
    // so the spend derived from the projection counts the turn once.
    let server = provider_saying_hi().await;
    // Two stores: the one before the crash lost the mark.
    let (log, before_crash, fanout, dir) = EmbeddedBackends::open().into_parts();
    let after_crash: Arc<dyn ProjectionStore> = Arc::new(
        chatstream_core::store::embedded::EmbeddedStore::open(&dir.path().join("after")).unwrap(),
    );

    let message = user_message("acme", "c", "hello");
    let position = log.append("acme", &message).await.unwrap();
    routed_router(&server, log.clone(), before_crash, fanout.clone())
        .handle(&message, position)
        .await
        .unwrap();
    routed_router(&server, log.clone(), after_crash.clone(), fanout.clone())
        .handle(&message, position)
        .await
        .unwrap();
    assert_eq!(server.requests().len(), 2);
    let caused = events_caused_by(log.as_ref(), &message.id).await;
    let usage = usage_events(&caused);
    assert_eq!(usage.len(), 2, "both runs appended their usage...");
    assert_eq!(usage[0].id, usage[1].id, "...with one id");

    // Project the log, then let a fresh ledger derive the month's spend.
    let projector = chatstream_projector::ConversationProjector::new(
        log.clone(),
        after_crash.clone(),
        fanout.clone(),
    );
    let opened = chatstream_schemas::event::new_event(
        chatstream_schemas::ids::new_event_id(),
        chatstream_schemas::event::EventContext {
            tenant_id: "acme",
            conversation_id: "c",
            causation_id: "",
            correlation_id: "",
        },
        Payload::ConversationOpened(Default::default()),
    );
    let opened_at = log.append("acme", &opened).await.unwrap();
    projector.handle(&opened, opened_at).await.unwrap();
    for record in log.read(0, 0, 1000).await.unwrap() {
        let event = codec::decode(&record.value).unwrap();
        projector.handle(&event, record.position).await.unwrap();
    }
    let ledger = chatstream_router::accounting::BudgetLedger::new(after_crash);
    let month = chatstream_router::accounting::month_of(std::time::SystemTime::now());
    assert_eq!(
        ledger.spent("acme", &month).await.unwrap(),
        6,
        "5 prompt + 1 completion, once"
    );
    assert_eq!(ledger.spent("other", &month).await.unwrap(), 0);
}

// --- Under the runner, with turns of a partition side by side ---------------

/// The mock model, counting its calls; turns whose text starts with `slow`
/// wait until the gate opens.
struct CountingModel {
    mock: MockModel,
    requests: Arc<std::sync::Mutex<Vec<CompletionRequest>>>,
    gate: tokio::sync::watch::Receiver<bool>,
}

impl ChatModel for CountingModel {
    fn name(&self) -> &str {
        "mock"
    }

    fn stream(
        &self,
        request: CompletionRequest,
    ) -> futures::stream::BoxStream<'static, Result<ModelChunk, ModelError>> {
        self.requests.lock().unwrap().push(request.clone());
        let slow = request.last_user_text().starts_with("slow");
        let reply = self.mock.stream(request);
        let mut gate = self.gate.clone();
        futures::stream::once(async move {
            if slow {
                // Closed for good: the turn never ends (until a crash).
                let _ = gate.wait_for(|open| *open).await;
            }
            reply
        })
        .flatten()
        .boxed()
    }
}

/// How many model calls answered `text`.
fn calls_for(requests: &[CompletionRequest], text: &str) -> usize {
    requests
        .iter()
        .filter(|request| request.last_user_text() == text)
        .count()
}

fn runner_config() -> RunnerConfig {
    RunnerConfig {
        poll_timeout: Duration::from_millis(10),
        commit_interval: Duration::from_millis(5),
        ..RunnerConfig::default()
    }
}

async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn answered(log: &dyn EventLog, messages: &[chatstream_schemas::Event]) -> bool {
    for message in messages {
        if events_caused_by(log, &message.id).await.is_empty() {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_turns_finished_out_of_order_redoes_none_of_them() {
    let (log, store, fanout, _dir) = EmbeddedBackends::open().into_parts();
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (_never, closed) = tokio::sync::watch::channel(false);
    let (_open, opened) = tokio::sync::watch::channel(true);
    let model = |gate| {
        Arc::new(CountingModel {
            mock: MockModel::new(Duration::ZERO),
            requests: requests.clone(),
            gate,
        })
    };

    // The first message of the partition is a slow turn; five later ones,
    // in other conversations, finish before it.
    let slow = user_message("acme", "c0", "slow turn");
    log.append("acme", &slow).await.unwrap();
    let fast: Vec<_> = (1..=5)
        .map(|n| user_message("acme", &format!("c{n}"), &format!("fast {n}")))
        .collect();
    for message in &fast {
        log.append("acme", message).await.unwrap();
    }
    let router = ModelRouter::new(log.clone(), store.clone(), fanout.clone(), model(closed));
    let first = tokio::spawn(
        ProcessorRunner::new(log.clone(), Arc::new(router), runner_config())
            .run(CancellationToken::new()),
    );
    // Answered and marked done: a turn whose answer is on the log but whose
    // mark is not yet written was still in flight, and may be called again.
    eventually("the fast turns answered and marked done", async || {
        let mut done = answered(log.as_ref(), &fast).await;
        for message in &fast {
            done &= store
                .is_processed(ModelRouter::NAME, &message.id)
                .await
                .unwrap();
        }
        done
    })
    .await;
    eventually("their position committed up to the slow turn", async || {
        log.committed(ModelRouter::NAME, 0).await.unwrap() == Some(0)
    })
    .await;
    // A crash: no drain, no last commit.
    first.abort();
    let _ = first.await;

    let router = ModelRouter::new(log.clone(), store.clone(), fanout.clone(), model(opened));
    let shutdown = CancellationToken::new();
    let second = tokio::spawn(
        ProcessorRunner::new(log.clone(), Arc::new(router), runner_config()).run(shutdown.clone()),
    );
    eventually("the slow turn answered after the restart", async || {
        answered(log.as_ref(), std::slice::from_ref(&slow)).await
    })
    .await;
    eventually("everything committed", async || {
        let end = log.end_offset(0).await.unwrap();
        log.committed(ModelRouter::NAME, 0).await.unwrap() == Some(end)
    })
    .await;
    shutdown.cancel();
    second.await.unwrap().unwrap();

    let requests = requests.lock().unwrap().clone();
    for message in &fast {
        let Some(Payload::UserMessageSent(sent)) = &message.payload else {
            unreachable!()
        };
        assert_eq!(
            calls_for(&requests, &sent.text),
            1,
            "{} called once",
            sent.text
        );
    }
    assert_eq!(
        calls_for(&requests, "slow turn"),
        2,
        "the turn in flight at the crash is the only one called again"
    );
    for message in fast.iter().chain([&slow]) {
        assert_eq!(events_caused_by(log.as_ref(), &message.id).await.len(), 1);
    }
    let records = log.read(0, 0, 1000).await.unwrap();
    let ids: Vec<String> = records
        .iter()
        .map(|r| codec::decode(&r.value).unwrap().id)
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "nothing on the log twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_conversations_each_see_their_own_previous_answer() {
    const CONVERSATIONS: usize = 12;
    let (log, store, fanout, _dir) = EmbeddedBackends::open().into_parts();
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (_open, opened) = tokio::sync::watch::channel(true);
    let model = Arc::new(CountingModel {
        mock: MockModel::new(Duration::from_millis(2)),
        requests: requests.clone(),
        gate: opened,
    });
    let router = ModelRouter::new(log.clone(), store, fanout, model);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        ProcessorRunner::new(log.clone(), Arc::new(router), runner_config()).run(shutdown.clone()),
    );
    for round in ["first", "second"] {
        let sent: Vec<_> = (0..CONVERSATIONS)
            .map(|n| user_message("acme", &format!("c{n}"), &format!("{round} in c{n}")))
            .collect();
        for message in &sent {
            log.append("acme", message).await.unwrap();
        }
        eventually("the round answered", async || {
            answered(log.as_ref(), &sent).await
        })
        .await;
    }
    shutdown.cancel();
    run.await.unwrap().unwrap();

    let requests = requests.lock().unwrap().clone();
    for n in 0..CONVERSATIONS {
        let second = format!("second in c{n}");
        let request = requests
            .iter()
            .find(|request| request.last_user_text() == second)
            .expect("the second turn was answered");
        let seen: Vec<(Role, String)> = request
            .messages
            .iter()
            .map(|m| (m.role, m.content.clone()))
            .collect();
        let first = format!("first in c{n}");
        assert_eq!(
            seen,
            [
                (Role::User, first.clone()),
                (Role::Assistant, MockModel::reply_to(&first)),
                (Role::User, second),
            ],
            "c{n} sees its own previous answer and nothing of the others"
        );
    }
}
