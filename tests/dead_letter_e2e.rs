//! `chatstream dev --log kafka` against the broker at `CHATSTREAM_TEST_KAFKA`
//! (default `127.0.0.1:9092`): a record no processor can read lands on the
//! dead-letter topic, once per processor, and the tenant's partition keeps
//! moving (the next message is answered). Without a broker the test prints
//! "not run: ..." and returns, unless `CHATSTREAM_TEST_STRICT=1`: then it fails.
mod support;

use std::time::Duration;

use chatstream_core::log::EventLog;
use chatstream_kafka::{KafkaLog, KafkaLogConfig, create_topics};
use chatstream_schemas::codec;
use chatstream_schemas::pb::events::event::Payload;
use chatstream_test_support::conformance::unique;
use chatstream_test_support::services;

const PARTITIONS: u32 = 2;
/// The processors `chatstream dev` runs (conversation projector, router,
/// mcp, analytics).
const PROCESSORS: usize = 4;
const POISON: &[u8] = b"\xde\xad not an event";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_dead_lettered_by_every_processor_and_the_tenant_is_still_answered() {
    let Some(servers) = services::kafka() else {
        return;
    };
    let config = KafkaLogConfig {
        partitions: PARTITIONS,
        ..KafkaLogConfig::new(&servers, unique("chatstream-test-dlq-e2e"))
    };
    create_topics(&config).await.expect("create the topics");
    let log = KafkaLog::connect(config.clone()).await.expect("connect");
    let poison = log
        .append_bytes("acme", POISON.to_vec())
        .await
        .expect("append the poison record");

    let partitions = PARTITIONS.to_string();
    let platform = support::Platform::start(&[
        ("CHATSTREAM_LOG_BACKEND", "kafka"),
        ("KAFKA_BOOTSTRAP_SERVERS", &servers),
        ("CHATSTREAM_KAFKA_TOPIC", &config.topic),
        ("CHATSTREAM_LOG_PARTITIONS", &partitions),
    ])
    .await;
    let mut ws = platform.ws(platform.key("acme")).await;
    let (event_id, position, _) = ws.send_message(None, "after the poison").await;
    assert!(
        position > poison.offset,
        "same tenant, same partition, later"
    );

    // The router moved past the poison record and answered.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    'answered: loop {
        for record in log
            .read(poison.partition, poison.offset, 1000)
            .await
            .expect("read")
        {
            let Ok(event) = codec::decode(&record.value) else {
                continue;
            };
            if event.causation_id == event_id
                && matches!(event.payload, Some(Payload::AssistantMessage(_)))
            {
                break 'answered;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer to the message after the poison record"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every processor `chatstream dev` runs (conversation projector, router,
    // mcp, analytics) puts the record, byte for byte, on the dead-letter topic.
    let dead_letters = KafkaLog::connect(KafkaLogConfig {
        partitions: PARTITIONS,
        ..KafkaLogConfig::new(&servers, config.dead_letter_topic())
    })
    .await
    .expect("connect to the dead-letter topic");
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let mut letters = Vec::new();
        for partition in 0..PARTITIONS {
            letters.extend(dead_letters.read(partition, 0, 100).await.expect("read"));
        }
        if letters.len() >= PROCESSORS {
            assert_eq!(
                letters.len(),
                PROCESSORS,
                "one letter per processor: {letters:?}"
            );
            for letter in &letters {
                assert_eq!(letter.key, "acme");
                assert_eq!(letter.value, POISON);
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead letters: {letters:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(platform);
}
