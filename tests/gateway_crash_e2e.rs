//! A gateway killed with SIGKILL while its clients send, on Kafka (the
//! ScyllaDB store and Redis reservations; the gateway and the projector in
//! processes of their own):
//! every acked message is on the log exactly once, and clients that send
//! every message again with the same `client_message_id` to a fresh
//! gateway are told the original ack for each acked one, so nothing a
//! client saw acked is lost or doubled.
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chatstream_core::log::EventLog;
use chatstream_kafka::{KafkaLog, KafkaLogConfig};
use chatstream_schemas::codec;
use chatstream_schemas::pb::events::event::Payload;
use chatstream_schemas::ws::{ClientFrame, ServerFrame};
use chatstream_test_support::services;
use support::cluster::SharedBackends;
use support::{Ws, connect_ws};
use tokio_tungstenite::tungstenite::Message;

const PARTITIONS: u32 = 4;
const TENANTS: usize = 4;
const CLIENTS_PER_TENANT: usize = 4;
const MESSAGES_PER_CLIENT: usize = 40;

/// What a client was acked: (tenant, client message id) → (event id, position).
type Acked = Arc<Mutex<HashMap<(String, String), (String, u64)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_under_load_loses_no_acked_message_and_resends_are_duplicates() {
    let tenant_ids: Vec<String> = (0..TENANTS).map(|i| format!("tenant-{i}")).collect();
    let Some(mut backends) = SharedBackends::create(PARTITIONS, &tenant_ids).await else {
        return;
    };
    // A send cut off by the kill before it reached the log holds its id
    // this long; its resend is told to retry until then.
    backends.set_env("CHATSTREAM_SEND_RESERVATION_PENDING_MS", "2000");
    // A gateway is ready once the projection has caught up with the log.
    let _projector = backends.processor("conversation-projector").await;
    let mut gateway = backends.gateway().await;
    let acked: Acked = Arc::default();

    let mut clients = Vec::new();
    for tenant in &tenant_ids {
        for client in 0..CLIENTS_PER_TENANT {
            let (http, key) = (gateway.http_addr.clone(), backends.key(tenant).to_owned());
            let (tenant, acked) = (tenant.clone(), acked.clone());
            clients.push(tokio::spawn(async move {
                send_until_the_gateway_dies(&http, &key, &tenant, client, &acked).await
            }));
        }
    }
    let total = TENANTS * CLIENTS_PER_TENANT * MESSAGES_PER_CLIENT;
    while acked.lock().unwrap_or_else(PoisonError::into_inner).len() < total / 3 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    gateway.kill().await;
    let mut conversations = HashMap::new();
    for client in clients {
        let (tenant, client, conversation_id) = client.await.expect("a client task");
        conversations.insert((tenant, client), conversation_id);
    }
    let acked = acked.lock().unwrap_or_else(PoisonError::into_inner).clone();
    println!("{} of {total} sends acked before the kill", acked.len());
    assert!(
        acked.len() < total,
        "the gateway died before every send was acked ({} of {total})",
        acked.len()
    );

    // Every client sends all its messages again, to a new gateway.
    let gateway = backends.gateway().await;
    for ((tenant, client), conversation_id) in &conversations {
        let mut ws = connect_ws(&gateway.http_addr, backends.key(tenant)).await;
        for n in 0..MESSAGES_PER_CLIENT {
            let id = client_message_id(*client, n);
            let ((event_id, position, _), duplicate) =
                resend(&mut ws, conversation_id, &id, &format!("message {n}")).await;
            if let Some(original) = acked.get(&(tenant.clone(), id.clone())) {
                assert!(duplicate, "{tenant}/{id} was acked before the crash");
                assert_eq!(
                    &(event_id, position),
                    original,
                    "{tenant}/{id} is acked as the original"
                );
            }
        }
    }

    // On the log: each message exactly once, and each acked one where its
    // ack said.
    let on_log = user_messages_on_the_log(&backends).await;
    for tenant in &tenant_ids {
        for client in 0..CLIENTS_PER_TENANT {
            for n in 0..MESSAGES_PER_CLIENT {
                let key = (tenant.clone(), client_message_id(client, n));
                let copies = on_log.get(&key).map_or(&[][..], Vec::as_slice);
                assert_eq!(copies.len(), 1, "{key:?} on the log: {copies:?}");
                if let Some(original) = acked.get(&key) {
                    assert_eq!(&copies[0], original, "{key:?}");
                }
            }
        }
    }
}

/// Sends a message with its id until it is acked: a send the kill cut off
/// holds its id until its reservation expires, and meanwhile the gateway
/// answers "unavailable, retry", as it tells every client.
async fn resend(
    ws: &mut Ws,
    conversation_id: &str,
    client_message_id: &str,
    text: &str,
) -> ((String, u64, String), bool) {
    for _ in 0..10 {
        ws.send(&ClientFrame::Send {
            request_id: None,
            conversation_id: Some(conversation_id.to_owned()),
            client_message_id: Some(client_message_id.to_owned()),
            text: text.to_owned(),
        })
        .await;
        match ws.next_frame().await {
            ServerFrame::Ack {
                event_id,
                position,
                conversation_id,
                duplicate,
                ..
            } => return ((event_id, position, conversation_id), duplicate),
            ServerFrame::Error { code, .. } if code == "unavailable" => {}
            other => panic!("{client_message_id}: expected an ack, got {other:?}"),
        }
    }
    panic!("{client_message_id} was not acked after 10 tries");
}

fn client_message_id(client: usize, n: usize) -> String {
    format!("client-{client}-message-{n}")
}

/// Opens a conversation, then sends one message after another, each once
/// the previous one is acked, until the connection dies.
async fn send_until_the_gateway_dies(
    http: &str,
    key: &str,
    tenant: &str,
    client: usize,
    acked: &Acked,
) -> (String, usize, String) {
    let mut ws = connect_ws(http, key).await;
    let conversation_id = ws.open_conversation().await;
    for n in 0..MESSAGES_PER_CLIENT {
        let id = client_message_id(client, n);
        let sent = ws
            .try_send(&ClientFrame::Send {
                request_id: None,
                conversation_id: Some(conversation_id.clone()),
                client_message_id: Some(id.clone()),
                text: format!("message {n}"),
            })
            .await;
        if !sent {
            break;
        }
        let Some(Message::Text(text)) = ws.next_message().await else {
            break;
        };
        match serde_json::from_str(&text).expect("a server frame") {
            ServerFrame::Ack {
                event_id, position, ..
            } => {
                acked
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert((tenant.to_owned(), id), (event_id, position));
            }
            other => panic!("{tenant}/{id}: expected an ack, got {other:?}"),
        }
    }
    (tenant.to_owned(), client, conversation_id)
}

/// Every user message with a client message id on the test's topic:
/// (tenant, client message id) → where each copy sits (event id, offset).
async fn user_messages_on_the_log(
    backends: &SharedBackends,
) -> HashMap<(String, String), Vec<(String, u64)>> {
    let kafka = services::kafka().expect("the broker the test ran on");
    let mut config = KafkaLogConfig::new(&kafka, &backends.topic);
    config.partitions = PARTITIONS;
    let log = KafkaLog::connect(config).await.expect("connect to the log");
    let mut found: HashMap<_, Vec<_>> = HashMap::new();
    for partition in 0..PARTITIONS {
        let end = log.end_offset(partition).await.expect("end offset");
        let mut from = 0;
        while from < end {
            let records = log.read(partition, from, 500).await.expect("read");
            let Some(last) = records.last() else { break };
            from = last.position.offset + 1;
            for record in records {
                let event = codec::decode(&record.value).expect("an event");
                if let Some(Payload::UserMessageSent(sent)) = &event.payload {
                    found
                        .entry((event.tenant_id.clone(), sent.client_message_id.clone()))
                        .or_default()
                        .push((event.id.clone(), record.position.offset));
                }
            }
        }
    }
    found
}
