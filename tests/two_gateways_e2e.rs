//! One platform behind two gateways: each role in its own process (two
//! gateways, a projector and a router) on Kafka, the ScyllaDB store (the
//! CQL test server) and Redis. Two clients of one conversation, one on each
//! gateway, both receive every token delta and every event exactly once;
//! a client that drops and reconnects to the other gateway resumes from its
//! last position with no gap and no duplicate.
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chatstream_schemas::ws::{ClientFrame, EventBody, EventJson, ServerFrame};
use support::cluster::SharedBackends;
use support::{Ws, connect_ws};

const ANSWER_WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_on_two_gateways_see_one_conversation_exactly_once() {
    let Some(backends) = SharedBackends::create(4, &["acme".to_owned()]).await else {
        return;
    };
    let _projector = backends.processor("conversation-projector").await;
    let _router = backends.processor("router").await;
    let gateway_1 = backends.gateway().await;
    let gateway_2 = backends.gateway().await;
    let key = backends.key("acme");

    let mut alice = Client::new(connect_ws(&gateway_1.http_addr, key).await);
    alice
        .ws
        .send(&ClientFrame::Open {
            request_id: None,
            title: Some("shared".into()),
        })
        .await;
    let conversation_id = match alice.ws.next_frame().await {
        ServerFrame::Opened {
            conversation_id, ..
        } => conversation_id,
        other => panic!("expected opened, got {other:?}"),
    };
    alice.subscribe(&conversation_id, None).await;
    let mut bob = Client::new(connect_ws(&gateway_2.http_addr, key).await);
    bob.subscribe(&conversation_id, None).await;

    for n in 0..3 {
        alice
            .send(&conversation_id, &format!("first round {n}"))
            .await;
    }
    alice.wait_for_answers(3).await;
    bob.wait_for_answers(3).await;
    for client in [&alice, &bob] {
        client.assert_every_delta_once();
    }
    assert_eq!(
        bob.event_ids(),
        alice.event_ids(),
        "both gateways deliver the same events, once each, in order"
    );
    assert_eq!(bob.deltas, alice.deltas, "and the same deltas");

    // Bob drops and comes back on the other gateway, from his last position.
    let resume_from = bob.last_position.expect("bob saw events");
    drop(bob);
    for n in 0..2 {
        alice
            .send(&conversation_id, &format!("second round {n}"))
            .await;
    }
    alice.wait_for_answers(5).await;
    let mut bob_again = Client::new(connect_ws(&gateway_1.http_addr, key).await);
    bob_again
        .subscribe(&conversation_id, Some(resume_from))
        .await;
    let missed: Vec<String> = alice
        .events
        .iter()
        .filter(|(position, _)| *position > resume_from)
        .map(|(_, event)| event.id.clone())
        .collect();
    assert!(!missed.is_empty(), "events happened while bob was away");
    tokio::time::timeout(ANSWER_WAIT, async {
        while bob_again.events.len() < missed.len() {
            bob_again.next().await;
        }
    })
    .await
    .expect("bob got the events he missed");
    assert_eq!(
        bob_again.event_ids(),
        missed,
        "the resumed subscription starts right after bob's last position: no gap, no duplicate"
    );
}

/// One WebSocket client and what it received.
struct Client {
    ws: Ws,
    /// Committed events by position, in arrival order.
    events: Vec<(u64, EventJson)>,
    /// Token deltas per answered message: (index, text) in arrival order.
    deltas: BTreeMap<String, Vec<(u32, String)>>,
    last_position: Option<u64>,
}

impl Client {
    fn new(ws: Ws) -> Self {
        Self {
            ws,
            events: Vec::new(),
            deltas: BTreeMap::new(),
            last_position: None,
        }
    }

    async fn subscribe(&mut self, conversation_id: &str, after_position: Option<u64>) {
        self.ws
            .send(&ClientFrame::Subscribe {
                request_id: None,
                conversation_id: conversation_id.to_owned(),
                after_position,
            })
            .await;
        loop {
            match self.next().await {
                Some(ServerFrame::Subscribed { .. }) => return,
                Some(ServerFrame::Error { code, message, .. }) => {
                    panic!("subscribe failed: {code}: {message}")
                }
                _ => {}
            }
        }
    }

    async fn send(&mut self, conversation_id: &str, text: &str) {
        self.ws
            .send(&ClientFrame::Send {
                request_id: None,
                conversation_id: Some(conversation_id.to_owned()),
                client_message_id: None,
                text: text.to_owned(),
            })
            .await;
        loop {
            match self.next().await {
                Some(ServerFrame::Ack { .. }) => return,
                Some(ServerFrame::Error { code, message, .. }) => {
                    panic!("send failed: {code}: {message}")
                }
                _ => {}
            }
        }
    }

    async fn wait_for_answers(&mut self, answers: usize) {
        tokio::time::timeout(ANSWER_WAIT, async {
            while self.answers().len() < answers {
                self.next().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{answers} answers in {ANSWER_WAIT:?}"));
    }

    /// The next frame; events and deltas are recorded, other frames returned.
    async fn next(&mut self) -> Option<ServerFrame> {
        match self.ws.next_frame().await {
            ServerFrame::Event { position, event } => {
                self.last_position = Some(position);
                self.events.push((position, event));
                None
            }
            ServerFrame::Delta {
                reply_to,
                index,
                text,
                ..
            } => {
                self.deltas.entry(reply_to).or_default().push((index, text));
                None
            }
            other => Some(other),
        }
    }

    fn event_ids(&self) -> Vec<String> {
        self.events.iter().map(|(_, e)| e.id.clone()).collect()
    }

    fn answers(&self) -> Vec<(&str, &str)> {
        self.events
            .iter()
            .filter_map(|(_, event)| match &event.body {
                EventBody::AssistantMessage { text, .. } => {
                    Some((event.causation_id.as_str(), text.as_str()))
                }
                _ => None,
            })
            .collect()
    }

    /// Every answer's deltas arrived once each, in order, and spell it out;
    /// events never repeat and come in log order.
    fn assert_every_delta_once(&self) {
        let positions: Vec<u64> = self.events.iter().map(|(p, _)| *p).collect();
        assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "events in log order, none twice: {positions:?}"
        );
        let ids: BTreeSet<String> = self.event_ids().into_iter().collect();
        assert_eq!(ids.len(), self.events.len(), "no event twice");
        for (reply_to, text) in self.answers() {
            let deltas = self
                .deltas
                .get(reply_to)
                .unwrap_or_else(|| panic!("deltas for {reply_to}"));
            let indexes: Vec<u32> = deltas.iter().map(|(index, _)| *index).collect();
            let expected: Vec<u32> = (0..deltas.len() as u32).collect();
            assert_eq!(indexes, expected, "each delta once, in order");
            let spelled: String = deltas.iter().map(|(_, t)| t.as_str()).collect();
            assert_eq!(spelled, text, "the deltas spell the answer");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_on_another_gateway_gets_the_same_answer() {
    use chatstream_schemas::pb::gateway as pb;
    use support::{authed, grpc_client};

    let Some(backends) = SharedBackends::create(4, &["acme".to_owned()]).await else {
        return;
    };
    let _projector = backends.processor("conversation-projector").await;
    let _router = backends.processor("router").await;
    let gateways = [backends.gateway().await, backends.gateway().await];
    let key = backends.key("acme").to_owned();
    let mut grpc = grpc_client(gateways[0].grpc_addr.as_deref().expect("gRPC")).await;
    let conversation_id = grpc
        .open_conversation(authed(pb::OpenConversationRequest::default(), &key))
        .await
        .expect("open")
        .into_inner()
        .conversation_id;

    // The same send, at the same moment, through both gateways, several times.
    for round in 0..5 {
        let sends = gateways.iter().map(|gateway| {
            let address = gateway.grpc_addr.clone().expect("gRPC");
            let request = pb::SendMessageRequest {
                conversation_id: conversation_id.clone(),
                client_message_id: format!("retry-{round}"),
                text: format!("round {round}"),
                ..Default::default()
            };
            let key = key.clone();
            tokio::spawn(async move {
                let mut client = grpc_client(&address).await;
                client
                    .send_message(authed(request, &key))
                    .await
                    .expect("send")
                    .into_inner()
            })
        });
        let mut acks = Vec::new();
        for send in sends {
            acks.push(send.await.expect("send task"));
        }
        assert_eq!(
            acks[0].event_id, acks[1].event_id,
            "round {round}: both gateways name the same event"
        );
        let originals = acks.iter().filter(|ack| !ack.duplicate).count();
        assert_eq!(
            originals, 1,
            "round {round}: one original, one duplicate: {acks:?}"
        );
    }

    // The conversation holds each message once, and one answer to each.
    let deadline = std::time::Instant::now() + ANSWER_WAIT;
    loop {
        let events = support::conversation_events(&mut grpc, &key, &conversation_id).await;
        let sent = events
            .iter()
            .filter(|e| matches!(e.body, EventBody::UserMessageSent { .. }))
            .count();
        let answered = events
            .iter()
            .filter(|e| matches!(e.body, EventBody::AssistantMessage { .. }))
            .count();
        assert!(sent <= 5, "each message once, got {sent}");
        assert!(answered <= 5, "one answer per message, got {answered}");
        if sent == 5 && answered == 5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "answers in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
