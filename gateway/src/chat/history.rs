//! History: a conversation's committed events a page at a time, each page
//! small enough for any client to accept.
use chatstream_config::tenants::Principal;
use chatstream_core::store::HistoryEntry;

use super::ChatCore;
use crate::error::ChatError;

/// Largest page `history` returns, in events and in encoded bytes (a page
/// holds at least one event whatever its size).
pub const MAX_HISTORY_PAGE: usize = 1000;
pub const MAX_HISTORY_PAGE_BYTES: usize = 3 * 1024 * 1024;

impl ChatCore {
    /// A page of committed history: entries after `after_offset`, and the
    /// offset to ask from for the next page when there is one.
    pub async fn history(
        &self,
        who: &Principal,
        conversation_id: &str,
        after_offset: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<HistoryEntry>, Option<u64>), ChatError> {
        self.require_conversation(who, conversation_id).await?;
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        let mut entries = self
            .store
            .read_history(&who.tenant.id, conversation_id, after_offset, limit + 1)
            .await?;
        let fits = fitting_in_page(&entries, limit);
        let next = if entries.len() > fits {
            entries.truncate(fits);
            entries.last().map(|e| e.position.offset)
        } else {
            None
        };
        Ok((entries, next))
    }
}

/// How many of `entries` fit in one page of at most `limit` events and
/// `MAX_HISTORY_PAGE_BYTES`, so a page of large messages stays within what
/// a client accepts (gRPC clients default to 4 MiB per message).
fn fitting_in_page(entries: &[HistoryEntry], limit: usize) -> usize {
    let mut bytes = 0;
    for (index, entry) in entries.iter().take(limit).enumerate() {
        bytes += prost::Message::encoded_len(&entry.event);
        if bytes > MAX_HISTORY_PAGE_BYTES && index > 0 {
            return index;
        }
    }
    entries.len().min(limit)
}

#[cfg(test)]
mod tests {
    use crate::chat::testing::{Backends, principal};
    use crate::error::ChatError;

    fn offsets(entries: &[chatstream_core::store::HistoryEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.position.offset).collect()
    }

    #[tokio::test]
    async fn history_comes_in_pages_that_follow_on_without_a_gap() {
        let backends = Backends::new();
        let core = backends.core();
        let acme = principal("acme");
        let (conversation_id, _) = core.open_conversation(&acme, "").await.unwrap();
        for offset in 1..=5 {
            backends
                .project_answer("acme", &conversation_id, offset, "a")
                .await;
        }

        let (page, next) = core
            .history(&acme, &conversation_id, None, 2)
            .await
            .unwrap();
        assert_eq!((offsets(&page), next), (vec![1, 2], Some(2)));
        let (page, next) = core
            .history(&acme, &conversation_id, next, 2)
            .await
            .unwrap();
        assert_eq!((offsets(&page), next), (vec![3, 4], Some(4)));
        let (page, next) = core
            .history(&acme, &conversation_id, next, 2)
            .await
            .unwrap();
        assert_eq!((offsets(&page), next), (vec![5], None));
        // A page holds at least one event.
        let (page, next) = core
            .history(&acme, &conversation_id, None, 0)
            .await
            .unwrap();
        assert_eq!((offsets(&page), next), (vec![1], Some(1)));
    }

    #[tokio::test]
    async fn a_page_ends_early_at_the_byte_cap_but_holds_at_least_one_event() {
        let backends = Backends::new();
        let core = backends.core();
        let acme = principal("acme");
        let (conversation_id, _) = core.open_conversation(&acme, "").await.unwrap();
        let big = "x".repeat(super::MAX_HISTORY_PAGE_BYTES * 2 / 3);
        let huge = "x".repeat(super::MAX_HISTORY_PAGE_BYTES + 1);
        for (offset, text) in [(1, &big), (2, &big), (3, &huge)] {
            backends
                .project_answer("acme", &conversation_id, offset, text)
                .await;
        }

        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = core
                .history(&acme, &conversation_id, after, 100)
                .await
                .unwrap();
            pages.push(offsets(&page));
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, [vec![1], vec![2], vec![3]]);
    }

    #[tokio::test]
    async fn a_tenant_cannot_read_another_tenants_history() {
        let backends = Backends::new();
        let core = backends.core();
        let (theirs, _) = core
            .open_conversation(&principal("acme"), "")
            .await
            .unwrap();
        backends.project_answer("acme", &theirs, 1, "secret").await;

        let error = core
            .history(&principal("globex"), &theirs, None, 100)
            .await
            .unwrap_err();

        assert_eq!(error, ChatError::ConversationNotFound(theirs));
    }
}
