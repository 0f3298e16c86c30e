//! Conformance cases for `ConnectionCounter`.
use super::{successes, unique};
use chatstream_core::ratelimit::connections::ConnectionCounter;

async fn acquired<C: ConnectionCounter + ?Sized>(
    counter: &C,
    tenant: &str,
    max: u32,
    attempts: u32,
) -> u32 {
    successes(attempts, async || {
        counter.acquire(tenant, max).await.expect("acquire")
    })
    .await
}

pub async fn counts_up_to_the_maximum<C: ConnectionCounter + ?Sized>(counter: &C) {
    let tenant = unique("tenant");
    assert_eq!(acquired(counter, &tenant, 3, 5).await, 3);
    assert!(
        !counter.acquire(&tenant, 0).await.expect("acquire"),
        "a maximum of 0 admits nobody"
    );
}

pub async fn a_release_frees_a_slot<C: ConnectionCounter + ?Sized>(counter: &C) {
    let tenant = unique("tenant");
    assert_eq!(acquired(counter, &tenant, 2, 2).await, 2);
    counter.release(&tenant).await.expect("release");
    assert_eq!(
        acquired(counter, &tenant, 2, 3).await,
        1,
        "exactly the released slot is free again"
    );
}

pub async fn tenants_are_independent<C: ConnectionCounter + ?Sized>(counter: &C) {
    let tenant = unique("tenant");
    let extended = format!("{tenant}0");
    let prefix = tenant[..tenant.len() - 1].to_owned();
    assert_eq!(acquired(counter, &tenant, 2, 3).await, 2);
    for neighbour in [&extended, &prefix] {
        assert_eq!(
            acquired(counter, neighbour, 2, 3).await,
            2,
            "tenant {neighbour} has its own maximum"
        );
    }
}

pub async fn concurrent_acquires_never_exceed_the_maximum<C: ConnectionCounter + ?Sized>(
    counter: &C,
) {
    let tenant = unique("tenant");
    let outcomes = futures::future::join_all((0..30).map(|_| counter.acquire(&tenant, 7))).await;
    let acquired = outcomes
        .into_iter()
        .map(|outcome| outcome.expect("acquire"))
        .filter(|counted| *counted)
        .count();
    assert_eq!(acquired, 7, "30 concurrent connections, maximum 7");
}

pub async fn releasing_more_than_acquired_does_nothing<C: ConnectionCounter + ?Sized>(counter: &C) {
    let tenant = unique("tenant");
    counter
        .release(&tenant)
        .await
        .expect("releasing an unknown tenant");
    assert_eq!(acquired(counter, &tenant, 2, 1).await, 1);
    for _ in 0..3 {
        counter.release(&tenant).await.expect("release");
    }
    assert_eq!(
        acquired(counter, &tenant, 2, 3).await,
        2,
        "extra releases do not make room beyond the maximum"
    );
}
