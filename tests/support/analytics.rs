//! Reads the analytics API of a running platform as a tenant.
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Platform;

/// `GET /api/v2/analytics/{what}` (usage or latency) by model over the
/// day's buckets, with the tenant's key: the status and the JSON answer.
pub async fn analytics_json(platform: &Platform, tenant: &str, what: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v2/analytics/{what}?bucket=day&group_by=model",
            platform.http_addr
        ))
        .bearer_auth(platform.key(tenant))
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// The tenant's usage by model, once `projected` holds (the analytics
/// processor catches up shortly after the events are appended).
pub async fn projected_usage(
    platform: &Platform,
    tenant: &str,
    projected: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, usage) = analytics_json(platform, tenant, "usage").await;
        assert_eq!(status, 200, "{usage}");
        if projected(&usage) {
            return usage;
        }
        assert!(Instant::now() < deadline, "not projected: {usage}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A counter of a usage answer's totals for `group` (a model, or "" for
/// figures without one).
pub fn total(usage: &Value, group: &str, metric: &str) -> u64 {
    usage["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .filter(|totals| totals["group"] == group)
        .filter_map(|totals| totals["counters"][metric].as_u64())
        .sum()
}
