//! `chatstream topics create|describe`: the operator's view of the Kafka
//! topics. `create` makes the event topic and its dead-letter topic with
//! the configured partitions and replication (safe to run again);
//! `describe` prints partitions, leaders, high watermarks and each
//! processor group's committed offsets and lag.
use anyhow::Context;
use chatstream_kafka::{
    KafkaLogConfig, TopicCreation, TopicDescription, create_topics, describe_topic,
};
use clap::{Args, Subcommand};

use crate::ConfigFile;
use crate::processors::ProcessorKind;

#[derive(Args, Debug)]
pub struct TopicsArgs {
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(Subcommand, Debug)]
enum TopicsCommand {
    /// Create the event topic and its dead-letter topic. Topics that exist
    /// with the configured partition count are left alone; another count is
    /// an error (it decides which partition holds each tenant).
    Create(KafkaArgs),
    /// Print each topic's partitions, leaders and high watermarks, and the
    /// committed offset and lag of every processor's consumer group.
    Describe(DescribeArgs),
}

/// Where the topics are and what they should look like. Flags win over
/// environment variables, which win over `chatstream.yaml` (its `kafka` and
/// `log` sections), which wins over the built-in defaults.
#[derive(Args, Debug, Default)]
pub struct KafkaArgs {
    #[command(flatten)]
    config: ConfigFile,
    /// Comma-separated `host:port` list (env KAFKA_BOOTSTRAP_SERVERS) [default: 127.0.0.1:9092].
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// The event topic (env CHATSTREAM_KAFKA_TOPIC) [default: chatstream.events].
    #[arg(long)]
    topic: Option<String>,
    /// The dead-letter topic (env CHATSTREAM_KAFKA_DEAD_LETTER_TOPIC) [default: <topic>.dead-letter].
    #[arg(long)]
    dead_letter_topic: Option<String>,
    /// Partitions of each topic (env CHATSTREAM_LOG_PARTITIONS) [default: 8].
    #[arg(long)]
    partitions: Option<u32>,
    /// Replicas of each partition (env CHATSTREAM_KAFKA_REPLICATION_FACTOR) [default: 1].
    #[arg(long)]
    replication_factor: Option<u16>,
    /// Bound on each request to the cluster, in milliseconds
    /// (env CHATSTREAM_KAFKA_REQUEST_TIMEOUT_MS) [default: 10000].
    #[arg(long)]
    request_timeout_ms: Option<u64>,
}

#[derive(Args, Debug)]
struct DescribeArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Another consumer group to report (repeatable); the processors'
    /// groups are always reported.
    #[arg(long = "group")]
    groups: Vec<String>,
}

pub fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match args.command {
        TopicsCommand::Create(kafka) => runtime.block_on(create(kafka_log_config(&kafka)?)),
        TopicsCommand::Describe(describe_args) => {
            let config = kafka_log_config(&describe_args.kafka)?;
            let mut groups: Vec<String> = ProcessorKind::ALL
                .map(|kind| kind.group().to_owned())
                .to_vec();
            for group in describe_args.groups {
                if !groups.contains(&group) {
                    groups.push(group);
                }
            }
            runtime.block_on(describe(config, &groups))
        }
    }
}

/// The log config these arguments describe: the platform config with the
/// flags on top, checked by the config and then by the Kafka client.
pub fn kafka_log_config(args: &KafkaArgs) -> anyhow::Result<KafkaLogConfig> {
    let config = args.config.load(|config| {
        if let Some(servers) = &args.bootstrap_servers {
            config.kafka.bootstrap_servers = servers.clone();
        }
        if let Some(topic) = &args.topic {
            config.kafka.topic = topic.clone();
        }
        if let Some(topic) = &args.dead_letter_topic {
            config.kafka.dead_letter_topic = Some(topic.clone());
        }
        if let Some(partitions) = args.partitions {
            config.log.partitions = partitions;
        }
        if let Some(replication_factor) = args.replication_factor {
            config.kafka.replication_factor = replication_factor;
        }
        if let Some(timeout) = args.request_timeout_ms {
            config.kafka.request_timeout_ms = timeout;
        }
    })?;
    let config = KafkaLogConfig::from_config(&config);
    config.validate()?;
    Ok(config)
}

async fn create(config: KafkaLogConfig) -> anyhow::Result<()> {
    let created = create_topics(&config)
        .await
        .with_context(|| format!("cannot create the topics at {}", config.bootstrap_servers))?;
    for (topic, creation) in [
        (config.topic.clone(), created.events),
        (config.dead_letter_topic(), created.dead_letters),
    ] {
        match creation {
            TopicCreation::Created => println!(
                "topic {topic}: created ({} partitions, replication factor {})",
                config.partitions, config.replication_factor
            ),
            // Its replication is whatever it was created with: not changed here.
            TopicCreation::AlreadyExisted => println!(
                "topic {topic}: already exists with {} partitions (left as it is)",
                config.partitions
            ),
        }
    }
    Ok(())
}

async fn describe(config: KafkaLogConfig, groups: &[String]) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for (topic, topic_groups) in [
        (config.topic.clone(), groups),
        (config.dead_letter_topic(), &[][..]),
    ] {
        let description = describe_topic(&config, &topic, topic_groups)
            .await
            .with_context(|| format!("cannot describe topic {topic:?}"))?;
        match description {
            Some(description) => print!("{}", render(&description)),
            None => {
                println!("topic {topic}: does not exist");
                missing.push(topic);
            }
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "topic {} missing at {}; create it with `chatstream topics create`",
            missing.join(" and "),
            config.bootstrap_servers
        );
    }
    Ok(())
}

/// The description as text: one table of partitions, then one table per
/// group with its committed offsets (`-` where it never committed) and lag.
fn render(description: &TopicDescription) -> String {
    let mut out = format!(
        "topic {}: {} partitions\n",
        description.topic,
        description.partitions.len()
    );
    let ids = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let mut rows =
        vec![["partition", "leader", "replicas", "in-sync", "low", "high"].map(str::to_owned)];
    for partition in &description.partitions {
        let leader = match &partition.leader {
            Some(broker) if broker.address.is_empty() => broker.id.to_string(),
            Some(broker) => format!("{} ({})", broker.id, broker.address),
            None => "none".to_owned(),
        };
        rows.push([
            partition.partition.to_string(),
            leader,
            ids(&partition.replicas),
            ids(&partition.in_sync_replicas),
            partition.low_watermark.to_string(),
            partition.high_watermark.to_string(),
        ]);
    }
    out.push_str(&table(&rows, "  "));
    for group in &description.groups {
        let lags: Vec<u64> = (0..description.partitions.len())
            .map(|index| description.lag(group, index))
            .collect();
        out.push_str(&format!(
            "  group {}: lag {}\n",
            group.group,
            lags.iter().sum::<u64>()
        ));
        let mut rows = vec![["partition", "committed", "lag"].map(str::to_owned)];
        for ((partition, committed), lag) in description
            .partitions
            .iter()
            .zip(&group.committed)
            .zip(&lags)
        {
            rows.push([
                partition.partition.to_string(),
                committed.map_or_else(|| "-".to_owned(), |offset| offset.to_string()),
                lag.to_string(),
            ]);
        }
        out.push_str(&table(&rows, "    "));
    }
    out
}

/// Rows as left-aligned columns two spaces apart, each line indented.
fn table<const N: usize>(rows: &[[String; N]], indent: &str) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(indent);
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use chatstream_kafka::{Broker, GroupProgress, PartitionDescription};

    use super::*;

    #[test]
    fn flags_override_the_defaults() {
        let args = KafkaArgs {
            bootstrap_servers: Some("k1:9092,k2:9092".into()),
            partitions: Some(16),
            replication_factor: Some(3),
            ..KafkaArgs::default()
        };
        let config = kafka_log_config(&args).unwrap();
        assert_eq!(config.bootstrap_servers, "k1:9092,k2:9092");
        assert_eq!(config.topic, "chatstream.events");
        assert_eq!(config.dead_letter_topic(), "chatstream.events.dead-letter");
        assert_eq!((config.partitions, config.replication_factor), (16, 3));
    }

    #[test]
    fn impossible_settings_are_refused_with_a_reason() {
        let args = KafkaArgs {
            partitions: Some(0),
            ..KafkaArgs::default()
        };
        let error = kafka_log_config(&args).unwrap_err().to_string();
        assert!(error.contains("partitions"), "{error}");
    }

    #[test]
    fn renders_partitions_and_group_lag() {
        let partition = |partition, high| PartitionDescription {
            partition,
            leader: Some(Broker {
                id: 1,
                address: "127.0.0.1:9092".into(),
            }),
            replicas: vec![1],
            in_sync_replicas: vec![1],
            low_watermark: 0,
            high_watermark: high,
        };
        let description = TopicDescription {
            topic: "events".into(),
            partitions: vec![partition(0, 5), partition(1, 2)],
            groups: vec![GroupProgress {
                group: "router".into(),
                committed: vec![Some(3), None],
            }],
        };
        let text = render(&description);
        let expected = "\
topic events: 2 partitions
  partition  leader              replicas  in-sync  low  high
  0          1 (127.0.0.1:9092)  1         1        0    5
  1          1 (127.0.0.1:9092)  1         1        0    2
  group router: lag 4
    partition  committed  lag
    0          3          2
    1          -          2
";
        assert_eq!(text, expected);
    }
}
