//! How the Kafka log connects: one config for the whole log, turned into the
//! librdkafka settings of each client it creates (producer, group member,
//! ranged reader, offsets and admin clients).
use std::collections::BTreeMap;
use std::time::Duration;

use chatstream_config::Config;
use rdkafka::ClientConfig;

use chatstream_core::log::LogError;

/// Settings chatstream's delivery guarantees rely on. They are applied after
/// `extra`, and `extra` may not name them: overriding one would silently
/// turn "acked means durable" or "nothing is committed until `commit`" off.
pub const GUARANTEED_SETTINGS: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "enable.auto.commit",
    "group.id",
    "isolation.level",
    "transactional.id",
];

/// Where the event log lives and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaLogConfig {
    /// Comma-separated `host:port` list (`KAFKA_BOOTSTRAP_SERVERS`).
    pub bootstrap_servers: String,
    /// The topic holding the event log.
    pub topic: String,
    /// The topic records no processor could handle go to; `None` means
    /// `<topic>.dead-letter` (see `dead_letter_topic()`).
    pub dead_letter_topic: Option<String>,
    /// Partitions of the topic; fixed once created, because it decides which
    /// partition holds each tenant.
    pub partitions: u32,
    /// Replicas of each partition when the topic is created.
    pub replication_factor: u16,
    /// `client.id` of every client (shows in broker logs and quotas).
    pub client_id: String,
    /// How long the broker may hold a fetch waiting for data. Low, because
    /// the chat path is latency-sensitive, and because some brokers (tansu)
    /// answer a fetch only when this wait expires.
    pub fetch_wait_max_ms: u32,
    /// Bound on each blocking call to the cluster (metadata, watermarks,
    /// committed offsets, sync commits) and on a ranged read.
    pub request_timeout: Duration,
    /// Turns on the transactional mode (`TransactionalMember`, real Kafka
    /// only): the `transactional.id` of this replica's producer. Must be
    /// stable across restarts of the same replica and unique among live
    /// replicas, so a restarted replica fences its own zombie.
    pub transactional_id: Option<String>,
    /// Put before every consumer group's id (`router` becomes
    /// `<prefix>router`), so several platforms can share one cluster.
    pub group_prefix: String,
    /// Raw librdkafka settings (TLS, SASL, tuning), applied to every client
    /// before the settings in `GUARANTEED_SETTINGS`, which they may not name.
    pub extra: BTreeMap<String, String>,
}

impl KafkaLogConfig {
    /// The log's client settings, from the `kafka` and `log` sections of
    /// the platform config.
    pub fn from_config(config: &Config) -> Self {
        let kafka = &config.kafka;
        let mut log = Self::new(&kafka.bootstrap_servers, &kafka.topic);
        log.partitions = config.log.partitions;
        log.replication_factor = kafka.replication_factor;
        log.client_id = kafka.client_id.clone();
        log.fetch_wait_max_ms = kafka.fetch_wait_max_ms;
        log.request_timeout = Duration::from_millis(kafka.request_timeout_ms);
        log.extra = kafka.settings.clone();
        log.dead_letter_topic = kafka.dead_letter_topic.clone();
        log.transactional_id = kafka.transactional_id.clone();
        log.group_prefix = kafka.group_prefix.clone();
        log
    }

    pub const DEFAULT_PARTITIONS: u32 = 8;
    pub const DEFAULT_FETCH_WAIT_MAX_MS: u32 = 10;
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// Appended to the event topic's name to name its dead-letter topic.
    pub const DEAD_LETTER_SUFFIX: &'static str = ".dead-letter";

    /// A config with defaults for everything but where the log is.
    pub fn new(bootstrap_servers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topic: topic.into(),
            dead_letter_topic: None,
            partitions: Self::DEFAULT_PARTITIONS,
            replication_factor: 1,
            client_id: "chatstream".to_owned(),
            fetch_wait_max_ms: Self::DEFAULT_FETCH_WAIT_MAX_MS,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            transactional_id: None,
            group_prefix: String::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The Kafka group id of the processor group `group`.
    pub fn group_id(&self, group: &str) -> String {
        format!("{}{group}", self.group_prefix)
    }

    /// The dead-letter topic: as configured, or `<topic>.dead-letter`.
    pub fn dead_letter_topic(&self) -> String {
        match &self.dead_letter_topic {
            Some(topic) => topic.clone(),
            None => format!("{}{}", self.topic, Self::DEAD_LETTER_SUFFIX),
        }
    }

    /// Rejects configs that cannot work, before any client is created.
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |why: String| {
            Err(LogError::Unavailable(format!(
                "invalid Kafka config: {why}"
            )))
        };
        if self.bootstrap_servers.trim().is_empty() {
            return invalid("bootstrap_servers is empty".into());
        }
        if self.topic.trim().is_empty() {
            return invalid("topic is empty".into());
        }
        let dead_letter_topic = self.dead_letter_topic();
        if dead_letter_topic.trim().is_empty() {
            return invalid("dead_letter_topic is empty".into());
        }
        if dead_letter_topic == self.topic {
            return invalid(format!(
                "dead_letter_topic must differ from the event topic {:?}",
                self.topic
            ));
        }
        if self.partitions == 0 || i32::try_from(self.partitions).is_err() {
            return invalid(format!(
                "partitions must be between 1 and {}, got {}",
                i32::MAX,
                self.partitions
            ));
        }
        if self.replication_factor == 0 {
            return invalid("replication_factor must be at least 1".into());
        }
        if self
            .transactional_id
            .as_ref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return invalid("transactional_id is empty".into());
        }
        if let Some(key) = self
            .extra
            .keys()
            .find(|key| GUARANTEED_SETTINGS.contains(&key.as_str()))
        {
            return invalid(format!(
                "extra setting {key:?} is set by chatstream itself (its delivery guarantees depend on it)"
            ));
        }
        Ok(())
    }

    /// Settings every client shares: where the cluster is, who we are, and
    /// the operator's extras.
    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("client.id", &self.client_id);
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config
    }

    /// The idempotent producer: a retried send never duplicates or reorders
    /// a record, and a delivery report means every in-sync replica has it.
    pub(super) fn producer(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        // Records carry an explicit partition; the partitioner only matters
        // if one does not, and then it must agree with Java clients.
        config.set("partitioner", "murmur2_random");
        merge(&mut config, self.base());
        config.set("enable.idempotence", "true").set("acks", "all");
        config
    }

    /// The idempotent producer registered under `transactional_id`: its
    /// records become visible only when their transaction commits.
    pub(super) fn transactional_producer(&self, transactional_id: &str) -> ClientConfig {
        let mut config = self.producer();
        config.set("transactional.id", transactional_id);
        config
    }

    /// A member of consumer group `group`, which commits only when told to.
    pub(super) fn group_member(&self, group: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("auto.offset.reset", "earliest")
            // Moves only the partitions that change owner on a rebalance, so
            // the other members keep processing.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string());
        merge(&mut config, self.base());
        config
            .set("group.id", self.group_id(group))
            .set("enable.auto.commit", "false")
            // Records of aborted (or still open) transactions are never
            // handed out (librdkafka's default, pinned here).
            .set("isolation.level", "read_committed");
        config
    }

    /// A consumer that only reads partitions it assigns itself. librdkafka's
    /// `assign` needs a `group.id`, but this consumer never joins that group
    /// and never commits.
    pub(super) fn reader(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            .set("auto.offset.reset", "earliest")
            // A ranged read wants a few records, not a prefetch of megabytes.
            .set("queued.max.messages.kbytes", "1024");
        merge(&mut config, self.base());
        config
            .set("group.id", format!("{}-reader", self.client_id))
            .set("enable.auto.commit", "false");
        config
    }

    /// A client for metadata, watermarks and committed offsets; joins no group.
    pub(super) fn offsets(&self) -> ClientConfig {
        self.base()
    }

    /// A client that reads a group's committed offsets without joining it.
    pub(super) fn committed_offsets_of(&self, group: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", self.group_id(group))
            .set("enable.auto.commit", "false");
        config
    }

    /// The admin client that creates topics.
    pub(super) fn admin(&self) -> ClientConfig {
        self.base()
    }
}

/// Copies every setting of `from` into `into`, replacing what was there.
fn merge(into: &mut ClientConfig, from: ClientConfig) {
    for (key, value) in from.config_map() {
        into.set(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaLogConfig {
        KafkaLogConfig::new("127.0.0.1:9092", "events")
    }

    #[test]
    fn guarantees_hold_whatever_extra_says() {
        let mut config = config();
        config
            .extra
            .insert("partition.assignment.strategy".into(), "range".into());
        config.extra.insert("linger.ms".into(), "0".into());
        config.validate().expect("tuning settings are allowed");

        let producer = config.producer();
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("partitioner"), Some("murmur2_random"));
        assert_eq!(producer.get("linger.ms"), Some("0"));

        let member = config.group_member("router");
        assert_eq!(member.get("group.id"), Some("router"));
        assert_eq!(member.get("enable.auto.commit"), Some("false"));
        assert_eq!(member.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(member.get("isolation.level"), Some("read_committed"));
        assert_eq!(
            member.get("partition.assignment.strategy"),
            Some("range"),
            "extra overrides chatstream's tuning defaults"
        );
    }

    #[test]
    fn the_dead_letter_topic_defaults_to_a_suffix_of_the_event_topic() {
        assert_eq!(config().dead_letter_topic(), "events.dead-letter");
        let named = KafkaLogConfig {
            dead_letter_topic: Some("poison".into()),
            ..config()
        };
        assert_eq!(named.dead_letter_topic(), "poison");
    }

    #[test]
    fn extra_may_not_override_a_guarantee() {
        let mut config = config();
        config
            .extra
            .insert("enable.auto.commit".into(), "true".into());
        let error = config.validate().expect_err("must be rejected");
        assert!(
            error.to_string().contains("enable.auto.commit"),
            "the error names the setting: {error}"
        );
    }

    #[test]
    fn rejects_configs_that_cannot_work() {
        for broken in [
            KafkaLogConfig {
                partitions: 0,
                ..config()
            },
            KafkaLogConfig {
                topic: " ".into(),
                ..config()
            },
            KafkaLogConfig {
                bootstrap_servers: String::new(),
                ..config()
            },
            KafkaLogConfig {
                replication_factor: 0,
                ..config()
            },
            KafkaLogConfig {
                dead_letter_topic: Some("events".into()),
                ..config()
            },
            KafkaLogConfig {
                dead_letter_topic: Some(String::new()),
                ..config()
            },
            KafkaLogConfig {
                transactional_id: Some(" ".into()),
                ..config()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?} must be rejected");
        }
    }
}
