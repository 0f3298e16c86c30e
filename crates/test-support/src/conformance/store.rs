//! Conformance cases for `ProjectionStore`.
use super::{history_entry, unique, user_message};
use chatstream_core::log::LogPosition;
use chatstream_core::store::{
    ClientMessageRecord, ConversationRecord, HistoryEntry, ProjectionStore, Recorded,
};

fn conversation(tenant_id: &str, conversation_id: &str, title: &str) -> ConversationRecord {
    ConversationRecord {
        tenant_id: tenant_id.to_owned(),
        conversation_id: conversation_id.to_owned(),
        title: title.to_owned(),
        created_at_ms: 1_700_000_000_000,
        opened_by_key_id: "key-1".to_owned(),
    }
}

fn entry(tenant_id: &str, conversation_id: &str, offset: u64) -> HistoryEntry {
    history_entry(
        3,
        offset,
        user_message(tenant_id, conversation_id, &format!("at offset {offset}")),
    )
}

fn client_message(tenant_id: &str, client_message_id: &str, offset: u64) -> ClientMessageRecord {
    ClientMessageRecord {
        tenant_id: tenant_id.to_owned(),
        client_message_id: client_message_id.to_owned(),
        conversation_id: "conversation".to_owned(),
        event_id: unique("event"),
        position: LogPosition {
            partition: 1,
            offset,
        },
    }
}

async fn record<S: ProjectionStore + ?Sized>(store: &S, entry: &HistoryEntry) {
    let recorded = store.append_history(entry).await.expect("append_history");
    assert_eq!(
        recorded,
        Recorded::Inserted,
        "first time event {} is recorded",
        entry.event.id
    );
}

/// A conversation's whole history (up to 1000 entries), in order.
pub async fn history_of<S: ProjectionStore + ?Sized>(
    store: &S,
    tenant_id: &str,
    conversation_id: &str,
) -> Vec<HistoryEntry> {
    store
        .read_history(tenant_id, conversation_id, None, 1000)
        .await
        .expect("read_history")
}

async fn history_offsets<S: ProjectionStore + ?Sized>(
    store: &S,
    tenant_id: &str,
    conversation_id: &str,
) -> Vec<u64> {
    let history = history_of(store, tenant_id, conversation_id).await;
    history.iter().map(|entry| entry.position.offset).collect()
}

async fn listed_ids<S: ProjectionStore + ?Sized>(
    store: &S,
    tenant_id: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<String> {
    let listed = store
        .list_conversations(tenant_id, after, limit)
        .await
        .expect("list_conversations");
    for record in &listed {
        assert_eq!(
            record.tenant_id, tenant_id,
            "list_conversations({tenant_id:?}) returned {record:?}"
        );
    }
    listed
        .into_iter()
        .map(|record| record.conversation_id)
        .collect()
}

pub async fn ping_answers<S: ProjectionStore + ?Sized>(store: &S) {
    store.ping().await.expect("ping");
}

pub async fn first_conversation_record_wins<S: ProjectionStore + ?Sized>(store: &S) {
    let tenant = unique("tenant");
    assert_eq!(
        store.get_conversation(&tenant, "c1").await.expect("get"),
        None
    );

    let first = conversation(&tenant, "c1", "first title");
    assert_eq!(store.put_conversation(&first).await.expect("put"), first);
    let second = ConversationRecord {
        title: "second title".into(),
        created_at_ms: 1,
        ..first.clone()
    };
    assert_eq!(
        store.put_conversation(&second).await.expect("put again"),
        first,
        "the first record wins"
    );
    assert_eq!(
        store.get_conversation(&tenant, "c1").await.expect("get"),
        Some(first)
    );
}

pub async fn conversations_are_listed_in_id_order_and_paged<S: ProjectionStore + ?Sized>(
    store: &S,
) {
    let tenant = unique("tenant");
    for id in ["c3", "c1", "c4", "c2"] {
        store
            .put_conversation(&conversation(&tenant, id, id))
            .await
            .expect("put");
    }
    assert_eq!(
        listed_ids(store, &tenant, None, 100).await,
        ["c1", "c2", "c3", "c4"]
    );
    assert_eq!(
        listed_ids(store, &tenant, None, 2).await,
        ["c1", "c2"],
        "limit"
    );
    assert_eq!(
        listed_ids(store, &tenant, Some("c2"), 2).await,
        ["c3", "c4"],
        "next page starts after c2"
    );
    assert!(
        listed_ids(store, &tenant, Some("c4"), 2).await.is_empty(),
        "nothing after the last one"
    );
    assert_eq!(
        listed_ids(store, &tenant, Some("c10"), 1).await,
        ["c2"],
        "after_id need not exist"
    );
}

pub async fn conversations_are_isolated_between_tenants<S: ProjectionStore + ?Sized>(store: &S) {
    let (tenant_a, tenant_b) = (unique("tenant-a"), unique("tenant-b"));
    let theirs = conversation(&tenant_a, "shared-id", "A's conversation");
    store.put_conversation(&theirs).await.expect("put");

    assert_eq!(
        store
            .get_conversation(&tenant_b, "shared-id")
            .await
            .expect("get"),
        None,
        "B cannot read A's"
    );
    assert!(
        listed_ids(store, &tenant_b, None, 100).await.is_empty(),
        "B's list is empty"
    );

    let ours = conversation(&tenant_b, "shared-id", "B's conversation");
    assert_eq!(
        store.put_conversation(&ours).await.expect("put"),
        ours,
        "the same id under B is B's own"
    );
    assert_eq!(
        store
            .get_conversation(&tenant_a, "shared-id")
            .await
            .expect("get"),
        Some(theirs)
    );
    assert_eq!(
        store
            .get_conversation(&tenant_b, "shared-id")
            .await
            .expect("get"),
        Some(ours)
    );
}

pub async fn tenant_ids_that_prefix_each_other_do_not_leak<S: ProjectionStore + ?Sized>(store: &S) {
    let short = unique("acme");
    let long = format!("{short}2");
    for (tenant, conversation_id) in [(&short, "c"), (&long, "c"), (&long, "c1"), (&short, "c1x")] {
        store
            .put_conversation(&conversation(tenant, conversation_id, "t"))
            .await
            .expect("put");
    }
    assert_eq!(listed_ids(store, &short, None, 100).await, ["c", "c1x"]);
    assert_eq!(listed_ids(store, &long, None, 100).await, ["c", "c1"]);
    assert_eq!(listed_ids(store, &short, Some("c"), 100).await, ["c1x"]);

    record(store, &entry(&short, "c", 1)).await;
    record(store, &entry(&long, "c", 2)).await;
    record(store, &entry(&short, "c1", 3)).await;
    assert_eq!(
        history_offsets(store, &short, "c").await,
        [1],
        "conversation c of {short}"
    );
    assert_eq!(
        history_offsets(store, &long, "c").await,
        [2],
        "conversation c of {long}"
    );
    assert_eq!(
        history_offsets(store, &short, "c1").await,
        [3],
        "a conversation id that extends another"
    );

    store
        .claim_client_message(&client_message(&short, "m", 1))
        .await
        .expect("claim");
    assert_eq!(
        store.get_client_message(&long, "m").await.expect("get"),
        None
    );
    assert_eq!(
        store.get_client_message(&short, "m2").await.expect("get"),
        None
    );
}

pub async fn history_round_trips_events<S: ProjectionStore + ?Sized>(store: &S) {
    let tenant = unique("tenant");
    let stored = entry(&tenant, "c", 7);
    record(store, &stored).await;
    let history = store
        .read_history(&tenant, "c", None, 10)
        .await
        .expect("read_history");
    assert_eq!(
        history,
        vec![stored],
        "the entry comes back with its position and the whole event"
    );
}

pub async fn history_is_ordered_by_offset_and_pages_after_an_offset<S: ProjectionStore + ?Sized>(
    store: &S,
) {
    let tenant = unique("tenant");
    for offset in [5, 1, 30, 3, 12] {
        record(store, &entry(&tenant, "c", offset)).await;
    }
    assert_eq!(
        history_offsets(store, &tenant, "c").await,
        [1, 3, 5, 12, 30],
        "oldest first"
    );
    let tenant = tenant.as_str();
    let page = |after, limit| async move {
        let history = store
            .read_history(tenant, "c", after, limit)
            .await
            .expect("read_history");
        history
            .iter()
            .map(|entry| entry.position.offset)
            .collect::<Vec<_>>()
    };
    assert_eq!(page(None, 2).await, [1, 3], "limit");
    assert_eq!(page(Some(3), 2).await, [5, 12], "after_offset is exclusive");
    assert_eq!(
        page(Some(4), 100).await,
        [5, 12, 30],
        "after_offset need not be an entry"
    );
    assert!(
        page(Some(30), 100).await.is_empty(),
        "nothing after the newest"
    );
    assert!(page(Some(u64::MAX), 100).await.is_empty());
    assert!(page(None, 0).await.is_empty(), "limit 0");
}

pub async fn history_is_isolated_between_tenants_and_conversations<S: ProjectionStore + ?Sized>(
    store: &S,
) {
    let (tenant_a, tenant_b) = (unique("tenant-a"), unique("tenant-b"));
    let a = entry(&tenant_a, "shared-id", 10);
    let b = entry(&tenant_b, "shared-id", 11);
    let other = entry(&tenant_a, "other", 12);
    for stored in [&a, &b, &other] {
        record(store, stored).await;
    }
    let read = |tenant: String| async move {
        store
            .read_history(&tenant, "shared-id", None, 100)
            .await
            .expect("read")
    };
    assert_eq!(
        read(tenant_a.clone()).await,
        vec![a],
        "A sees only its own conversation"
    );
    assert_eq!(
        read(tenant_b.clone()).await,
        vec![b],
        "B sees only its own conversation"
    );
    assert!(
        read(unique("tenant-c")).await.is_empty(),
        "a third tenant sees nothing"
    );
}

pub async fn replayed_event_is_a_duplicate_at_the_same_position<S: ProjectionStore + ?Sized>(
    store: &S,
) {
    let tenant = unique("tenant");
    let stored = entry(&tenant, "c", 4);
    record(store, &stored).await;
    let again = store.append_history(&stored).await.expect("append_history");
    assert_eq!(
        again,
        Recorded::Duplicate {
            existing: stored.position
        }
    );
    assert_eq!(
        history_offsets(store, &tenant, "c").await,
        [4],
        "recorded once"
    );
}

pub async fn reproduced_event_is_a_duplicate_of_the_first_position<S: ProjectionStore + ?Sized>(
    store: &S,
) {
    let tenant = unique("tenant");
    let first = entry(&tenant, "c", 4);
    record(store, &first).await;
    let copy = history_entry(3, 9, first.event.clone());
    let again = store.append_history(&copy).await.expect("append_history");
    assert_eq!(
        again,
        Recorded::Duplicate {
            existing: first.position
        },
        "the copy points at the original"
    );
    assert_eq!(
        history_offsets(store, &tenant, "c").await,
        [4],
        "the copy is not recorded"
    );
}

pub async fn event_ids_are_deduplicated_per_tenant<S: ProjectionStore + ?Sized>(store: &S) {
    let (tenant_a, tenant_b) = (unique("tenant-a"), unique("tenant-b"));
    let a = entry(&tenant_a, "c", 1);
    let mut b = entry(&tenant_b, "c", 2);
    b.event.id = a.event.id.clone();
    record(store, &a).await;
    // Another tenant's event with the same id is not a copy of A's.
    record(store, &b).await;
    assert_eq!(history_offsets(store, &tenant_b, "c").await, [2]);
}

pub async fn first_client_message_claim_wins<S: ProjectionStore + ?Sized>(store: &S) {
    let tenant = unique("tenant");
    assert_eq!(
        store.get_client_message(&tenant, "m1").await.expect("get"),
        None
    );
    let first = client_message(&tenant, "m1", 1);
    assert_eq!(
        store.claim_client_message(&first).await.expect("claim"),
        first
    );
    let retry = client_message(&tenant, "m1", 2);
    assert_eq!(
        store
            .claim_client_message(&retry)
            .await
            .expect("claim again"),
        first,
        "the first claim wins"
    );
    assert_eq!(
        store.get_client_message(&tenant, "m1").await.expect("get"),
        Some(first)
    );
}

pub async fn client_messages_are_isolated_between_tenants<S: ProjectionStore + ?Sized>(store: &S) {
    let (tenant_a, tenant_b) = (unique("tenant-a"), unique("tenant-b"));
    let theirs = client_message(&tenant_a, "m1", 1);
    store.claim_client_message(&theirs).await.expect("claim");
    assert_eq!(
        store
            .get_client_message(&tenant_b, "m1")
            .await
            .expect("get"),
        None,
        "B cannot read A's"
    );
    let ours = client_message(&tenant_b, "m1", 2);
    assert_eq!(
        store.claim_client_message(&ours).await.expect("claim"),
        ours,
        "B's claim is B's own"
    );
    assert_eq!(
        store
            .get_client_message(&tenant_a, "m1")
            .await
            .expect("get"),
        Some(theirs)
    );
}

pub async fn processed_marks_are_per_scope_and_event<S: ProjectionStore + ?Sized>(store: &S) {
    let (scope, other_scope) = (unique("router"), unique("mcp"));
    let (event, other_event) = (unique("event"), unique("event"));
    assert!(
        !store
            .is_processed(&scope, &event)
            .await
            .expect("is_processed")
    );
    store.mark_processed(&scope, &event).await.expect("mark");
    store
        .mark_processed(&scope, &event)
        .await
        .expect("marking twice is fine");
    assert!(
        store
            .is_processed(&scope, &event)
            .await
            .expect("is_processed")
    );
    assert!(
        !store
            .is_processed(&other_scope, &event)
            .await
            .expect("is_processed"),
        "another scope"
    );
    assert!(
        !store
            .is_processed(&scope, &other_event)
            .await
            .expect("is_processed"),
        "another event"
    );
}
