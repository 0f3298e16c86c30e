//! The settings table: every setting with the environment variables that
//! set it, its YAML key, its default and its meaning. `Config::apply_env`
//! reads the variables from here, and the README's configuration table is
//! this table rendered (`markdown_table`), which a test checks.
use std::path::PathBuf;

use crate::error::BadValue;
use crate::platform::{Config, LogBackend, LogFormat, StoreBackend};

/// Parses one environment variable's text into its setting.
pub(crate) type EnvSetter = fn(&mut Config, &str) -> Result<(), BadValue>;

/// One row of the table.
pub struct Setting {
    /// The variables that set it, in the order applied: when several are
    /// set, the last one wins. Empty for settings only the file holds.
    pub env: &'static [&'static str],
    /// Its keys in `chatstream.yaml`; empty for a variable that is not a
    /// key (`CHATSTREAM_CONFIG` names the file itself).
    pub yaml: &'static [&'static str],
    /// The default, as the README shows it.
    pub default: &'static str,
    pub meaning: &'static str,
    /// How `Config::apply_env` applies the variables; `None` for the few
    /// read elsewhere (the binary's `--config`, the Redis gateway id).
    pub(crate) apply: Option<EnvSetter>,
}

impl Setting {
    /// Whether `Config::apply_env` reads this row's variables (the others
    /// are read where their doc says).
    pub fn applied_by_config(&self) -> bool {
        self.apply.is_some()
    }
}

const fn setting(
    env: &'static [&'static str],
    yaml: &'static [&'static str],
    default: &'static str,
    meaning: &'static str,
    apply: Option<EnvSetter>,
) -> Setting {
    Setting {
        env,
        yaml,
        default,
        meaning,
        apply,
    }
}

/// Every setting, in the README's order.
pub const SETTINGS: &[Setting] = &[
    setting(
        &["CHATSTREAM_CONFIG"],
        &[],
        "`./chatstream.yaml` when present",
        "The YAML config file (same as `--config`).",
        None,
    ),
    setting(
        &["ENVIRONMENT", "CHATSTREAM_ENVIRONMENT"],
        &["environment"],
        "`development`",
        "Deployment environment name.",
        Some(|c, v| set_string(&mut c.environment, v)),
    ),
    setting(
        &["LOG_LEVEL", "CHATSTREAM_LOG_LEVEL"],
        &["log_level"],
        "`info`",
        "A tracing filter, e.g. `debug` or `info,chatstream_gateway=debug`. The `CHATSTREAM_` form wins.",
        Some(|c, v| set_string(&mut c.log_level, v)),
    ),
    setting(
        &["CHATSTREAM_LOG_FORMAT"],
        &["log_format"],
        "`text`",
        "`text` or `json`. Text is coloured only when standard error is a terminal.",
        Some(|c, v| {
            c.log_format =
                parse_choice(v, &[("text", LogFormat::Text), ("json", LogFormat::Json)])?;
            Ok(())
        }),
    ),
    setting(
        &[
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ],
        &[],
        "unset (no traces)",
        "OpenTelemetry traces over OTLP/gRPC to this collector, e.g. `http://otel-collector:4317`. The OpenTelemetry SDK reads the other standard variables: `OTEL_SERVICE_NAME` (default `chatstream`, `chatstream-gateway`, `chatstream-<processor>`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_SCHEDULE_DELAY` and the other `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`. See [docs/observability.md](docs/observability.md).",
        None,
    ),
    setting(
        &["OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER"],
        &[],
        "`false`, `otlp`",
        "`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turns traces off even with an endpoint set; another exporter than `otlp` fails at start.",
        None,
    ),
    setting(
        &[
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ],
        &[],
        "`grpc`",
        "Only `grpc` is built in; another protocol fails at start.",
        None,
    ),
    setting(
        &["CHATSTREAM_DATA_DIR"],
        &["data_dir"],
        "`chatstream-data`",
        "Where the embedded log and store keep their files (relative to the working directory).",
        Some(|c, v| {
            c.data_dir = PathBuf::from(v);
            Ok(())
        }),
    ),
    setting(
        &["CHATSTREAM_TENANTS_FILE"],
        &["tenants_file"],
        "unset",
        "The tenants file. When unset, `dev` creates the `dev` tenant in the data dir.",
        Some(|c, v| {
            c.tenants_file = Some(PathBuf::from(v));
            Ok(())
        }),
    ),
    setting(
        &["CHATSTREAM_HOST"],
        &["server.host"],
        "`127.0.0.1`",
        "Address to listen on. Use `0.0.0.0` to accept remote clients.",
        Some(|c, v| set_string(&mut c.server.host, v)),
    ),
    setting(
        &["CHATSTREAM_HTTP_PORT"],
        &["server.http_port"],
        "`8000`",
        "WebSocket and HTTP probes.",
        Some(|c, v| set_parsed(&mut c.server.http_port, v)),
    ),
    setting(
        &["CHATSTREAM_GRPC_PORT"],
        &["server.grpc_port"],
        "`50051`",
        "gRPC.",
        Some(|c, v| set_parsed(&mut c.server.grpc_port, v)),
    ),
    setting(
        &["CHATSTREAM_LOG_PARTITIONS"],
        &["log.partitions"],
        "`8`",
        "Partitions of the event log. This is fixed when the log is created, and reopening with another count fails.",
        Some(|c, v| set_parsed(&mut c.log.partitions, v)),
    ),
    setting(
        &["CHATSTREAM_MAX_MESSAGE_BYTES"],
        &["limits.max_message_bytes"],
        "`1048576`",
        "Largest user message in bytes, unless a tenant sets its own.",
        Some(|c, v| set_parsed(&mut c.limits.max_message_bytes, v)),
    ),
    setting(
        &["CHATSTREAM_REQUESTS_PER_SECOND"],
        &["limits.requests_per_second"],
        "unset (unlimited)",
        "Sends and opens per second per tenant, unless a tenant sets its own.",
        Some(|c, v| set_some(&mut c.limits.requests_per_second, v)),
    ),
    setting(
        &["CHATSTREAM_BURST"],
        &["limits.burst"],
        "the rate, rounded up",
        "Requests a tenant may make at once on top of that rate.",
        Some(|c, v| set_some(&mut c.limits.burst, v)),
    ),
    setting(
        &["CHATSTREAM_MAX_CONNECTIONS"],
        &["limits.max_connections"],
        "unset (unlimited)",
        "Open WebSocket and gRPC `Converse` connections per tenant, across every gateway, unless a tenant sets its own.",
        Some(|c, v| set_some(&mut c.limits.max_connections, v)),
    ),
    setting(
        &["CHATSTREAM_MOCK_TOKEN_DELAY_MS"],
        &["mock_model.token_delay_ms"],
        "`20`",
        "Pause between the mock model's streamed tokens.",
        Some(|c, v| set_parsed(&mut c.mock_model.token_delay_ms, v)),
    ),
    setting(
        &["CHATSTREAM_MOCK_FIRST_TOKEN_DELAY_MS"],
        &["mock_model.first_token_delay_ms"],
        "`0`",
        "Pause before the mock model's first token, like a provider's time to first token (the first token then also waits the per-token pause).",
        Some(|c, v| set_parsed(&mut c.mock_model.first_token_delay_ms, v)),
    ),
    setting(
        &["CHATSTREAM_MAX_IN_FLIGHT"],
        &["processing.max_in_flight"],
        "`4096`",
        "Records one processor handles at once in one process (model turns, tool calls), over all its partitions. 1 to 1048576.",
        Some(|c, v| set_parsed(&mut c.processing.max_in_flight, v)),
    ),
    setting(
        &["CHATSTREAM_MAX_IN_FLIGHT_PER_PARTITION"],
        &["processing.max_in_flight_per_partition"],
        "`1024`",
        "Records of one partition handled at once; records of one conversation always run one at a time, in log order.",
        Some(|c, v| set_parsed(&mut c.processing.max_in_flight_per_partition, v)),
    ),
    setting(
        &["CHATSTREAM_MAX_IN_FLIGHT_PER_TENANT"],
        &["processing.max_in_flight_per_tenant"],
        "`256`",
        "Records of one tenant handled at once within a partition, so a tenant flooding its partition cannot starve the others on it; its other records wait, in log order.",
        Some(|c, v| set_parsed(&mut c.processing.max_in_flight_per_tenant, v)),
    ),
    setting(
        &["CHATSTREAM_MAX_BUFFERED_PER_PARTITION"],
        &["processing.max_buffered_per_partition"],
        "`4096`",
        "Records a partition may hold, waiting or in flight, before the processor pauses it (backpressure; never an unbounded queue).",
        Some(|c, v| set_parsed(&mut c.processing.max_buffered_per_partition, v)),
    ),
    setting(
        &[],
        &["processing.drain_timeout_ms"],
        "`10000`",
        "How long records in flight get to finish when their partition is revoked or the process stops; the rest are redelivered to the next owner. 0 to 3600000.",
        None,
    ),
    setting(
        &[],
        &["mcp.call_timeout_ms"],
        "`30000`",
        "Longest a tool call may run, unless the tenant's server sets its own `call_timeout_ms`. 1 to 3600000.",
        None,
    ),
    setting(
        &[],
        &["mcp.connect_timeout_ms"],
        "`20000`",
        "Longest starting or reaching an MCP server and its `initialize` may take. 1 to 600000.",
        None,
    ),
    setting(
        &[],
        &["mcp.max_concurrent_calls_per_tenant"],
        "`8`",
        "Tool calls running at once per tenant; more wait their turn (within their timeout). 1 to 1024.",
        None,
    ),
    setting(
        &[],
        &["mcp.max_result_bytes"],
        "`65536`",
        "Largest tool result kept in the event; the rest is cut and marked `truncated`. 1 to 8388608 (a result is one log record: mind Kafka's record size limit).",
        None,
    ),
    setting(
        &[],
        &["mcp.idle_timeout_ms"],
        "`300000`",
        "An MCP server unused this long is closed (a stdio server's process stopped) and started again on next use. 1000 to 86400000.",
        None,
    ),
    setting(
        &[],
        &["mcp.restart_backoff_ms", "mcp.max_restart_backoff_ms"],
        "`200`, `30000`",
        "Wait before restarting a server that failed, doubling with each failure in a row up to the maximum. 1 to 60000, and the maximum 1 to 3600000 and not below the first.",
        None,
    ),
    setting(
        &[],
        &["mcp.approval_timeout_ms"],
        "`300000`",
        "How long a tool call under `require_approval` waits for a decision before it fails as `rejected`. 1000 to 86400000; the mcp processor reads this far back on the log when it restarts, to resume waiting calls.",
        None,
    ),
    setting(
        &[],
        &["models"],
        "none: the built-in `mock` model",
        "Model providers, the catalog with prices, the default routing policy and the circuit breaker: see [docs/models.md](docs/models.md). Checked at start by every role.",
        None,
    ),
    setting(
        &["CHATSTREAM_LOG_BACKEND"],
        &["log.backend"],
        "`embedded`",
        "`embedded` (files in the data dir, one process) or `kafka`. `dev --log kafka` sets it too.",
        Some(|c, v| {
            c.log.backend = parse_choice(
                v,
                &[
                    ("embedded", LogBackend::Embedded),
                    ("kafka", LogBackend::Kafka),
                ],
            )?;
            Ok(())
        }),
    ),
    setting(
        &[
            "KAFKA_BOOTSTRAP_SERVERS",
            "CHATSTREAM_KAFKA_BOOTSTRAP_SERVERS",
        ],
        &["kafka.bootstrap_servers"],
        "`127.0.0.1:9092`",
        "The Kafka cluster.",
        Some(|c, v| set_string(&mut c.kafka.bootstrap_servers, v)),
    ),
    setting(
        &["CHATSTREAM_KAFKA_TOPIC"],
        &["kafka.topic"],
        "`chatstream.events`",
        "The event topic.",
        Some(|c, v| set_string(&mut c.kafka.topic, v)),
    ),
    setting(
        &["CHATSTREAM_KAFKA_DEAD_LETTER_TOPIC"],
        &["kafka.dead_letter_topic"],
        "`<topic>.dead-letter`",
        "Where processors put records they give up on.",
        Some(|c, v| {
            let mut topic = String::new();
            set_string(&mut topic, v)?;
            c.kafka.dead_letter_topic = Some(topic);
            Ok(())
        }),
    ),
    setting(
        &["CHATSTREAM_KAFKA_GROUP_PREFIX"],
        &["kafka.group_prefix"],
        "none",
        "Put before every consumer group id (`router` becomes `<prefix>router`), so several platforms can share one cluster.",
        Some(|c, v| {
            c.kafka.group_prefix = v.trim().to_owned();
            Ok(())
        }),
    ),
    setting(
        &["CHATSTREAM_KAFKA_REPLICATION_FACTOR"],
        &["kafka.replication_factor"],
        "`1`",
        "Replicas of each partition when `chatstream topics create` makes the topics.",
        Some(|c, v| set_parsed(&mut c.kafka.replication_factor, v)),
    ),
    setting(
        &["CHATSTREAM_KAFKA_REQUEST_TIMEOUT_MS"],
        &["kafka.request_timeout_ms"],
        "`10000`",
        "Bound on each blocking request to the cluster.",
        Some(|c, v| set_parsed(&mut c.kafka.request_timeout_ms, v)),
    ),
    setting(
        &[],
        &[
            "kafka.client_id",
            "kafka.fetch_wait_max_ms",
            "kafka.settings",
        ],
        "`chatstream`, `10`, none",
        "Client id, fetch wait, and raw librdkafka settings (TLS, SASL, tuning) for every client.",
        None,
    ),
    setting(
        &[],
        &["kafka.transactional_id"],
        "unset",
        "Turns on Kafka transactions for a processor replica (real Kafka clusters only; unique per replica).",
        None,
    ),
    setting(
        &["CHATSTREAM_STORE_BACKEND"],
        &["store.backend"],
        "`embedded`",
        "`embedded` (files in the data dir, one process) or `scylla`.",
        Some(|c, v| {
            c.store.backend = parse_choice(
                v,
                &[
                    ("embedded", StoreBackend::Embedded),
                    ("scylla", StoreBackend::Scylla),
                ],
            )?;
            Ok(())
        }),
    ),
    setting(
        &["SCYLLA_NODES", "CHATSTREAM_SCYLLA_NODES"],
        &["scylla.nodes"],
        "`127.0.0.1:9042`",
        "Contact points (comma-separated in the variable).",
        Some(|c, v| set_list(&mut c.scylla.nodes, v)),
    ),
    setting(
        &["CHATSTREAM_SCYLLA_KEYSPACE"],
        &["scylla.keyspace"],
        "`chatstream`",
        "The keyspace `chatstream schema apply` creates.",
        Some(|c, v| set_string(&mut c.scylla.keyspace, v)),
    ),
    setting(
        &["CHATSTREAM_SCYLLA_CONSISTENCY"],
        &["scylla.consistency"],
        "`LOCAL_QUORUM`",
        "Consistency of every read and write.",
        Some(|c, v| set_string(&mut c.scylla.consistency, v)),
    ),
    setting(
        &[],
        &["scylla.datacenters", "scylla.replication_factor"],
        "none, `1`",
        "Keyspace replication: replicas per datacenter (NetworkTopologyStrategy), or one factor (SimpleStrategy) when no datacenter is named.",
        None,
    ),
    setting(
        &["CHATSTREAM_SCYLLA_AWAIT_SCHEMA_AGREEMENT"],
        &["scylla.await_schema_agreement"],
        "`true`",
        "Wait for every node to agree after a schema change. Keep it on for real clusters; only the in-memory CQL test server needs it off.",
        Some(|c, v| set_parsed(&mut c.scylla.await_schema_agreement, v)),
    ),
    setting(
        &["CHATSTREAM_SCYLLA_LIGHTWEIGHT_TRANSACTIONS"],
        &["scylla.lightweight_transactions"],
        "`true`",
        "First-wins writes use `IF NOT EXISTS`. Keep it on for real clusters; only the in-memory CQL test server needs it off.",
        Some(|c, v| set_parsed(&mut c.scylla.lightweight_transactions, v)),
    ),
    setting(
        &[],
        &["scylla.request_timeout_ms"],
        "`5000`",
        "Bound on each request to the cluster.",
        None,
    ),
    setting(
        &["REDIS_URL", "CHATSTREAM_REDIS_URL"],
        &["redis.url"],
        "unset",
        "Redis for the hot state shared by replicas: fan-out, rate limits, connection counts, recent history. Unset: all in-process (one process only).",
        Some(|c, v| {
            c.redis.url = Some(v.trim().to_owned());
            Ok(())
        }),
    ),
    setting(
        &["CHATSTREAM_REDIS_KEY_PREFIX"],
        &["redis.key_prefix"],
        "`chatstream`",
        "Prefix of every Redis key and channel.",
        Some(|c, v| set_string(&mut c.redis.key_prefix, v)),
    ),
    setting(
        &["CHATSTREAM_SEND_RESERVATION_PENDING_MS"],
        &["redis.send_reservation_pending_ms"],
        "`30000`",
        "How long a send's claim on its `client_message_id` in Redis outlives a gateway that died mid-send: a retry on another gateway is answered as soon as the projected store has the send, and otherwise told to retry until this passes. 1000 to 3600000.",
        Some(|c, v| set_parsed(&mut c.redis.send_reservation_pending_ms, v)),
    ),
    setting(
        &["HOSTNAME"],
        &[],
        "`/etc/hostname`",
        "Names a gateway's share of the connection counts in Redis (in Kubernetes, the pod's name).",
        None,
    ),
];

/// The table as the README's Markdown table, header included.
pub fn markdown_table() -> String {
    let cell = |names: &[&str]| {
        if names.is_empty() {
            "none".to_owned()
        } else {
            names
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut out = String::from(
        "| environment variable | YAML key | default | meaning |\n|---|---|---|---|\n",
    );
    for setting in SETTINGS {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            cell(setting.env),
            cell(setting.yaml),
            setting.default,
            setting.meaning
        ));
    }
    out
}

fn set_string(field: &mut String, value: &str) -> Result<(), BadValue> {
    if value.trim().is_empty() {
        return Err(BadValue::Empty);
    }
    *field = value.to_owned();
    Ok(())
}

/// One of `choices` by name, or an error listing them.
fn parse_choice<T: Copy>(value: &str, choices: &[(&'static str, T)]) -> Result<T, BadValue> {
    let value = value.trim();
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|&(_, choice)| choice)
        .ok_or_else(|| BadValue::NotAChoice {
            choices: choices.iter().map(|(name, _)| *name).collect(),
        })
}

/// A comma-separated, non-empty list.
fn set_list(field: &mut Vec<String>, value: &str) -> Result<(), BadValue> {
    let items: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect();
    if items.is_empty() {
        return Err(BadValue::Empty);
    }
    *field = items;
    Ok(())
}

fn parse<T: std::str::FromStr>(value: &str) -> Result<T, BadValue>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e: T::Err| BadValue::Unparsable(e.to_string()))
}

fn set_parsed<T: std::str::FromStr>(field: &mut T, value: &str) -> Result<(), BadValue>
where
    T::Err: std::fmt::Display,
{
    *field = parse(value)?;
    Ok(())
}

fn set_some<T: std::str::FromStr>(field: &mut Option<T>, value: &str) -> Result<(), BadValue>
where
    T::Err: std::fmt::Display,
{
    *field = Some(parse(value)?);
    Ok(())
}
