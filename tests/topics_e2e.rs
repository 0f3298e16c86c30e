//! `chatstream topics create|describe`, run as the real binary against the
//! Kafka-protocol broker at `CHATSTREAM_TEST_KAFKA` (default
//! `127.0.0.1:9092`), each test on topics of its own. When no broker
//! answers, the broker tests print "not run: ..." and return, unless
//! `CHATSTREAM_TEST_STRICT=1` (set by `scripts/test.sh`): then they fail.

use std::process::Output;
use std::time::{Duration, Instant};

use chatstream_core::log::{EventLog, LogPosition};
use chatstream_kafka::{KafkaLog, KafkaLogConfig};
use chatstream_test_support::conformance::log::wait_for_assignment;
use chatstream_test_support::conformance::{unique, user_message};
use chatstream_test_support::platform::run_subcommand;
use chatstream_test_support::services;

/// Longest a `topics` command may take, even against a dead broker.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// Runs `chatstream topics <args>` with none of the platform's settings
/// from the environment, so only `args` count; fails if it outlives
/// `COMMAND_LIMIT`.
async fn topics(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let bin = env!("CARGO_BIN_EXE_chatstream");
    let output = run_subcommand(bin, "topics", args, COMMAND_LIMIT).await;
    (output, started.elapsed())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the command succeeded and printed each of `lines`.
fn assert_printed(output: &Output, lines: impl IntoIterator<Item = String>) {
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    for line in lines {
        assert!(stdout.contains(&line), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_and_describe_shows_partitions_and_group_lag() {
    let Some(servers) = services::kafka() else {
        return;
    };
    let topic = unique("chatstream-test-topics");
    let dead_letter_topic = format!("{topic}.dead-letter");
    let settings = ["--bootstrap-servers", &servers, "--topic", &topic];
    let create: Vec<&str> = ["create"]
        .iter()
        .chain(&settings)
        .chain(&["--partitions", "3"])
        .copied()
        .collect();

    let both = [&topic, &dead_letter_topic];
    let (first, _) = topics(&create).await;
    assert_printed(
        &first,
        both.map(|t| format!("topic {t}: created (3 partitions")),
    );
    let (second, _) = topics(&create).await;
    assert_printed(&second, both.map(|t| format!("topic {t}: already exists")));

    // Appends in every partition, and a group that committed part of one.
    let config = KafkaLogConfig {
        partitions: 3,
        ..KafkaLogConfig::new(&servers, &topic)
    };
    let log = KafkaLog::connect(config).await.expect("connect");
    let mut positions: Vec<LogPosition> = Vec::new();
    for n in 0..30 {
        let tenant = format!("tenant-{n}");
        positions.push(
            log.append(&tenant, &user_message(&tenant, "c", "hi"))
                .await
                .expect("append"),
        );
    }
    let ends: Vec<u64> = (0..3)
        .map(|partition| {
            positions
                .iter()
                .filter(|position| position.partition == partition)
                .count() as u64
        })
        .collect();
    assert!(ends.iter().all(|&end| end >= 2), "keys spread: {ends:?}");
    let group = unique("operator-group");
    let mut member = log.subscribe(&group).await.expect("subscribe");
    wait_for_assignment(member.as_mut(), "the group's partitions", |assigned| {
        assigned.len() >= 3
    })
    .await;
    member
        .commit(&[LogPosition {
            partition: 0,
            offset: 1,
        }])
        .await
        .expect("commit");
    member.close().await.expect("close");
    assert_eq!(log.committed(&group, 0).await.expect("committed"), Some(1));
    drop(log);

    let describe: Vec<&str> = ["describe"]
        .iter()
        .chain(&settings)
        .chain(&["--group", &group])
        .copied()
        .collect();
    let (described, _) = topics(&describe).await;
    let stdout = text(&described.stdout);
    assert!(
        described.status.success(),
        "{}\n{stdout}",
        text(&described.stderr)
    );
    assert!(
        stdout.contains(&format!("topic {topic}: 3 partitions")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("topic {dead_letter_topic}: 3 partitions")),
        "{stdout}"
    );
    for processor in ["conversation-projector", "router"] {
        let total: u64 = ends.iter().sum();
        assert!(
            stdout.contains(&format!("group {processor}: lag {total}")),
            "the processors' groups never committed: all {total} records are lag\n{stdout}"
        );
    }
    let expected_lag = ends.iter().sum::<u64>() - 1;
    assert!(
        stdout.contains(&format!("group {group}: lag {expected_lag}")),
        "{stdout}"
    );

    // The partition table of the event topic: partition, leader, replicas,
    // in-sync, low, high.
    let event_section = stdout
        .split(&format!("topic {dead_letter_topic}:"))
        .next()
        .unwrap_or_default();
    let event_topic_table: Vec<Vec<&str>> = event_section
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("partition  leader"))
        .skip(1)
        .take_while(|line| !line.trim_start().starts_with("group"))
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(event_topic_table.len(), 3, "{stdout}");
    for (partition, row) in event_topic_table.iter().enumerate() {
        assert_eq!(row[0], partition.to_string(), "{stdout}");
        assert_ne!(
            row[1], "none",
            "partition {partition} has a leader: {stdout}"
        );
        assert_eq!(
            row.last().copied(),
            Some(ends[partition].to_string().as_str()),
            "high watermark of partition {partition}: {stdout}"
        );
    }
    // The operator group's partition 0 row: committed 1, lag end - 1.
    let group_section = stdout
        .split(&format!("group {group}:"))
        .nth(1)
        .expect("the group's section");
    let row: Vec<&str> = group_section
        .lines()
        .find(|line| line.trim_start().starts_with("0 "))
        .expect("partition 0 row")
        .split_whitespace()
        .collect();
    assert_eq!(row, ["0", "1", &(ends[0] - 1).to_string()], "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_partition_count_is_refused_with_the_existing_count() {
    let Some(servers) = services::kafka() else {
        return;
    };
    let topic = unique("chatstream-test-topics");
    let create = |partitions: &'static str| {
        let (servers, topic) = (servers.clone(), topic.clone());
        async move {
            topics(&[
                "create",
                "--bootstrap-servers",
                &servers,
                "--topic",
                &topic,
                "--partitions",
                partitions,
            ])
            .await
            .0
        }
    };
    let created = create("2").await;
    assert!(created.status.success(), "{}", text(&created.stderr));
    let refused = create("5").await;
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "a different count must fail");
    assert!(
        stderr.contains(&format!("topic {topic:?}"))
            && stderr.contains("has 2 partitions but 5 are configured"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describing_a_missing_topic_says_how_to_create_it() {
    let Some(servers) = services::kafka() else {
        return;
    };
    let topic = unique("chatstream-test-missing");
    let (output, _) = topics(&[
        "describe",
        "--bootstrap-servers",
        &servers,
        "--topic",
        &topic,
    ])
    .await;
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&topic) && stderr.contains("chatstream topics create"),
        "{stderr}"
    );
    assert!(text(&output.stdout).contains("does not exist"));
}

/// Needs no broker: nothing listens on port 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_fails_within_the_request_timeout_and_is_named() {
    for subcommand in ["create", "describe"] {
        let (output, took) = topics(&[
            subcommand,
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--request-timeout-ms",
            "2000",
        ])
        .await;
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{subcommand} must fail");
        assert!(
            stderr.contains("127.0.0.1:1") && stderr.contains("did not answer"),
            "{subcommand}: {stderr}"
        );
        assert!(
            took < Duration::from_secs(10),
            "{subcommand} took {took:?} with a 2 s request timeout"
        );
    }
}

#[tokio::test]
async fn impossible_settings_are_refused_before_connecting() {
    let (output, _) = topics(&["create", "--partitions", "0"]).await;
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("partitions must be between 1"));
}
