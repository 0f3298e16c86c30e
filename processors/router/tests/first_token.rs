//! How fast a turn was, as the router reports it: the usage event of a
//! streamed turn says how long its first token took, from the router
//! starting the turn (what the analytics processor projects as
//! `time_to_first_token_ms`), and every model call is a GenAI operation on
//! the metrics, with its tokens and its time to first chunk.
use std::time::{Duration, Instant};

use chatstream_config::models::ModelsConfig;
use chatstream_core::runner::Processor;
use chatstream_router::mock::MockModel;
use chatstream_router::router_from_config;
use chatstream_schemas::pb::events::event::Payload;
use chatstream_test_support::conformance::user_message;
use chatstream_test_support::embedded::{EmbeddedBackends, events_caused_by};

const FIRST_TOKEN_DELAY: Duration = Duration::from_millis(120);

/// A router whose one catalog model, `fast`, is the built-in mock (as a
/// configured provider, so usage is recorded) with a first-token delay.
fn router_with_a_slow_first_token(backends: &EmbeddedBackends) -> chatstream_router::ModelRouter {
    let models: ModelsConfig = serde_yaml_ng::from_str(
        "providers: {m: {kind: mock}}\ncatalog: {fast: {provider: m}}\ndefault_routing: {candidates: [{model: fast}]}\n",
    )
    .expect("models config");
    let mock = MockModel::new(Duration::ZERO).with_first_token_delay(FIRST_TOKEN_DELAY);
    router_from_config(
        backends.log.clone(),
        backends.store.clone(),
        backends.fanout.clone(),
        &models,
        mock,
        &[],
    )
    .expect("router")
}

#[tokio::test]
async fn the_usage_event_carries_the_time_to_first_token() {
    let backends = EmbeddedBackends::open();
    let router = router_with_a_slow_first_token(&backends);
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

#[test]
fn every_model_call_is_a_genai_operation_on_the_metrics() {
    use chatstream_router::genai_metrics::{
        OPERATION_DURATION, SECONDS_BUCKETS, TIME_TO_FIRST_CHUNK, TOKEN_BUCKETS, TOKEN_USAGE,
    };
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(TOKEN_USAGE.into()), &TOKEN_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(OPERATION_DURATION.into()), &SECONDS_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(TIME_TO_FIRST_CHUNK.into()), &SECONDS_BUCKETS)
        })
        .expect("buckets")
        .build_recorder();
    let handle = recorder.handle();
    // A runtime on this thread only, so the thread's recorder sees the turn.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let backends = EmbeddedBackends::open();
            let router = router_with_a_slow_first_token(&backends);
            let message = user_message("acme", "c", "hello");
            let position = backends.log.append("acme", &message).await.expect("append");
            router.handle(&message, position).await.expect("handle");
        })
    });
    let exposition = handle.render();
    let labels = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"m\"";
    for expected in [
        format!(
            "{TOKEN_USAGE}_count{{{labels},gen_ai_request_model=\"fast\",gen_ai_response_model=\"fast\",gen_ai_token_type=\"input\"}} 1"
        ),
        format!(
            "{TOKEN_USAGE}_count{{{labels},gen_ai_request_model=\"fast\",gen_ai_response_model=\"fast\",gen_ai_token_type=\"output\"}} 1"
        ),
        format!(
            "{OPERATION_DURATION}_count{{{labels},gen_ai_request_model=\"fast\",gen_ai_response_model=\"fast\"}} 1"
        ),
        format!(
            "{TIME_TO_FIRST_CHUNK}_count{{{labels},gen_ai_request_model=\"fast\",gen_ai_response_model=\"fast\"}} 1"
        ),
        // 120 ms: not in the 0.08 s bucket, in the 0.16 s one.
        format!(
            "{TIME_TO_FIRST_CHUNK}_bucket{{{labels},gen_ai_request_model=\"fast\",gen_ai_response_model=\"fast\",le=\"0.08\"}} 0"
        ),
        format!(
            "{TIME_TO_FIRST_CHUNK}_bucket{{{labels},gen_ai_request_model=\"fast\",gen_ai_response_model=\"fast\",le=\"0.16\"}} 1"
        ),
    ] {
        assert!(
            exposition.contains(&expected),
            "no `{expected}` in:\n{exposition}"
        );
    }
    assert!(
        !exposition.contains("tenant"),
        "no tenant label:\n{exposition}"
    );
}
