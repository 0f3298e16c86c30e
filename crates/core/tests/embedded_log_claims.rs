//! The embedded log claims a send's client message id in the commit that
//! appends the send (`ClaimingLog`): one append per id, whatever the
//! races, the tenants or the restarts.
use std::collections::HashSet;

use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_core::log::{ClaimedAppend, ClaimingLog, EventLog, SendClaim};
use chatstream_schemas::Event;
use chatstream_schemas::pb::events::{ConversationOpened, event::Payload};
use chatstream_test_support::conformance::{event_in, unique, user_message};
use futures::future::join_all;
use tempfile::TempDir;

const PARTITIONS: u32 = 4;

fn open_log() -> (EmbeddedLog, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EmbeddedLog::open(dir.path(), PARTITIONS).expect("open log");
    (log, dir)
}

fn claim(tenant_id: &str, client_message_id: &str) -> SendClaim {
    SendClaim {
        tenant_id: tenant_id.to_owned(),
        client_message_id: client_message_id.to_owned(),
    }
}

fn claiming(log: &EmbeddedLog) -> &dyn ClaimingLog {
    log.claiming()
        .expect("the embedded log claims client message ids")
}

async fn end_of(log: &EmbeddedLog, tenant_id: &str) -> u64 {
    log.end_offset(log.partition_for(tenant_id))
        .await
        .expect("end offset")
}

#[tokio::test]
async fn a_claimed_send_is_appended_once_and_a_copy_gets_the_first_ones_record() {
    let (log, _dir) = open_log();
    let tenant = unique("acme");
    let first = user_message(&tenant, "c-1", "hi");

    let appended = claiming(&log)
        .append_claiming(
            &tenant,
            &claim(&tenant, "m-1"),
            std::slice::from_ref(&first),
        )
        .await
        .expect("append");
    let ClaimedAppend::Appended(positions) = appended else {
        panic!("the first send appends: {appended:?}");
    };
    let end = end_of(&log, &tenant).await;

    let copy = user_message(&tenant, "c-2", "hi again");
    let again = claiming(&log)
        .append_claiming(&tenant, &claim(&tenant, "m-1"), &[copy])
        .await
        .expect("append");

    let ClaimedAppend::Earlier(earlier) = again else {
        panic!("a copy appends nothing: {again:?}");
    };
    assert_eq!(earlier.tenant_id, tenant);
    assert_eq!(earlier.client_message_id, "m-1");
    assert_eq!(earlier.conversation_id, "c-1");
    assert_eq!(earlier.event_id, first.id);
    assert_eq!(earlier.position, positions[0]);
    assert_eq!(end_of(&log, &tenant).await, end, "nothing more on the log");
    assert_eq!(
        claiming(&log).claimed(&tenant, "m-1").await.expect("read"),
        Some(earlier)
    );
    assert_eq!(
        claiming(&log).claimed(&tenant, "m-2").await.expect("read"),
        None
    );
}

#[tokio::test]
async fn a_claim_names_the_last_event_of_an_append_that_opens_its_conversation() {
    let (log, _dir) = open_log();
    let tenant = unique("acme");
    let opened = event_in(
        &tenant,
        "c-new",
        Payload::ConversationOpened(ConversationOpened::default()),
    );
    let sent = user_message(&tenant, "c-new", "hi");

    let appended = claiming(&log)
        .append_claiming(
            &tenant,
            &claim(&tenant, "m-1"),
            &[opened.clone(), sent.clone()],
        )
        .await
        .expect("append");

    let ClaimedAppend::Appended(positions) = appended else {
        panic!("appended: {appended:?}");
    };
    assert_eq!(positions.len(), 2);
    assert_eq!(
        positions[1].offset,
        positions[0].offset + 1,
        "one commit, in order"
    );
    let record = claiming(&log)
        .claimed(&tenant, "m-1")
        .await
        .expect("read")
        .expect("claimed");
    assert_eq!(
        (record.event_id, record.position),
        (sent.id.clone(), positions[1])
    );
    let read = log
        .read(positions[0].partition, positions[0].offset, 2)
        .await
        .expect("read");
    let ids: Vec<Event> = read
        .iter()
        .map(|record| chatstream_schemas::codec::decode(&record.value).expect("decode"))
        .collect();
    assert_eq!(ids, [opened, sent]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_copies_of_a_send_append_exactly_once() {
    let (log, _dir) = open_log();
    let tenant = unique("acme");
    let copies: Vec<Event> = (0..32)
        .map(|n| user_message(&tenant, &format!("c-{n}"), "hi"))
        .collect();
    let before = end_of(&log, &tenant).await;

    let outcomes = join_all(copies.iter().map(|copy| {
        let claim = claim(&tenant, "m-1");
        let log = &log;
        async move {
            claiming(log)
                .append_claiming(&claim.tenant_id, &claim, std::slice::from_ref(copy))
                .await
                .expect("append")
        }
    }))
    .await;

    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, outcome)| matches!(outcome, ClaimedAppend::Appended(_)))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = &copies[winners[0]];
    let named: HashSet<&str> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            ClaimedAppend::Earlier(earlier) => Some(earlier.event_id.as_str()),
            ClaimedAppend::Appended(_) => None,
        })
        .collect();
    assert_eq!(named, HashSet::from([winner.id.as_str()]));
    assert_eq!(end_of(&log, &tenant).await, before + 1);
}

#[tokio::test]
async fn client_message_ids_are_claimed_per_tenant() {
    let (log, _dir) = open_log();
    let (acme, globex) = (unique("acme"), unique("globex"));

    for tenant in [&acme, &globex] {
        let appended = claiming(&log)
            .append_claiming(
                tenant,
                &claim(tenant, "m-1"),
                &[user_message(tenant, "c", "hi")],
            )
            .await
            .expect("append");
        assert!(
            matches!(appended, ClaimedAppend::Appended(_)),
            "{tenant}'s m-1 is its own: {appended:?}"
        );
    }
    let acme_claim = claiming(&log).claimed(&acme, "m-1").await.expect("read");
    let globex_claim = claiming(&log).claimed(&globex, "m-1").await.expect("read");
    assert_eq!(acme_claim.expect("claimed").tenant_id, acme);
    assert_eq!(globex_claim.expect("claimed").tenant_id, globex);
}

#[tokio::test]
async fn a_claim_survives_a_reopen() {
    let (log, dir) = open_log();
    let tenant = unique("acme");
    let sent = user_message(&tenant, "c-1", "hi");
    claiming(&log)
        .append_claiming(&tenant, &claim(&tenant, "m-1"), std::slice::from_ref(&sent))
        .await
        .expect("append");
    drop(log);

    let log = EmbeddedLog::open(dir.path(), PARTITIONS).expect("reopen");
    let again = claiming(&log)
        .append_claiming(
            &tenant,
            &claim(&tenant, "m-1"),
            &[user_message(&tenant, "c-1", "hi")],
        )
        .await
        .expect("append");

    match again {
        ClaimedAppend::Earlier(earlier) => assert_eq!(earlier.event_id, sent.id),
        other => panic!("the claim was lost in the reopen: {other:?}"),
    }
}

#[tokio::test]
async fn a_claimed_append_of_nothing_is_refused() {
    let (log, _dir) = open_log();
    let tenant = unique("acme");

    let refused = claiming(&log)
        .append_claiming(&tenant, &claim(&tenant, "m-1"), &[])
        .await;

    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        claiming(&log).claimed(&tenant, "m-1").await.expect("read"),
        None
    );
}
