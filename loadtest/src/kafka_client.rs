//! The raw rdkafka producer baseline (`--transport kafka`): what the broker
//! and librdkafka alone can do, to set chatstream's Kafka append path
//! against. Each message is a real `UserMessageSent` event, encoded with
//! `chatstream_schemas::codec` and carrying the CloudEvents headers, sent
//! with the producer settings of chatstream's Kafka log
//! (crates/kafka/src/config.rs: idempotent, `acks=all`,
//! murmur2 partitioning of the tenant key). An "ack" is the delivery report.
//!
//! All load connections share one producer, as a gateway process shares its
//! log's one producer among its clients.
use std::sync::Arc;
use std::time::Duration;

use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::ids::new_event_id;
use chatstream_schemas::pb::events::UserMessageSent;
use chatstream_schemas::pb::events::event::Payload;
use chatstream_schemas::{Event, codec};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::{OnceCell, mpsc};

use crate::protocol::{Incoming, Outgoing, TransportError};

/// As long as chatstream's log waits for room in librdkafka's queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to produce, from `--kafka-bootstrap-servers` and `--kafka-topic`.
#[derive(Clone, Debug)]
pub struct KafkaTarget {
    pub bootstrap_servers: String,
    pub topic: String,
    /// Tenant ids used as record keys, taken by the connections in turn.
    /// chatstream keys every record by its tenant, so one tenant means one
    /// partition, as with the one `dev` tenant of `chatstream dev`.
    pub tenants: Vec<String>,
}

pub struct KafkaConnection {
    producer: Arc<FutureProducer>,
    topic: Arc<str>,
    tenant_id: String,
    incoming_tx: mpsc::UnboundedSender<Incoming>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
}

impl KafkaConnection {
    pub async fn connect(target: &KafkaTarget, index: u32) -> Result<Self, TransportError> {
        let producer = PRODUCER
            .get_or_try_init(|| start_producer(target))
            .await?
            .clone();
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        Ok(Self {
            producer,
            topic: target.topic.as_str().into(),
            tenant_id: tenant_of(target, index),
            incoming_tx,
            incoming,
        })
    }

    /// `Open` and `Subscribe` are answered at once (there is no server
    /// session); `Send` produces the event and reports its delivery later.
    pub fn send(&mut self, frame: Outgoing) -> Result<(), TransportError> {
        let answer = match frame {
            Outgoing::Open { request_id } => Incoming::Opened {
                request_id: Some(request_id),
                conversation_id: new_event_id(),
            },
            Outgoing::Subscribe { .. } => Incoming::Subscribed,
            Outgoing::Send {
                request_id,
                conversation_id,
                client_message_id,
                text,
            } => {
                let event = user_message(
                    &self.tenant_id,
                    &conversation_id,
                    client_message_id.unwrap_or_default(),
                    &text,
                );
                self.produce(request_id, event);
                return Ok(());
            }
        };
        self.incoming_tx
            .send(answer)
            .map_err(|_| TransportError::Lost("the connection's queue closed".into()))
    }

    pub async fn recv(&mut self) -> Result<Incoming, TransportError> {
        self.incoming
            .recv()
            .await
            .ok_or_else(|| TransportError::Lost("the connection's queue closed".into()))
    }

    fn produce(&self, request_id: String, event: Event) {
        let (producer, topic, answers) = (
            self.producer.clone(),
            self.topic.clone(),
            self.incoming_tx.clone(),
        );
        let key = self.tenant_id.clone();
        tokio::spawn(async move {
            let value = codec::encode(&event);
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&value)
                .headers(cloud_event_headers(&event));
            let answer = match producer.send(record, QUEUE_TIMEOUT).await {
                Ok(_) => Incoming::Ack {
                    request_id: Some(request_id),
                    event_id: event.id,
                },
                Err((error, _)) => Incoming::Error {
                    request_id: Some(request_id),
                    code: format!("kafka_{}", error_code(&error)),
                    message: error.to_string(),
                },
            };
            let _ = answers.send(answer);
        });
    }
}

/// The event the gateway appends for a WebSocket `send` (gateway/src/chat.rs).
fn user_message(
    tenant_id: &str,
    conversation_id: &str,
    client_message_id: String,
    text: &str,
) -> Event {
    new_event(
        new_event_id(),
        EventContext {
            tenant_id,
            conversation_id,
            causation_id: "",
            correlation_id: "",
        },
        Payload::UserMessageSent(Box::new(UserMessageSent {
            client_message_id,
            text: text.to_owned(),
            sent_by_key_id: "dev".to_owned(),
            ..Default::default()
        })),
    )
}

/// The headers chatstream's log writes (crates/kafka/src/headers.rs):
/// CloudEvents binary mode and the content type. Repeated here so the load
/// tester talks to Kafka as an outside client would, not through our crates.
fn cloud_event_headers(event: &Event) -> OwnedHeaders {
    let time = event
        .occurred_at
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    [
        ("ce_id", event.id.as_str()),
        ("ce_type", event.r#type.as_str()),
        ("ce_source", "chatstream"),
        ("ce_specversion", "1.0"),
        ("ce_time", time.as_str()),
        ("ce_subject", event.conversation_id.as_str()),
        ("content-type", codec::CONTENT_TYPE),
    ]
    .into_iter()
    .fold(
        OwnedHeaders::new_with_capacity(7),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        },
    )
}

/// The producer settings of chatstream's log, minus nothing.
fn producer_config(target: &KafkaTarget) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("client.id", "chatstream-loadtest")
        .set("bootstrap.servers", &target.bootstrap_servers)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("acks", "all");
    config
}

/// One producer per process, started by the first connection.
static PRODUCER: OnceCell<Arc<FutureProducer>> = OnceCell::const_new();

fn tenant_of(target: &KafkaTarget, index: u32) -> String {
    match target.tenants.len() {
        0 => "dev".to_owned(),
        count => target.tenants[index as usize % count].clone(),
    }
}

/// Creates the producer, checks the topic exists and sends one warm-up
/// event, so the first measured message does not pay for the connection
/// and the idempotent producer's id (a gateway's producer is warm too).
async fn start_producer(target: &KafkaTarget) -> Result<Arc<FutureProducer>, TransportError> {
    let servers = &target.bootstrap_servers;
    let producer: FutureProducer = producer_config(target).create().map_err(|e| {
        TransportError::Connect(format!("{servers}: cannot create a producer: {e}"))
    })?;
    // Fails fast on a wrong address or a missing topic, before the run starts.
    // librdkafka's metadata call blocks; this runs once, before the start.
    tokio::task::block_in_place(|| {
        producer
            .client()
            .fetch_metadata(Some(&target.topic), Duration::from_secs(10))
    })
    .map_err(|e| TransportError::Connect(format!("{servers}: no metadata: {e}")))
    .and_then(|metadata| match metadata.topics().first() {
        Some(topic) if topic.error().is_none() && !topic.partitions().is_empty() => Ok(()),
        _ => Err(TransportError::Connect(format!(
            "{servers}: topic {:?} does not exist (create it: chatstream topics create \
                 --bootstrap-servers {servers} --topic {})",
            target.topic, target.topic
        ))),
    })?;
    let tenant = tenant_of(target, 0);
    let warm_up = user_message(&tenant, &new_event_id(), String::new(), "warm-up");
    let value = codec::encode(&warm_up);
    let record = FutureRecord::to(&target.topic)
        .key(&tenant)
        .payload(&value)
        .headers(cloud_event_headers(&warm_up));
    producer
        .send(record, QUEUE_TIMEOUT)
        .await
        .map_err(|(e, _)| {
            TransportError::Connect(format!("{servers}: warm-up send failed: {e}"))
        })?;
    Ok(Arc::new(producer))
}

fn error_code(error: &rdkafka::error::KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(code) => format!("{code:?}").to_lowercase(),
        None => "error".into(),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn the_event_is_a_user_message_that_decodes_and_names_its_tenant() {
        let event = user_message("tenant-0", "conv", "cm-1".into(), "hello there");
        let decoded = codec::decode(&codec::encode(&event)).expect("decodes");
        assert_eq!(decoded.tenant_id, "tenant-0");
        assert_eq!(decoded.r#type, chatstream_schemas::event::USER_MESSAGE_SENT);
        match decoded.payload {
            Some(Payload::UserMessageSent(message)) => {
                assert_eq!(message.text, "hello there");
                assert_eq!(message.client_message_id, "cm-1");
            }
            other => panic!("not a user message: {other:?}"),
        }
        let headers = cloud_event_headers(&event);
        assert_eq!(headers.count(), 7);
        assert_eq!(headers.get(0).value, Some(event.id.as_bytes()));
    }

    #[test]
    fn the_producer_has_chatstreams_guarantees() {
        let config = producer_config(&KafkaTarget {
            bootstrap_servers: "127.0.0.1:1".into(),
            topic: "t".into(),
            tenants: vec!["dev".into()],
        });
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("partitioner"), Some("murmur2_random"));
    }
}
