//! Monthly token budgets. What a tenant spent is derived from the
//! `ModelUsageRecorded` events in its conversation histories (the
//! projection store), so it survives restarts without a new table; after
//! that first read per tenant and month, the router's own charges keep the
//! running total, deduplicated by the user message they answer.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chatstream_core::store::{ProjectionStore, StoreError};
use chatstream_schemas::Event;
use chatstream_schemas::pb::events::event::Payload;

/// Pages read while deriving spend.
const PAGE: usize = 500;

/// `YYYY-MM` (UTC) of a moment: the budget period.
pub fn month_of(time: SystemTime) -> String {
    let stamp = prost_types::Timestamp::from(time).to_string();
    stamp.get(..7).unwrap_or_default().to_owned()
}

fn month_of_event(event: &Event) -> Option<String> {
    let stamp = event.occurred_at?.to_string();
    stamp.get(..7).map(str::to_owned)
}

#[derive(Debug, Default)]
struct MonthSpend {
    month: String,
    tokens: u64,
    /// User message ids already charged this month.
    charged: HashSet<String>,
}

pub struct BudgetLedger {
    store: Arc<dyn ProjectionStore>,
    tenants: Mutex<HashMap<String, MonthSpend>>,
}

impl BudgetLedger {
    pub fn new(store: Arc<dyn ProjectionStore>) -> Self {
        Self {
            store,
            tenants: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MonthSpend>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tokens the tenant spent in `month`.
    pub async fn spent(&self, tenant_id: &str, month: &str) -> Result<u64, StoreError> {
        if let Some(spend) = self.lock().get(tenant_id).filter(|s| s.month == month) {
            return Ok(spend.tokens);
        }
        let loaded = self.derive(tenant_id, month).await?;
        let mut tenants = self.lock();
        // Another turn may have loaded it meanwhile; keep the first.
        let spend = tenants
            .entry(tenant_id.to_owned())
            .and_modify(|current| {
                if current.month != month {
                    *current = MonthSpend {
                        month: loaded.month.clone(),
                        tokens: loaded.tokens,
                        charged: loaded.charged.clone(),
                    };
                }
            })
            .or_insert(loaded);
        Ok(spend.tokens)
    }

    /// Adds a turn's tokens, once per user message `cause_id`.
    pub fn charge(&self, tenant_id: &str, month: &str, cause_id: &str, tokens: u64) {
        let mut tenants = self.lock();
        let spend = tenants.entry(tenant_id.to_owned()).or_default();
        if spend.month != month {
            // The month turned: the new one starts empty, apart from this.
            *spend = MonthSpend {
                month: month.to_owned(),
                ..Default::default()
            };
        }
        if spend.charged.insert(cause_id.to_owned()) {
            spend.tokens += tokens;
        }
    }

    /// Sums the month's usage events over every conversation of the tenant.
    async fn derive(&self, tenant_id: &str, month: &str) -> Result<MonthSpend, StoreError> {
        let mut spend = MonthSpend {
            month: month.to_owned(),
            ..Default::default()
        };
        let mut after_conversation: Option<String> = None;
        loop {
            let conversations = self
                .store
                .list_conversations(tenant_id, after_conversation.as_deref(), PAGE)
                .await?;
            for conversation in &conversations {
                let mut after_offset = None;
                loop {
                    let entries = self
                        .store
                        .read_history(tenant_id, &conversation.conversation_id, after_offset, PAGE)
                        .await?;
                    for entry in &entries {
                        let event = &entry.event;
                        let Some(Payload::ModelUsageRecorded(recorded)) = &event.payload else {
                            continue;
                        };
                        if month_of_event(event).as_deref() == Some(month)
                            && spend.charged.insert(event.causation_id.clone())
                        {
                            let usage = recorded.usage.unwrap_or_default();
                            spend.tokens +=
                                u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens);
                        }
                    }
                    match entries.last() {
                        Some(last) if entries.len() == PAGE => {
                            after_offset = Some(last.position.offset)
                        }
                        _ => break,
                    }
                }
            }
            match conversations.last() {
                Some(last) if conversations.len() == PAGE => {
                    after_conversation = Some(last.conversation_id.clone())
                }
                _ => break,
            }
        }
        Ok(spend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_547_199); // 2025-11-30T23:59:59Z
        assert_eq!(month_of(time), "2025-11");
        assert_eq!(
            month_of(time + std::time::Duration::from_secs(1)),
            "2025-12"
        );
    }
}
