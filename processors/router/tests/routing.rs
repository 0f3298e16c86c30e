//! The router over real HTTP providers on loopback: fallback, Retry-After,
//! circuit breakers, first-token and stall timeouts, usage of streams that
//! break off, budgets that survive a restart, allowlists and caps. Every
//! routing decision must show up as an event.
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatstream_config::models::ModelsConfig;
use chatstream_config::tenants::{TenantRegistry, hash_api_key};
use chatstream_core::fanout::{FanOut, FanOutMessage};
use chatstream_core::log::EventLog;
use chatstream_core::runner::Processor;
use chatstream_core::store::ProjectionStore;
use chatstream_projector::ConversationProjector;
use chatstream_router::ModelRouter;
use chatstream_router::mock::MockModel;
use chatstream_router::providers::build_catalog;
use chatstream_router::routing::Routing;
use chatstream_router::routing::breaker::BreakerState;
use chatstream_schemas::Event;
use chatstream_schemas::codec;
use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::pb::events::ConversationOpened;
use chatstream_schemas::pb::events::event::Payload;
use chatstream_test_support::conformance::user_message;
use chatstream_test_support::embedded::{EmbeddedBackends, events_caused_by};
use futures::StreamExt;
use support::*;

/// `gpt` (OpenAI wire format) leads, `claude` (Anthropic) is the fallback;
/// `policy` adds lines to the default policy (no retries unless it says so).
fn models_config(
    openai: &ProviderServer,
    anthropic: &ProviderServer,
    policy: &str,
) -> ModelsConfig {
    let policy = if policy.is_empty() {
        "retries: 0"
    } else {
        policy
    };
    let yaml = format!(
        r#"
providers:
  primary: {{kind: openai, base_url: "{}/v1"}}
  backup: {{kind: anthropic, base_url: "{}"}}
catalog:
  gpt: {{provider: primary, model: gpt-4o-mini, prompt_usd_per_million: 1.0, completion_usd_per_million: 2.0}}
  claude: {{provider: backup, model: claude-haiku, prompt_usd_per_million: 3.0, completion_usd_per_million: 4.0}}
default_routing:
  candidates: [{{model: gpt}}, {{model: claude, weight: 0}}]
  first_token_timeout_ms: 500
  stall_timeout_ms: 300
  deadline_ms: 10000
  backoff_ms: 10
  max_backoff_ms: 2000
  {policy}
circuit_breaker: {{failure_threshold: 2, open_ms: 400}}
"#,
        openai.base_url(),
        anthropic.base_url()
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

const TENANTS: &str = r#"
tenants:
  - id: acme
    api_keys: [{id: k, sha256: KEY}]
  - id: tight
    api_keys: [{id: k, sha256: KEY2}]
    limits: {monthly_token_budget: 20}
  - id: tight-too
    api_keys: [{id: k, sha256: KEY3}]
    limits: {monthly_token_budget: 20}
  - id: picky
    api_keys: [{id: k, sha256: KEY4}]
    routing:
      candidates: [{model: gpt}, {model: claude}]
      allowed_models: [claude]
      max_tokens: 5
"#;

struct Harness {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    fanout: Arc<dyn FanOut>,
    router: ModelRouter,
    openai: ProviderServer,
    anthropic: ProviderServer,
    _dir: tempfile::TempDir,
}

fn routing(openai: &ProviderServer, anthropic: &ProviderServer, policy: &str) -> Arc<Routing> {
    let config = models_config(openai, anthropic, policy);
    let tenants = TENANTS
        .replace("KEY2", &hash_api_key("k2"))
        .replace("KEY3", &hash_api_key("k3"))
        .replace("KEY4", &hash_api_key("k4"))
        .replace("KEY", &hash_api_key("k1"));
    let registry = TenantRegistry::parse(&tenants).unwrap();
    let catalog = build_catalog(&config, &MockModel::new(Duration::ZERO)).unwrap();
    Arc::new(Routing::new(&config, catalog, registry.tenants()).unwrap())
}

async fn harness(policy: &str) -> Harness {
    let (openai, anthropic) = (ProviderServer::start().await, ProviderServer::start().await);
    let (log, store, fanout, dir) = EmbeddedBackends::open().into_parts();
    let router = ModelRouter::with_routing(
        log.clone(),
        store.clone(),
        fanout.clone(),
        routing(&openai, &anthropic, policy),
    );
    Harness {
        log,
        store,
        fanout,
        router,
        openai,
        anthropic,
        _dir: dir,
    }
}

impl Harness {
    /// Appends a user message, lets the router handle it, and returns the
    /// events it caused, in log order.
    async fn turn(&self, tenant: &str, text: &str) -> (Event, Vec<Payload>) {
        let message = user_message(tenant, "c", text);
        let position = self.log.append(tenant, &message).await.unwrap();
        self.router.handle(&message, position).await.unwrap();
        let caused = self.caused_by(&message.id).await;
        (message, caused)
    }

    async fn caused_by(&self, cause: &str) -> Vec<Payload> {
        let events = events_caused_by(self.log.as_ref(), cause).await;
        events.into_iter().filter_map(|e| e.payload).collect()
    }
}

fn ok_openai() -> Reply {
    Reply::sse(&openai_stream(&["from", " gpt"], 9))
}

fn ok_anthropic() -> Reply {
    Reply::sse(&format!(
        "{}{}{}{}",
        anthropic_start(12),
        anthropic_text("from"),
        anthropic_text(" claude"),
        anthropic_end(2, "end_turn")
    ))
}

fn answer_text(payload: &Payload) -> (&str, &str) {
    match payload {
        Payload::AssistantMessage(answer) => (answer.model.as_str(), answer.text.as_str()),
        Payload::ErrorOccurred(error) => ("error", error.code.as_str()),
        other => panic!("not an answer: {other:?}"),
    }
}

/// Short names of the routing events, e.g. `decided:gpt:primary`.
fn routing_trail(events: &[Payload]) -> Vec<String> {
    events
        .iter()
        .filter_map(|p| match p {
            Payload::ModelRoutingDecided(d) => Some(format!("decided:{}:{}", d.model, d.reason)),
            Payload::ModelAttemptFailed(f) => Some(format!(
                "failed:{}:{}:{}",
                f.model,
                f.error_code,
                if f.will_retry { "retry" } else { "final" }
            )),
            _ => None,
        })
        .collect()
}

fn usage_of(events: &[Payload]) -> &chatstream_schemas::pb::events::ModelUsageRecorded {
    events
        .iter()
        .find_map(|p| match p {
            Payload::ModelUsageRecorded(u) => Some(u.as_ref()),
            _ => None,
        })
        .expect("a usage event")
}

#[tokio::test]
async fn a_500_falls_back_to_the_next_candidate_and_every_step_is_an_event() {
    let h = harness("").await;
    h.openai
        .script([Reply::status(500, r#"{"error":{"message":"boom"}}"#)]);
    h.anthropic.script([ok_anthropic()]);
    let mut live = h.fanout.subscribe("acme", "c").await.unwrap();

    let (_, events) = h.turn("acme", "hello").await;
    assert_eq!(
        routing_trail(&events),
        vec![
            "decided:gpt:primary",
            "failed:gpt:server_error:retry",
            "decided:claude:fallback"
        ]
    );
    assert_eq!(
        answer_text(events.last().unwrap()),
        ("claude", "from claude")
    );
    let usage = usage_of(&events);
    let tokens = usage.usage.unwrap();
    assert_eq!((tokens.prompt_tokens, tokens.completion_tokens), (12, 2));
    // claude's prices: 12 * 3.0 + 2 * 4.0 millionths.
    assert_eq!(usage.cost_micros, 44);
    assert_eq!((usage.attempts, usage.partial), (2, false));

    let mut streamed = String::new();
    while streamed != "from claude" {
        if let FanOutMessage::Delta(delta) = live.next().await.unwrap().unwrap() {
            streamed.push_str(&delta.text);
        }
    }
    assert_eq!(h.openai.requests().len(), 1);
    assert_eq!(h.anthropic.requests()[0].body["model"], "claude-haiku");
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let h = harness("retries: 1").await;
    h.openai.script([
        Reply::Status {
            status: 429,
            headers: vec![("retry-after", "1".into())],
            body: r#"{"error":{"message":"slow down"}}"#.into(),
        },
        ok_openai(),
    ]);
    let started = Instant::now();
    let (_, events) = h.turn("acme", "hello").await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After"
    );
    assert_eq!(
        routing_trail(&events),
        vec![
            "decided:gpt:primary",
            "failed:gpt:rate_limited:retry",
            "decided:gpt:retry"
        ]
    );
    let Payload::ModelAttemptFailed(failed) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(failed.retry_after_ms, 1000);
    assert_eq!(answer_text(events.last().unwrap()), ("gpt", "from gpt"));
    assert!(h.anthropic.requests().is_empty());
}

#[tokio::test]
async fn a_retry_after_longer_than_the_backoff_cap_moves_on_to_the_next_candidate() {
    let h = harness("retries: 3").await;
    h.openai.script([Reply::Status {
        status: 429,
        headers: vec![("retry-after", "60".into())],
        body: "{}".into(),
    }]);
    h.anthropic.script([ok_anthropic()]);
    let started = Instant::now();
    let (_, events) = h.turn("acme", "hello").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        answer_text(events.last().unwrap()),
        ("claude", "from claude")
    );
    assert_eq!(h.openai.requests().len(), 1, "not retried against its wish");
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures_and_recovers_after_a_trial() {
    let h = harness("").await;
    h.openai.set_default(Reply::status(502, "bad gateway"));
    h.anthropic.set_default(ok_anthropic());
    for _ in 0..2 {
        let (_, events) = h.turn("acme", "hello").await;
        assert_eq!(answer_text(events.last().unwrap()).0, "claude");
    }
    let breaker = h.router.routing().breaker("primary").unwrap().clone();
    assert_eq!(breaker.state(), BreakerState::Open);

    // Open: the failing endpoint is not called at all.
    let (_, events) = h.turn("acme", "hello").await;
    assert_eq!(h.openai.requests().len(), 2);
    let Payload::ModelRoutingDecided(decided) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(decided.model, "claude");
    assert_eq!(decided.skipped_open_circuits, vec!["primary".to_owned()]);

    // After the open period one trial goes through; it succeeds and closes it.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    h.openai.set_default(ok_openai());
    let (_, events) = h.turn("acme", "hello").await;
    assert_eq!(answer_text(events.last().unwrap()), ("gpt", "from gpt"));
    assert_eq!(h.openai.requests().len(), 3);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test]
async fn no_first_token_in_time_fails_over() {
    let h = harness("").await;
    h.openai.script([Reply::Stream {
        pieces: vec![Piece::Bytes(": still thinking\n\n".into())],
        end: End::Stall,
    }]);
    h.anthropic.script([ok_anthropic()]);
    let started = Instant::now();
    let (_, events) = h.turn("acme", "hello").await;
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(
        routing_trail(&events)[1],
        "failed:gpt:first_token_timeout:retry"
    );
    assert_eq!(
        answer_text(events.last().unwrap()),
        ("claude", "from claude")
    );
}

#[tokio::test]
async fn a_stream_that_stalls_after_tokens_ends_the_turn_with_partial_usage() {
    let h = harness("").await;
    let full = openai_stream(&["half", " an", " answer"], 9);
    let two_tokens: String = full.split_inclusive("\n\n").take(2).collect();
    h.openai.script([Reply::Stream {
        pieces: vec![Piece::Bytes(two_tokens)],
        end: End::Stall,
    }]);
    let started = Instant::now();
    let (_, events) = h.turn("acme", "hello there").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(
        routing_trail(&events),
        vec!["decided:gpt:primary", "failed:gpt:stall:final"],
        "no fallback once tokens reached clients"
    );
    assert_eq!(
        answer_text(events.last().unwrap()),
        ("error", "model_stream_interrupted")
    );
    let usage = usage_of(&events);
    assert!(usage.partial && usage.estimated, "{usage:?}");
    assert_eq!(usage.usage.unwrap().completion_tokens, 2);
    assert!(usage.usage.unwrap().prompt_tokens > 0, "prompt estimated");
    assert!(h.anthropic.requests().is_empty());
}

#[tokio::test]
async fn a_stream_cut_off_midway_records_the_usage_the_provider_reported() {
    let h = harness("").await;
    h.openai.set_default(Reply::status(503, "down"));
    h.anthropic.script([Reply::Stream {
        pieces: vec![Piece::Bytes(format!(
            "{}{}{}",
            anthropic_start(12),
            anthropic_text("par"),
            anthropic_text("tial")
        ))],
        end: End::Reset,
    }]);
    let (_, events) = h.turn("acme", "hello").await;
    assert_eq!(
        answer_text(events.last().unwrap()),
        ("error", "model_stream_interrupted")
    );
    let usage = usage_of(&events);
    let tokens = usage.usage.unwrap();
    assert_eq!((tokens.prompt_tokens, tokens.completion_tokens), (12, 2));
    assert!(usage.partial);
    assert_eq!(usage.model, "claude");
    assert_eq!(usage.cost_micros, 12 * 3 + 2 * 4);
}

#[tokio::test]
async fn the_allowlist_and_the_max_tokens_cap_apply_per_tenant() {
    let h = harness("").await;
    h.anthropic.script([ok_anthropic()]);
    let (_, events) = h.turn("picky", "hello").await;
    assert_eq!(routing_trail(&events), vec!["decided:claude:primary"]);
    assert_eq!(answer_text(events.last().unwrap()).0, "claude");
    assert!(
        h.openai.requests().is_empty(),
        "gpt is not allowed for picky"
    );
    assert_eq!(h.anthropic.requests()[0].body["max_tokens"], 5);
}

/// Writes what the router appended into the projection store, as the
/// conversation projector does in a running platform.
async fn project_everything(h: &Harness, tenants: &[&str]) {
    let projector = ConversationProjector::new(h.log.clone(), h.store.clone(), h.fanout.clone());
    for tenant in tenants {
        let opened = new_event(
            chatstream_schemas::ids::new_event_id(),
            EventContext {
                tenant_id: tenant,
                conversation_id: "c",
                causation_id: "",
                correlation_id: "",
            },
            Payload::ConversationOpened(ConversationOpened::default()),
        );
        let position = h.log.append(tenant, &opened).await.unwrap();
        projector.handle(&opened, position).await.unwrap();
    }
    for record in h.log.read(0, 0, 10_000).await.unwrap() {
        let event = codec::decode(&record.value).unwrap();
        projector.handle(&event, record.position).await.unwrap();
    }
}

#[tokio::test]
async fn the_monthly_budget_caps_calls_survives_a_restart_and_is_per_tenant() {
    let h = harness("").await;
    h.openai.set_default(ok_openai()); // 9 prompt + 2 completion tokens a turn

    let (_, first) = h.turn("tight", "one").await;
    assert_eq!(answer_text(first.last().unwrap()).0, "gpt");
    assert_eq!(
        h.openai.requests()[0].body["max_tokens"],
        20,
        "capped by the budget"
    );
    let (_, second) = h.turn("tight", "two").await;
    assert_eq!(answer_text(second.last().unwrap()).0, "gpt");
    assert_eq!(h.openai.requests()[1].body["max_tokens"], 9, "20 - 11 left");
    // 22 of 20 spent: the overrun is bounded by one request.
    let (_, third) = h.turn("tight", "three").await;
    assert_eq!(
        answer_text(third.last().unwrap()),
        ("error", "budget_exceeded")
    );
    assert_eq!(h.openai.requests().len(), 2, "no call over budget");

    // Another tenant with the same budget is not charged for tight's use.
    let (_, other) = h.turn("tight-too", "hi").await;
    assert_eq!(answer_text(other.last().unwrap()).0, "gpt");

    // A restarted router derives the spend from the projection store.
    project_everything(&h, &["tight", "tight-too"]).await;
    let restarted = ModelRouter::with_routing(
        h.log.clone(),
        h.store.clone(),
        h.fanout.clone(),
        routing(&h.openai, &h.anthropic, ""),
    );
    let message = user_message("tight", "c", "after restart");
    let position = h.log.append("tight", &message).await.unwrap();
    restarted.handle(&message, position).await.unwrap();
    let caused = h.caused_by(&message.id).await;
    assert_eq!(
        answer_text(caused.last().unwrap()),
        ("error", "budget_exceeded")
    );

    let message = user_message("tight-too", "c", "after restart");
    let position = h.log.append("tight-too", &message).await.unwrap();
    restarted.handle(&message, position).await.unwrap();
    let caused = h.caused_by(&message.id).await;
    assert_eq!(
        answer_text(caused.last().unwrap()).0,
        "gpt",
        "11 of 20 spent"
    );
    assert_eq!(h.openai.requests()[3].body["max_tokens"], 9);
}
