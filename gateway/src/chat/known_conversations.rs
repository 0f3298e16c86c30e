//! The conversations this gateway knows to exist, with their tenant. A
//! conversation's tenant never changes and a conversation is never
//! deleted, so a remembered answer never goes stale: a send, subscribe or
//! history read of a conversation seen lately reads nothing from the store.
//! Only "it exists" is remembered; "not found" is asked again, since
//! another gateway may have opened it since.
use quick_cache::sync::Cache;

/// Conversations remembered; the least useful are forgotten beyond it.
const CAPACITY: usize = 100_000;

pub(super) struct KnownConversations {
    /// (tenant, conversation) of conversations known to exist.
    known: Cache<(String, String), ()>,
}

impl Default for KnownConversations {
    fn default() -> Self {
        Self {
            known: Cache::new(CAPACITY),
        }
    }
}

impl KnownConversations {
    pub(super) fn contains(&self, tenant_id: &str, conversation_id: &str) -> bool {
        self.known
            .get(&(tenant_id.to_owned(), conversation_id.to_owned()))
            .is_some()
    }

    /// Remembers that `tenant_id` owns `conversation_id`: call only once
    /// the conversation is durable on the log or found in the store.
    pub(super) fn remember(&self, tenant_id: &str, conversation_id: &str) {
        self.known
            .insert((tenant_id.to_owned(), conversation_id.to_owned()), ());
    }
}

#[cfg(test)]
mod tests {
    use super::KnownConversations;

    #[test]
    fn a_conversation_is_known_for_its_own_tenant_only() {
        let known = KnownConversations::default();
        known.remember("acme", "c-1");

        assert!(known.contains("acme", "c-1"));
        assert!(!known.contains("globex", "c-1"));
        assert!(!known.contains("acme", "c-2"));
    }
}
