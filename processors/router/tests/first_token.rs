//! The usage event of a streamed turn says how long its first token took,
//! from the router starting the turn: what the analytics processor
//! projects as `time_to_first_token_ms`.
use std::time::{Duration, Instant};

use chatstream_config::models::ModelsConfig;
use chatstream_core::runner::Processor;
use chatstream_router::mock::MockModel;
use chatstream_router::router_from_config;
use chatstream_schemas::pb::events::event::Payload;
use chatstream_test_support::conformance::user_message;
use chatstream_test_support::embedded::{EmbeddedBackends, events_caused_by};

const FIRST_TOKEN_DELAY: Duration = Duration::from_millis(120);

#[tokio::test]
async fn the_usage_event_carries_the_time_to_first_token() {
    let backends = EmbeddedBackends::open();
    let models: ModelsConfig = serde_yaml_ng::from_str(
        "providers: {m: {kind: mock}}\ncatalog: {fast: {provider: m}}\ndefault_routing: {candidates: [{model: fast}]}\n",
    )
    .expect("models config");
    let mock = MockModel::new(Duration::ZERO).with_first_token_delay(FIRST_TOKEN_DELAY);
    let router = router_from_config(
        backends.log.clone(),
        backends.store.clone(),
        backends.fanout.clone(),
        &models,
        mock,
        &[],
    )
    .expect("router");
    let message = user_message("acme", "c", "hello");
    let position = backends.log.append("acme", &message).await.expect("append");
    let started = Instant::now();
    router.handle(&message, position).await.expect("handle");
    let took = started.elapsed();

    let outputs = events_caused_by(backends.log.as_ref(), &message.id).await;
    let usage = outputs
        .iter()
        .find_map(|event| match &event.payload {
            Some(Payload::ModelUsageRecorded(usage)) => Some(usage.clone()),
            _ => None,
        })
        .expect("a usage event");
    let first_token = Duration::from_millis(usage.time_to_first_token_ms);
    assert!(
        first_token >= FIRST_TOKEN_DELAY && first_token <= took,
        "{first_token:?}: at least the model's first-token delay, at most the whole turn ({took:?})"
    );
}
