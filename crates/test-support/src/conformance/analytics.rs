//! Conformance cases for `AnalyticsStore`: buckets per granularity, exactly
//! once per event id, no lost updates under concurrency, the same bytes
//! whatever the order, and no tenant reading another's figures.
use chatstream_core::analytics::{
    AnalyticsStore, Applied, Bucket, Granularity, MAX_BUCKETS_PER_READ, Observation, Series,
};

use super::unique;

/// 2026-12-01T23:59:30Z: thirty seconds before midnight UTC.
const BEFORE_MIDNIGHT: i64 = 1_796_169_570_000;
const MIDNIGHT: i64 = BEFORE_MIDNIGHT + 30_000;
const DAY: i64 = 86_400_000;

/// Twelve hours either side of `MIDNIGHT`, widened to whole buckets: both
/// days, and no more minutes than one read may span.
fn around_midnight(granularity: Granularity) -> (i64, i64) {
    (
        granularity.bucket_start(MIDNIGHT - DAY / 2),
        MIDNIGHT + DAY / 2,
    )
}

async fn around<S: AnalyticsStore + ?Sized>(
    store: &S,
    tenant: &str,
    granularity: Granularity,
) -> Vec<Bucket> {
    let (from, to) = around_midnight(granularity);
    buckets(store, tenant, granularity, from, to).await
}

fn tokens(at_ms: i64, model: &str, value: u64) -> Observation {
    let mut observation = Observation::at(at_ms);
    observation.count(
        Series::new("tokens_in", [("provider", "p"), ("model", model)]),
        value,
    );
    observation.latency(
        Series::new("answer_duration_ms", [("model", model)]),
        value * 10,
    );
    observation
}

async fn buckets<S: AnalyticsStore + ?Sized>(
    store: &S,
    tenant: &str,
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
) -> Vec<Bucket> {
    store
        .read_buckets(tenant, granularity, from_ms, to_ms)
        .await
        .expect("read_buckets")
}

fn total(buckets: &[Bucket], metric: &str) -> u64 {
    buckets
        .iter()
        .flat_map(|bucket| bucket.state.counters())
        .filter(|(series, _)| series.metric == metric)
        .map(|(_, value)| value)
        .sum()
}

async fn apply<S: AnalyticsStore + ?Sized>(
    store: &S,
    tenant: &str,
    event_id: &str,
    observation: &Observation,
) -> Applied {
    store
        .apply(tenant, event_id, observation)
        .await
        .expect("apply")
}

pub async fn ping_answers<S: AnalyticsStore + ?Sized>(store: &S) {
    store.ping().await.expect("ping");
}

pub async fn an_observation_lands_in_its_minute_hour_and_day_buckets<S: AnalyticsStore + ?Sized>(
    store: &S,
) {
    let tenant = unique("tenant");
    let observation = tokens(BEFORE_MIDNIGHT, "m", 7);
    assert_eq!(
        apply(store, &tenant, "e1", &observation).await,
        Applied::Added
    );
    for granularity in Granularity::ALL {
        let start = granularity.bucket_start(BEFORE_MIDNIGHT);
        let found = around(store, &tenant, granularity).await;
        assert_eq!(found.len(), 1, "{granularity}: one bucket: {found:?}");
        assert_eq!(found[0].granularity, granularity);
        assert_eq!(found[0].start_ms, start, "{granularity} bucket start");
        assert_eq!(total(&found, "tokens_in"), 7, "{granularity}");
        let histogram =
            &found[0].state.latencies()[&Series::new("answer_duration_ms", [("model", "m")])];
        assert_eq!((histogram.len(), histogram.max()), (1, 70), "{granularity}");
    }
}

pub async fn applying_an_event_twice_changes_nothing<S: AnalyticsStore + ?Sized>(store: &S) {
    let tenant = unique("tenant");
    let observation = tokens(BEFORE_MIDNIGHT, "m", 3);
    assert_eq!(
        apply(store, &tenant, "e1", &observation).await,
        Applied::Added
    );
    let read = || around(store, &tenant, Granularity::Hour);
    let once: Vec<Vec<u8>> = read().await.iter().map(|b| b.state.encode()).collect();
    assert_eq!(
        apply(store, &tenant, "e1", &observation).await,
        Applied::AlreadyApplied
    );
    // Even a different observation under the same event id is not added.
    assert_eq!(
        apply(store, &tenant, "e1", &tokens(MIDNIGHT, "m", 100)).await,
        Applied::AlreadyApplied
    );
    let twice: Vec<Vec<u8>> = read().await.iter().map(|b| b.state.encode()).collect();
    assert_eq!(once, twice, "the stored bytes did not change");
    assert_eq!(total(&read().await, "tokens_in"), 3);
}

pub async fn event_ids_are_marked_per_tenant<S: AnalyticsStore + ?Sized>(store: &S) {
    let (a, b) = (unique("tenant"), unique("tenant"));
    let observation = tokens(BEFORE_MIDNIGHT, "m", 2);
    assert_eq!(
        apply(store, &a, "same-id", &observation).await,
        Applied::Added
    );
    assert_eq!(
        apply(store, &b, "same-id", &observation).await,
        Applied::Added,
        "another tenant's event with the same id still counts"
    );
}

pub async fn concurrent_applies_to_one_bucket_lose_nothing<S: AnalyticsStore + ?Sized>(store: &S) {
    let tenant = unique("tenant");
    const EVENTS: u64 = 40;
    let applies = (0..EVENTS).map(|n| {
        let tenant = tenant.clone();
        async move {
            let observation = tokens(BEFORE_MIDNIGHT - (n as i64) * 100, "m", n + 1);
            apply(store, &tenant, &format!("e{n}"), &observation).await
        }
    });
    let outcomes = futures::future::join_all(applies).await;
    assert!(outcomes.iter().all(|outcome| *outcome == Applied::Added));
    let found = buckets(
        store,
        &tenant,
        Granularity::Minute,
        BEFORE_MIDNIGHT - DAY,
        MIDNIGHT,
    )
    .await;
    assert_eq!(found.len(), 1, "one minute bucket: {found:?}");
    assert_eq!(total(&found, "tokens_in"), EVENTS * (EVENTS + 1) / 2);
    let histogram =
        &found[0].state.latencies()[&Series::new("answer_duration_ms", [("model", "m")])];
    assert_eq!(histogram.len(), EVENTS, "every latency recorded");
}

pub async fn the_same_events_in_another_order_store_the_same_bytes<S: AnalyticsStore + ?Sized>(
    store: &S,
) {
    let (forward, backward) = (unique("tenant"), unique("tenant"));
    let events: Vec<(String, Observation)> = (0..12)
        .map(|n| {
            let model = if n % 3 == 0 { "a" } else { "b" };
            (
                format!("e{n}"),
                tokens(BEFORE_MIDNIGHT + n * 7_000, model, n as u64 + 1),
            )
        })
        .collect();
    for (id, observation) in &events {
        apply(store, &forward, id, observation).await;
    }
    for (id, observation) in events.iter().rev() {
        apply(store, &backward, id, observation).await;
    }
    for granularity in Granularity::ALL {
        let read = |tenant| around(store, tenant, granularity);
        let encoded = |found: Vec<Bucket>| -> Vec<(i64, Vec<u8>)> {
            found
                .into_iter()
                .map(|bucket| (bucket.start_ms, bucket.state.encode()))
                .collect()
        };
        let (one, other) = (
            encoded(read(&forward).await),
            encoded(read(&backward).await),
        );
        assert!(!one.is_empty());
        assert_eq!(one, other, "{granularity} buckets differ");
    }
}

pub async fn buckets_are_read_in_range_oldest_first<S: AnalyticsStore + ?Sized>(store: &S) {
    let tenant = unique("tenant");
    // Either side of midnight, and a minute later.
    for (n, at) in [BEFORE_MIDNIGHT, MIDNIGHT, MIDNIGHT + 60_000]
        .into_iter()
        .enumerate()
    {
        apply(store, &tenant, &format!("e{n}"), &tokens(at, "m", 1)).await;
    }
    let minute_starts =
        |found: Vec<Bucket>| -> Vec<i64> { found.iter().map(|b| b.start_ms).collect() };
    let minute_before = Granularity::Minute.bucket_start(BEFORE_MIDNIGHT);
    assert_eq!(
        minute_starts(around(store, &tenant, Granularity::Minute).await),
        [minute_before, MIDNIGHT, MIDNIGHT + 60_000]
    );
    assert_eq!(
        minute_starts(
            buckets(
                store,
                &tenant,
                Granularity::Minute,
                MIDNIGHT,
                MIDNIGHT + 60_000
            )
            .await
        ),
        [MIDNIGHT],
        "from is inclusive, to exclusive"
    );
    assert_eq!(
        minute_starts(
            buckets(
                store,
                &tenant,
                Granularity::Minute,
                minute_before + 1,
                MIDNIGHT + 1
            )
            .await
        ),
        [MIDNIGHT],
        "a bucket starting before `from` is left out"
    );
    let days = buckets(
        store,
        &tenant,
        Granularity::Day,
        MIDNIGHT - DAY,
        MIDNIGHT + DAY,
    )
    .await;
    assert_eq!(
        days.iter()
            .map(|b| (b.start_ms, total(std::slice::from_ref(b), "tokens_in")))
            .collect::<Vec<_>>(),
        [(MIDNIGHT - DAY, 1), (MIDNIGHT, 2)],
        "the day buckets split at midnight UTC"
    );
    assert!(
        buckets(store, &tenant, Granularity::Minute, MIDNIGHT, MIDNIGHT)
            .await
            .is_empty()
    );
}

pub async fn tenants_never_read_each_others_figures<S: AnalyticsStore + ?Sized>(store: &S) {
    // Ids that prefix each other must not leak either.
    let a = unique("tenant");
    let b = format!("{a}b");
    apply(
        store,
        &a,
        "e1",
        &tokens(BEFORE_MIDNIGHT, "secret-model", 11),
    )
    .await;
    store.note(&a, "sent/u1", 42).await.expect("note");
    for granularity in Granularity::ALL {
        assert!(
            around(store, &b, granularity).await.is_empty(),
            "{b} reads {a}'s {granularity} buckets"
        );
    }
    assert_eq!(store.noted(&b, "sent/u1").await.expect("noted"), None);
    apply(store, &b, "e2", &tokens(BEFORE_MIDNIGHT, "other", 5)).await;
    let of_a = buckets(store, &a, Granularity::Day, MIDNIGHT - DAY, MIDNIGHT + DAY).await;
    assert_eq!(total(&of_a, "tokens_in"), 11, "{a} still sees only its own");
    let of_b = buckets(store, &b, Granularity::Day, MIDNIGHT - DAY, MIDNIGHT + DAY).await;
    assert_eq!(total(&of_b, "tokens_in"), 5);
    assert!(
        of_b.iter()
            .flat_map(|bucket| bucket.state.counters().keys())
            .all(|series| series.label("model") != Some("secret-model")),
        "{b} sees none of {a}'s models"
    );
}

pub async fn notes_round_trip<S: AnalyticsStore + ?Sized>(store: &S) {
    let tenant = unique("tenant");
    assert_eq!(store.noted(&tenant, "sent/u1").await.expect("noted"), None);
    store.note(&tenant, "sent/u1", -5).await.expect("note");
    store
        .note(&tenant, "sent/u1", -5)
        .await
        .expect("note again");
    store.note(&tenant, "usage/u1", 1).await.expect("note");
    assert_eq!(
        store.noted(&tenant, "sent/u1").await.expect("noted"),
        Some(-5)
    );
    assert_eq!(
        store.noted(&tenant, "usage/u1").await.expect("noted"),
        Some(1)
    );
}

pub async fn a_read_wider_than_the_limit_is_refused<S: AnalyticsStore + ?Sized>(store: &S) {
    let tenant = unique("tenant");
    let widest = MAX_BUCKETS_PER_READ * 60_000;
    assert!(
        store
            .read_buckets(&tenant, Granularity::Minute, 0, widest)
            .await
            .is_ok(),
        "{MAX_BUCKETS_PER_READ} buckets are allowed"
    );
    let refused = store
        .read_buckets(&tenant, Granularity::Minute, 0, widest + 60_000)
        .await;
    assert!(
        matches!(&refused, Err(chatstream_core::store::StoreError::Storage(message)) if message.contains("coarser")),
        "one bucket more is refused with a hint: {refused:?}"
    );
}
