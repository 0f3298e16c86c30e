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
