//! Conformance cases for `FanOut`.
use std::time::Duration;

use futures::StreamExt;

use super::{history_entry, unique, user_message};
use chatstream_core::fanout::{FanOut, FanOutError, FanOutMessage, FanOutStream, TokenDelta};

/// Messages the lag case publishes without reading; a subject's
/// per-subscriber buffer must be smaller than this.
pub const LAG_PROBE_MESSAGES: u32 = 10_000;

/// How long a subscriber waits for a message that was already published.
const DELIVERY: Duration = Duration::from_secs(5);

fn delta(conversation_id: &str, index: u32) -> FanOutMessage {
    FanOutMessage::Delta(TokenDelta {
        conversation_id: conversation_id.to_owned(),
        reply_to: "event-1".to_owned(),
        index,
        text: format!("token {index}"),
    })
}

async fn next(stream: &mut FanOutStream, what: &str) -> Result<FanOutMessage, FanOutError> {
    match tokio::time::timeout(DELIVERY, stream.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("{what}: the subscription ended"),
        Err(_) => panic!("{what}: nothing was delivered within {DELIVERY:?}"),
    }
}

async fn publish_all<F: FanOut + ?Sized>(
    fanout: &F,
    tenant: &str,
    conversation: &str,
    messages: &[FanOutMessage],
) {
    for message in messages {
        fanout
            .publish(tenant, conversation, message.clone())
            .await
            .expect("publish");
    }
}

pub async fn publish_without_subscribers_is_ok<F: FanOut + ?Sized>(fanout: &F) {
    let tenant = unique("tenant");
    fanout
        .publish(&tenant, "c", delta("c", 0))
        .await
        .expect("publishing to nobody is not an error");
}

pub async fn subscriber_gets_messages_published_after_subscribing_in_order<F: FanOut + ?Sized>(
    fanout: &F,
) {
    let tenant = unique("tenant");
    fanout
        .publish(&tenant, "c", delta("c", 0))
        .await
        .expect("publish before subscribing");
    let mut stream = fanout.subscribe(&tenant, "c").await.expect("subscribe");
    let messages: Vec<FanOutMessage> = (1..=5).map(|index| delta("c", index)).collect();
    publish_all(fanout, &tenant, "c", &messages).await;
    for (n, expected) in messages.iter().enumerate() {
        let received = next(&mut stream, "subscriber").await.expect("no lag");
        assert_eq!(
            &received, expected,
            "message {n}: delivered in publish order, nothing from before subscribing"
        );
    }
}

pub async fn every_subscriber_gets_every_message<F: FanOut + ?Sized>(fanout: &F) {
    let tenant = unique("tenant");
    let mut first = fanout.subscribe(&tenant, "c").await.expect("subscribe");
    let mut second = fanout.subscribe(&tenant, "c").await.expect("subscribe");
    let messages: Vec<FanOutMessage> = (0..3).map(|index| delta("c", index)).collect();
    publish_all(fanout, &tenant, "c", &messages).await;
    for expected in &messages {
        assert_eq!(
            &next(&mut first, "first subscriber").await.expect("no lag"),
            expected
        );
        assert_eq!(
            &next(&mut second, "second subscriber")
                .await
                .expect("no lag"),
            expected
        );
    }
}

pub async fn committed_entries_are_delivered<F: FanOut + ?Sized>(fanout: &F) {
    let tenant = unique("tenant");
    let mut stream = fanout.subscribe(&tenant, "c").await.expect("subscribe");
    let committed =
        FanOutMessage::Committed(history_entry(2, 41, user_message(&tenant, "c", "hello")).into());
    fanout
        .publish(&tenant, "c", committed.clone())
        .await
        .expect("publish");
    assert_eq!(
        next(&mut stream, "subscriber").await.expect("no lag"),
        committed,
        "the whole entry arrives"
    );
}

pub async fn other_conversations_and_tenants_do_not_leak<F: FanOut + ?Sized>(fanout: &F) {
    let (tenant, other_tenant) = (unique("tenant"), unique("tenant"));
    let prefix_tenant = format!("{tenant}2");
    let mut stream = fanout.subscribe(&tenant, "c").await.expect("subscribe");
    fanout
        .publish(&tenant, "c2", delta("c2", 1))
        .await
        .expect("publish to another conversation");
    fanout
        .publish(&other_tenant, "c", delta("c", 2))
        .await
        .expect("publish to another tenant");
    fanout
        .publish(&prefix_tenant, "c", delta("c", 3))
        .await
        .expect("publish to a tenant extending the id");
    let marker = delta("c", 4);
    fanout
        .publish(&tenant, "c", marker.clone())
        .await
        .expect("publish");
    let received = next(&mut stream, "subscriber").await.expect("no lag");
    assert_eq!(
        received, marker,
        "only the subscribed tenant's conversation is delivered"
    );
}

pub async fn lagging_subscriber_is_told_how_many_it_missed<F: FanOut + ?Sized>(fanout: &F) {
    let tenant = unique("tenant");
    let mut stream = fanout.subscribe(&tenant, "c").await.expect("subscribe");
    for index in 0..LAG_PROBE_MESSAGES {
        fanout
            .publish(&tenant, "c", delta("c", index))
            .await
            .expect("publish");
    }
    // Every message is either delivered (in order) or counted as skipped.
    let (mut delivered, mut skipped, mut lags) = (0u64, 0u64, 0);
    let mut last_index = None;
    while delivered + skipped < u64::from(LAG_PROBE_MESSAGES) {
        match next(&mut stream, "lagging subscriber").await {
            Ok(FanOutMessage::Delta(delta)) => {
                assert!(
                    last_index < Some(delta.index),
                    "delivered out of order: {} after {last_index:?}",
                    delta.index
                );
                last_index = Some(delta.index);
                delivered += 1;
            }
            Ok(other) => panic!("unexpected message {other:?}"),
            Err(FanOutError::Lagged { skipped: count }) => {
                assert!(count > 0, "a lag report skips at least one message");
                skipped += count;
                lags += 1;
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert!(
        lags > 0,
        "{LAG_PROBE_MESSAGES} unread messages must overflow the subscriber and be reported"
    );
    assert_eq!(
        delivered + skipped,
        u64::from(LAG_PROBE_MESSAGES),
        "delivered + skipped = published"
    );
    assert_eq!(
        last_index,
        Some(LAG_PROBE_MESSAGES - 1),
        "the newest message is still delivered"
    );
}

pub async fn resubscribing_after_leaving_works<F: FanOut + ?Sized>(fanout: &F) {
    let tenant = unique("tenant");
    let stream = fanout.subscribe(&tenant, "c").await.expect("subscribe");
    drop(stream);
    fanout
        .publish(&tenant, "c", delta("c", 0))
        .await
        .expect("publish after the subscriber left");
    let mut stream = fanout
        .subscribe(&tenant, "c")
        .await
        .expect("subscribe again");
    fanout
        .publish(&tenant, "c", delta("c", 1))
        .await
        .expect("publish");
    assert_eq!(
        next(&mut stream, "new subscriber").await.expect("no lag"),
        delta("c", 1)
    );
}
