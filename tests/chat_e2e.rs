//! End to end over real sockets against the real binary: a chat turn over
//! WebSocket and gRPC, durability across a crash, and recovery from a
//! position with no gap and no duplicate.
mod support;

use chatstream_schemas::pb::gateway as pb;
use chatstream_schemas::ws::{ClientFrame, EventBody, ServerFrame};
use chatstream_test_support::{grpc, turns};
use support::{Platform, Ws, authed, http_get, send_frame};

/// Reads the turn of `user_event_id`, which must end in the mock model's
/// answer to it; returns the streamed deltas' text, the answer's text, and
/// the frames read.
async fn read_turn(ws: &mut Ws, user_event_id: &str) -> (String, String, Vec<ServerFrame>) {
    let turn = turns::read_turn(ws, user_event_id).await;
    let end = turn.end();
    let EventBody::AssistantMessage {
        text, model, usage, ..
    } = &end.body
    else {
        panic!("expected the answer, got {end:?}")
    };
    assert_eq!(end.causation_id, user_event_id, "{end:?}");
    assert_eq!(model, "mock");
    assert!(
        usage.completion_tokens > 0
            && usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    );
    let text = text.clone();
    (turn.reply_deltas(), text, turn.frames)
}

fn committed_positions(frames: &[ServerFrame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Event { position, .. } => Some(*position),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn websocket_turn_streams_deltas_and_commits_the_answer() {
    let platform = Platform::start(&[]).await;
    let mut ws = platform.ws(platform.key("acme")).await;

    let (event_id, position, conversation_id) = ws.send_message(None, "hello there").await;
    ws.send(&ClientFrame::Subscribe {
        request_id: Some("s1".into()),
        conversation_id: conversation_id.clone(),
        after_position: None,
    })
    .await;
    let first = ws.next_frame().await;
    assert!(
        matches!(first, ServerFrame::Subscribed { ref request_id, .. } if request_id.as_deref() == Some("s1")),
        "{first:?}"
    );

    let (deltas, answer, frames) = read_turn(&mut ws, &event_id).await;
    assert_eq!(answer, "You said: hello there");
    // Deltas streamed before the subscription are gone (they are ephemeral): what arrived ends the answer.
    assert!(
        answer.ends_with(&deltas),
        "deltas {deltas:?} vs answer {answer:?}"
    );

    let events: Vec<(u64, &str)> = frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Event { position, event } => Some((*position, event_type(&event.body))),
            _ => None,
        })
        .collect();
    assert_eq!(
        events.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        ["opened", "user", "assistant"],
        "the conversation's committed events in order"
    );
    assert_eq!(
        events[1].0, position,
        "the ack's position is the user message's position"
    );
    assert!(
        events.windows(2).all(|w| w[0].0 < w[1].0),
        "positions increase"
    );

    // A second turn on the same connection arrives live, deltas included.
    // Deltas may arrive before the ack, so keep every frame from the send on.
    ws.send(&send_frame(Some(&conversation_id), "again")).await;
    let mut frames = ws
        .frames_until(|f| matches!(f, ServerFrame::Ack { .. }))
        .await;
    let Some(ServerFrame::Ack {
        event_id: second_id,
        conversation_id: same_conversation,
        ..
    }) = frames.last().cloned()
    else {
        unreachable!()
    };
    assert_eq!(same_conversation, conversation_id);
    let (_, answer, rest) = read_turn(&mut ws, &second_id).await;
    frames.extend(rest);
    let deltas: String = frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Delta { reply_to, text, .. } if *reply_to == second_id => {
                Some(text.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(answer, "You said: again");
    assert_eq!(deltas, answer, "a live subscriber sees every delta");
}

fn event_type(body: &EventBody) -> &'static str {
    match body {
        EventBody::ConversationOpened { .. } => "opened",
        EventBody::UserMessageSent { .. } => "user",
        EventBody::AssistantMessage { .. } => "assistant",
        EventBody::ErrorOccurred { .. } => "error",
        _ => "other",
    }
}

#[tokio::test]
async fn grpc_unary_and_converse_share_the_same_conversation() {
    let platform = Platform::start(&[]).await;
    let key = platform.key("acme").to_owned();
    let mut client = platform.grpc().await;

    let opened = client
        .open_conversation(authed(
            pb::OpenConversationRequest {
                request_id: "o".into(),
                title: "grpc".into(),
            },
            &key,
        ))
        .await
        .expect("open")
        .into_inner();
    let send_m1 = || {
        authed(
            pb::SendMessageRequest {
                conversation_id: opened.conversation_id.clone(),
                text: "over grpc".into(),
                client_message_id: "m-1".into(),
                ..Default::default()
            },
            &key,
        )
    };
    let ack = client
        .send_message(send_m1())
        .await
        .expect("send")
        .into_inner();
    assert!(!ack.duplicate);
    assert!(ack.position > opened.position);

    // Converse: subscribe from the start and read until the assistant message.
    let (frames_tx, frames_rx) = tokio::sync::mpsc::channel(8);
    frames_tx
        .send(pb::ClientFrame {
            frame: Some(pb::client_frame::Frame::Subscribe(pb::SubscribeRequest {
                request_id: "s".into(),
                conversation_id: opened.conversation_id.clone(),
                after_position: None,
            })),
        })
        .await
        .unwrap();
    let mut stream = client
        .converse(authed(
            tokio_stream::wrappers::ReceiverStream::new(frames_rx),
            &key,
        ))
        .await
        .expect("converse")
        .into_inner();
    let mut types = Vec::new();
    let answer = loop {
        let frame = tokio::time::timeout(support::WAIT, stream.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("frame");
        if let Some(pb::server_frame::Frame::Event(committed)) = frame.frame {
            let event = committed.event.expect("event");
            types.push(event.r#type.clone());
            if let Some(chatstream_schemas::pb::events::event::Payload::AssistantMessage(message)) =
                event.payload
            {
                assert_eq!(event.causation_id, ack.event_id);
                break message.text;
            }
        }
    };
    assert_eq!(answer, "You said: over grpc");
    assert_eq!(
        types[..2],
        [
            "chatstream.conversation.opened.v1",
            "chatstream.user_message.sent.v1"
        ]
    );

    // A retry with the same client message id is acked with the original.
    let retry = client
        .send_message(send_m1())
        .await
        .expect("retry")
        .into_inner();
    assert!(retry.duplicate);
    assert_eq!(
        (retry.event_id.as_str(), retry.position),
        (ack.event_id.as_str(), ack.position)
    );

    // History with paging: page size 1 walks every event once.
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let page = client
            .get_conversation(authed(
                pb::GetConversationRequest {
                    conversation_id: opened.conversation_id.clone(),
                    after_position: after,
                    page_size: 1,
                },
                &key,
            ))
            .await
            .expect("history")
            .into_inner();
        seen.extend(page.events.iter().map(|e| e.position));
        match page.next_after_position {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        seen.len(),
        3,
        "opened, one user message (the retry was not appended), one answer: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn probes_metrics_grpc_health_and_reflection_answer() {
    let platform = Platform::start(&[]).await;
    let channel = tonic::transport::Channel::from_shared(platform.grpc_channel_addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // The health service follows readiness (which the platform waited for)
    // from a task of its own: SERVING within moments, not necessarily at once.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "chatstream.gateway.v1.ChatService".into(),
            })
            .await
            .expect("health check")
            .into_inner();
        if status.status() == serving {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gRPC health says {:?} after /ready",
            status.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Reflection lists the chat service, so grpcurl needs no proto files (v1 and v1alpha).
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection")
        .into_inner();
    let listing = format!("{:?}", responses.message().await.unwrap().unwrap());
    assert!(
        listing.contains("chatstream.gateway.v1.ChatService"),
        "{listing}"
    );
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest as AlphaReflectionRequest,
        server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaRequest,
    };
    let request = AlphaReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut responses = AlphaClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    assert!(
        format!("{:?}", responses.message().await.unwrap().unwrap())
            .contains("chatstream.gateway.v1.ChatService")
    );

    let (status, body) = http_get(&platform.http_addr, "/health").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(&platform.http_addr, "/ready").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ready\""), "{body}");

    // After one turn the processors' metrics are there.
    let mut ws = platform.ws(platform.key("acme")).await;
    let (event_id, _) = ws.send_and_subscribe("count me").await;
    read_turn(&mut ws, &event_id).await;
    let (status, body) = http_get(&platform.http_addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for metric in [
        "chatstream_processor_events_processed_total{processor=\"router\"}",
        "chatstream_processor_events_processed_total{processor=\"conversation-projector\"}",
        "chatstream_gateway_append_seconds",
        "chatstream_gateway_connections{transport=\"websocket\"}",
    ] {
        assert!(
            body.contains(metric),
            "{metric} missing from metrics:\n{body}"
        );
    }
}

#[tokio::test]
async fn acked_messages_survive_a_crash_and_reconnect_recovers_exactly_the_missed_events() {
    let mut platform = Platform::start(&[]).await;
    let mut ws = platform.ws(platform.key("acme")).await;
    let (first_id, conversation_id) = ws.send_and_subscribe("before the crash").await;
    let (_, _, frames) = read_turn(&mut ws, &first_id).await;
    let last_seen = *committed_positions(&frames).last().expect("events");

    // Acked while the client is away, then the process dies without warning.
    let mut other = platform.ws(platform.key("acme")).await;
    let mut missed_acks = Vec::new();
    for i in 0..5 {
        let (ack, duplicate) = other
            .send_once(
                Some(&conversation_id),
                &format!("missed-{i}"),
                &format!("missed {i}"),
            )
            .await;
        assert!(!duplicate);
        missed_acks.push(ack);
    }
    drop(ws);
    platform.kill().await;
    platform.restart().await;

    // A client that lost its acks in the crash sends again: every resend is
    // the acked message, not a new one.
    let mut resender = platform.ws(platform.key("acme")).await;
    for (i, acked) in missed_acks.iter().enumerate() {
        let (again, duplicate) = resender
            .send_once(
                Some(&conversation_id),
                &format!("missed-{i}"),
                &format!("missed {i}"),
            )
            .await;
        assert!(duplicate, "the resend of missed-{i} after the crash");
        assert_eq!(&again, acked, "the resend is acked as the original");
    }

    let mut ws = platform.ws(platform.key("acme")).await;
    ws.send(&ClientFrame::Subscribe {
        request_id: None,
        conversation_id: conversation_id.clone(),
        after_position: Some(last_seen),
    })
    .await;
    let last_missed = missed_acks.last().unwrap().0.clone();
    let frames = ws
        .frames_until(|f| matches!(f, ServerFrame::Event { event, .. }
            if event.causation_id == last_missed && matches!(event.body, EventBody::AssistantMessage { .. })))
        .await;
    let positions = committed_positions(&frames);
    assert!(
        positions.iter().all(|p| *p > last_seen),
        "nothing at or before the resume position: {positions:?}"
    );
    let mut unique = positions.clone();
    unique.dedup();
    assert_eq!(unique, positions, "no duplicates, in order");
    // Every acked message is there, each answered exactly once.
    for (event_id, position, _) in &missed_acks {
        assert!(
            positions.contains(position),
            "acked message at {position} recovered"
        );
        let answers = frames
            .iter()
            .filter(|f| matches!(f, ServerFrame::Event { event, .. } if &event.causation_id == event_id))
            .count();
        assert_eq!(answers, 1, "one answer to {event_id}");
    }
    assert_eq!(
        positions.len(),
        10,
        "five user messages and five answers: {positions:?}"
    );

    // Then live events keep coming on the same subscription.
    let (live_id, _, _) = ws
        .send_message(Some(&conversation_id), "after restart")
        .await;
    let (_, answer, _) = read_turn(&mut ws, &live_id).await;
    assert_eq!(answer, "You said: after restart");

    // A clean stop (SIGTERM) exits with success and keeps everything too.
    platform.stop().await;
    platform.restart().await;
    let mut client = platform.grpc().await;
    let history = client
        .get_conversation(authed(
            pb::GetConversationRequest {
                conversation_id: conversation_id.clone(),
                after_position: None,
                page_size: 1000,
            },
            platform.key("acme"),
        ))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(
        history.events.len(),
        1 + 2 + 10 + 2,
        "opened + 7 turns of 2 events"
    );
}

#[tokio::test]
async fn history_pages_of_large_messages_stay_within_what_clients_accept() {
    let platform = Platform::start(&[]).await;
    let key = platform.key("acme").to_owned();
    let mut client = platform.grpc().await;
    let big = "b".repeat(900 * 1024);
    let mut conversation_id = String::new();
    let mut last_ack = None;
    for _ in 0..6 {
        let ack = grpc::send_message(&mut client, &key, &conversation_id, &big)
            .await
            .expect("a message at the size limit is accepted");
        conversation_id = ack.conversation_id.clone();
        last_ack = Some(ack);
    }
    let last_ack = last_ack.unwrap();

    // Walk the whole history (12 MB) with the default page size; wait for the last answer.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let mut after = None;
        let mut pages = 0;
        let mut events = Vec::new();
        loop {
            let page = client
                .get_conversation(authed(
                    pb::GetConversationRequest {
                        conversation_id: conversation_id.clone(),
                        after_position: after,
                        page_size: 0,
                    },
                    &key,
                ))
                .await
                .expect("every page fits the client's default 4 MiB limit")
                .into_inner();
            pages += 1;
            events.extend(page.events.into_iter().map(|e| e.event.unwrap()));
            match page.next_after_position {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let answered = events.iter().any(|e| e.causation_id == last_ack.event_id);
        if answered {
            assert_eq!(events.len(), 1 + 6 * 2, "opened, six messages, six answers");
            assert!(
                pages > 3,
                "large events are split over several pages, got {pages}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the last message was answered in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
