//! The conversation a model sees for one step of a turn: the messages the
//! conversation holds before the event being answered, then that event.
//! Tool calls appear as providers expect them: an assistant message with
//! the call, followed at once by the call's result.
//!
//! The router reads every event of a conversation in log order (the
//! runner handles a conversation's events one after another, while other
//! conversations run alongside), so it keeps the recent events of the
//! conversations it answers as they pass by; the projected history in the
//! store is read only for a conversation it has not seen since it started
//! (or since its partitions changed). Everything here is per conversation:
//! `complete_through` is the offset of the conversation's last event seen,
//! and events of other conversations in between are none of its business.
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use chatstream_core::log::LogPosition;
use chatstream_core::store::{ProjectionStore, StoreError};
use chatstream_schemas::Event;
use chatstream_schemas::pb::events::{ToolCallCompleted, ToolCallRequested, event::Payload};

use crate::model::{ChatMessage, Role, ToolCallChunk};
use crate::tools::OfferedTools;

/// Most messages a model is sent; older ones are left out.
pub const MAX_CONTEXT_MESSAGES: usize = 64;
/// History entries read per store query.
const HISTORY_PAGE: usize = 500;
/// Events kept per conversation: enough for the newest messages and the
/// tool results that pair with them; routing and usage events are not kept.
const KEPT_EVENTS: usize = 2 * MAX_CONTEXT_MESSAGES;
/// Conversations whose recent events the router keeps.
const CACHED_CONVERSATIONS: usize = 1024;

type ConversationKey = (String, String);

/// The recent events of the conversations the router answered lately,
/// kept up to date from the log as the router reads it.
#[derive(Default)]
pub struct HistoryCache {
    conversations: Mutex<HashMap<ConversationKey, CachedHistory>>,
}

struct CachedHistory {
    partition: u32,
    /// Every event of the conversation up to this offset is accounted for.
    complete_through: Option<u64>,
    events: VecDeque<Event>,
    /// For evicting the least recently used.
    used_at: Instant,
}

impl CachedHistory {
    fn push(&mut self, event: Event) {
        if self.events.len() == KEPT_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

fn key_of(event: &Event) -> ConversationKey {
    (event.tenant_id.clone(), event.conversation_id.clone())
}

impl HistoryCache {
    /// Records an event the router has handled (every event of a
    /// conversation passes here, in log order) for a conversation it keeps.
    pub fn observe(&self, event: &Event, position: LogPosition) {
        let mut conversations = self.lock();
        let Some(cached) = conversations.get_mut(&key_of(event)) else {
            return;
        };
        let seen = cached
            .complete_through
            .is_some_and(|c| position.offset <= c);
        if cached.partition != position.partition || seen {
            return; // a redelivery: already accounted for
        }
        cached.complete_through = Some(position.offset);
        if becomes_message(event) {
            cached.push(event.clone());
        }
    }

    /// Forgets everything: after the router's partitions change, another
    /// member may have handled events this one did not see.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationKey, CachedHistory>> {
        self.conversations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept events before `position`, when every one of them is known.
    fn events_before(&self, key: &ConversationKey, position: LogPosition) -> Option<Vec<Event>> {
        let mut conversations = self.lock();
        let cached = conversations.get_mut(key)?;
        // The router saw every event since the entry was made, in order, so
        // nothing between its end and `position` is missing.
        let complete = cached.partition == position.partition
            && cached.complete_through.is_none_or(|c| c < position.offset);
        if !complete {
            return None;
        }
        cached.used_at = Instant::now();
        Some(cached.events.iter().cloned().collect())
    }

    fn keep(&self, key: ConversationKey, history: CachedHistory) {
        let mut conversations = self.lock();
        if conversations.len() >= CACHED_CONVERSATIONS && !conversations.contains_key(&key) {
            let oldest = conversations
                .iter()
                .min_by_key(|(_, cached)| cached.used_at)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                conversations.remove(&oldest);
            }
        }
        conversations.insert(key, history);
    }
}

/// The conversation's events that come before `current` on the log, oldest
/// first, the newest `KEPT_EVENTS` that can become messages: from the
/// cache when it holds the conversation, else from the store's projected
/// history (where an event the projector has not written yet is missing;
/// an answer a client has seen committed is always there).
pub async fn history_before(
    store: &dyn ProjectionStore,
    cache: &HistoryCache,
    current: &Event,
    position: LogPosition,
) -> Result<Vec<Event>, StoreError> {
    let key = key_of(current);
    if let Some(events) = cache.events_before(&key, position) {
        metrics::counter!("chatstream_router_context_total", "source" => "cache").increment(1);
        return Ok(events);
    }
    metrics::counter!("chatstream_router_context_total", "source" => "store").increment(1);
    let read = read_history_before(store, current, position).await?;
    let events = read.events.iter().cloned().collect();
    cache.keep(key, read);
    Ok(events)
}

async fn read_history_before(
    store: &dyn ProjectionStore,
    current: &Event,
    position: LogPosition,
) -> Result<CachedHistory, StoreError> {
    let mut history = CachedHistory {
        partition: position.partition,
        // From here on the router sees the events itself.
        complete_through: position.offset.checked_sub(1),
        events: VecDeque::new(),
        used_at: Instant::now(),
    };
    let mut after = None;
    'pages: loop {
        let page = store
            .read_history(
                &current.tenant_id,
                &current.conversation_id,
                after,
                HISTORY_PAGE,
            )
            .await?;
        let full = page.len() == HISTORY_PAGE;
        for entry in page {
            // Entries from another partition predate a repartition.
            let later = entry.position.partition == position.partition
                && entry.position.offset >= position.offset;
            if later || entry.event.id == current.id {
                break 'pages;
            }
            after = Some(entry.position.offset);
            if becomes_message(&entry.event) {
                history.push(entry.event);
            }
        }
        if !full {
            break;
        }
    }
    Ok(history)
}

fn becomes_message(event: &Event) -> bool {
    matches!(
        event.payload,
        Some(
            Payload::UserMessageSent(_)
                | Payload::AssistantMessage(_)
                | Payload::ToolCallRequested(_)
                | Payload::ToolCallCompleted(_)
        )
    )
}

/// The model the client asked for in the turn `current` belongs to.
pub fn requested_model(history: &[Event], current: &Event) -> Option<String> {
    let turn = if current.correlation_id.is_empty() {
        &current.id
    } else {
        &current.correlation_id
    };
    std::iter::once(current)
        .chain(history.iter().rev())
        .find_map(|event| match &event.payload {
            Some(Payload::UserMessageSent(sent)) if event.id == *turn => Some(sent.model.clone()),
            _ => None,
        })
        .filter(|model| !model.is_empty())
}

/// The messages for a model answering `current` after `history`, at most
/// `MAX_CONTEXT_MESSAGES` (system messages always kept).
pub fn messages(history: &[Event], current: &Event, tools: &OfferedTools) -> Vec<ChatMessage> {
    let events: Vec<&Event> = history.iter().chain(std::iter::once(current)).collect();
    // Results by their request's event id (a model's call ids may repeat).
    let results: HashMap<&str, &ToolCallCompleted> = events
        .iter()
        .filter_map(|event| match &event.payload {
            Some(Payload::ToolCallCompleted(done)) => Some((event.causation_id.as_str(), &**done)),
            _ => None,
        })
        .collect();
    let mut shown_calls = HashSet::new();
    let mut messages = Vec::new();
    for event in &events {
        match &event.payload {
            Some(Payload::UserMessageSent(sent)) => {
                messages.extend(sent.context.iter().map(|m| match m.role.as_str() {
                    "system" => ChatMessage::system(&m.text),
                    "assistant" => ChatMessage::assistant(&m.text),
                    _ => ChatMessage::user(&m.text),
                }));
                messages.push(ChatMessage::user(&sent.text));
            }
            Some(Payload::AssistantMessage(reply)) if !reply.text.is_empty() => {
                messages.push(ChatMessage::assistant(&reply.text));
            }
            // A call without a result yet (or ever) is left out: providers
            // refuse a call that no result follows.
            Some(Payload::ToolCallRequested(request)) => {
                if let Some(done) = results.get(event.id.as_str())
                    && shown_calls.insert(event.id.as_str())
                {
                    messages.extend(tool_exchange(request, done, &event.id, tools));
                }
            }
            // The result of a call the history does not hold (not projected
            // yet): shown from the request it carries.
            Some(Payload::ToolCallCompleted(done))
                if shown_calls.insert(event.causation_id.as_str()) =>
            {
                let request = done.request.clone().unwrap_or_default();
                let turn_started = events.iter().any(|e| e.id == current.correlation_id);
                if std::ptr::eq(*event, current) && !turn_started {
                    messages.push(ChatMessage::user(&request.turn_prompt));
                }
                messages.extend(tool_exchange(&request, done, &event.causation_id, tools));
            }
            _ => {}
        }
    }
    newest(messages)
}

fn tool_exchange(
    request: &ToolCallRequested,
    done: &ToolCallCompleted,
    request_event_id: &str,
    tools: &OfferedTools,
) -> [ChatMessage; 2] {
    let call_id = if request.call_id.is_empty() {
        request_event_id
    } else {
        &request.call_id
    };
    let arguments_json = if request.arguments_json.trim().is_empty() {
        "{}".to_owned()
    } else {
        request.arguments_json.clone()
    };
    let content = if done.is_error {
        format!("{}: {}", done.error_kind, done.content_text)
    } else if done.truncated {
        format!("{}\n[cut at the size limit]", done.content_text)
    } else {
        done.content_text.clone()
    };
    [
        ChatMessage::tool_call(ToolCallChunk {
            call_id: call_id.to_owned(),
            name: tools.name_of(&request.server, &request.tool),
            arguments_json,
        }),
        ChatMessage::tool_result(call_id, &content, done.is_error),
    ]
}

/// The newest messages, starting at a user message (providers want one
/// first, and a tool result must follow its call), after every system one.
fn newest(messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    if messages.len() <= MAX_CONTEXT_MESSAGES {
        return messages;
    }
    let mut cut = messages.len() - MAX_CONTEXT_MESSAGES;
    while cut < messages.len() - 1 && messages[cut].role != Role::User {
        cut += 1;
    }
    let (older, newer) = messages.split_at(cut);
    older
        .iter()
        .filter(|m| m.role == Role::System)
        .chain(newer)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use chatstream_schemas::pb::events::{AssistantMessage, ContextMessage, UserMessageSent};

    use super::*;

    fn event(id: &str, correlation_id: &str, causation_id: &str, payload: Payload) -> Event {
        Event {
            id: id.into(),
            tenant_id: "acme".into(),
            conversation_id: "c".into(),
            correlation_id: correlation_id.into(),
            causation_id: causation_id.into(),
            payload: Some(payload),
            ..Default::default()
        }
    }

    fn user(id: &str, text: &str) -> Event {
        let sent = UserMessageSent {
            text: text.into(),
            ..Default::default()
        };
        event(id, "", "", Payload::UserMessageSent(Box::new(sent)))
    }

    fn assistant(id: &str, turn: &str, text: &str) -> Event {
        let reply = AssistantMessage {
            text: text.into(),
            ..Default::default()
        };
        event(id, turn, turn, Payload::AssistantMessage(reply))
    }

    fn request(id: &str, turn: &str, call_id: &str) -> (Event, ToolCallRequested) {
        let request = ToolCallRequested {
            call_id: call_id.into(),
            server: "time".into(),
            tool: "now".into(),
            arguments_json: r#"{"tz":"UTC"}"#.into(),
            turn_depth: 1,
            turn_prompt: "time?".into(),
        };
        let event = event(
            id,
            turn,
            turn,
            Payload::ToolCallRequested(Box::new(request.clone())),
        );
        (event, request)
    }

    fn result(id: &str, turn: &str, request: (&str, &ToolCallRequested), text: &str) -> Event {
        let done = ToolCallCompleted {
            call_id: request.1.call_id.clone(),
            request: Some(request.1.clone()),
            content_text: text.into(),
            ..Default::default()
        };
        event(
            id,
            turn,
            request.0,
            Payload::ToolCallCompleted(Box::new(done)),
        )
    }

    fn shape(messages: &[ChatMessage]) -> Vec<String> {
        messages
            .iter()
            .map(|m| match m.role {
                Role::Assistant if !m.tool_calls.is_empty() => {
                    format!("call {} {}", m.tool_calls[0].call_id, m.tool_calls[0].name)
                }
                Role::Tool => format!("result {} {}", m.tool_call_id, m.content),
                role => format!("{} {}", role.as_str(), m.content),
            })
            .collect()
    }

    fn at(offset: u64) -> LogPosition {
        LogPosition {
            partition: 0,
            offset,
        }
    }

    #[tokio::test]
    async fn the_cache_follows_the_log_and_reads_the_store_only_when_cold() {
        use chatstream_core::store::HistoryEntry;
        use chatstream_core::store::embedded::EmbeddedStore;
        let (dir, empty) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let nothing = EmbeddedStore::open(empty.path()).unwrap();
        let (u1, a1) = (user("u1", "hi"), assistant("a1", "u1", "hello"));
        for (offset, event) in [(1, &u1), (2, &a1)] {
            let entry = HistoryEntry {
                position: at(offset),
                event: event.clone(),
            };
            store.append_history(&entry).await.unwrap();
        }
        let cache = HistoryCache::default();
        let u2 = user("u2", "again");
        let cold = history_before(&store, &cache, &u2, at(3)).await.unwrap();
        assert_eq!(cold, [u1.clone(), a1.clone()], "read from the store");
        cache.observe(&u2, at(3));
        let a2 = assistant("a2", "u2", "hello again");
        cache.observe(&a2, at(5));
        cache.observe(&a2, at(5)); // redelivered: counted once
        // Another conversation's event does not enter this one.
        let elsewhere = Event {
            conversation_id: "other".into(),
            ..user("x", "elsewhere")
        };
        cache.observe(&elsewhere, at(6));

        // Warm: from what the router saw, with no store to read from.
        let u3 = user("u3", "third");
        let warm = history_before(&nothing, &cache, &u3, at(7)).await.unwrap();
        assert_eq!(warm, [u1, a1, u2, a2]);

        // After its partitions change, the router reads the store again.
        cache.clear();
        let cleared = history_before(&nothing, &cache, &u3, at(7)).await.unwrap();
        assert!(cleared.is_empty());
    }

    #[test]
    fn earlier_turns_come_before_the_message_being_answered() {
        let history = [user("u1", "hi"), assistant("a1", "u1", "hello")];
        let current = user("u2", "again");
        let shown = messages(&history, &current, &OfferedTools::default());
        assert_eq!(shape(&shown), ["user hi", "assistant hello", "user again"]);
    }

    #[test]
    fn a_tool_result_follows_its_call_and_unanswered_calls_are_left_out() {
        let (asked, call) = request("r1", "u1", "call-1");
        // An older turn whose call never got a result.
        let (lost, _) = request("r0", "u0", "call-0");
        let history = [
            user("u0", "first"),
            lost,
            user("u1", "time?"),
            asked,
            // A message sent while the tool ran: after the exchange.
            user("u2", "still there?"),
        ];
        let current = result("d1", "u1", ("r1", &call), "12:00");
        let shown = messages(&history, &current, &OfferedTools::default());
        assert_eq!(
            shape(&shown),
            [
                "user first",
                "user time?",
                "call call-1 time__now",
                "result call-1 12:00",
                "user still there?"
            ]
        );
    }

    #[test]
    fn a_result_whose_turn_is_not_projected_yet_brings_the_prompt() {
        let (_, call) = request("r1", "u1", "call-1");
        let current = result("d1", "u1", ("r1", &call), "12:00");
        let shown = messages(&[], &current, &OfferedTools::default());
        assert_eq!(
            shape(&shown),
            ["user time?", "call call-1 time__now", "result call-1 12:00"]
        );
    }

    #[test]
    fn client_context_comes_first_and_long_conversations_keep_the_newest() {
        let mut first = user("u0", "q0");
        if let Some(Payload::UserMessageSent(sent)) = &mut first.payload {
            sent.context = vec![
                ContextMessage {
                    role: "system".into(),
                    text: "be brief".into(),
                },
                ContextMessage {
                    role: "assistant".into(),
                    text: "earlier".into(),
                },
            ];
            sent.model = "fast".into();
        }
        let mut history = vec![first];
        for n in 1..100 {
            history.push(assistant(&format!("a{n}"), "", &format!("a{n}")));
            history.push(user(&format!("u{n}"), &format!("q{n}")));
        }
        let current = user("u100", "last");
        let shown = messages(&history, &current, &OfferedTools::default());
        assert!(shown.len() <= MAX_CONTEXT_MESSAGES + 1, "{}", shown.len());
        assert_eq!(shape(&shown[..1]), ["system be brief"]);
        assert_eq!(
            shown[1].role,
            Role::User,
            "the window starts at a user message"
        );
        assert_eq!(shape(&shown[shown.len() - 2..]), ["user q99", "user last"]);

        let turn = assistant("a", "u0", "x");
        assert_eq!(requested_model(&history, &turn).as_deref(), Some("fast"));
        assert_eq!(requested_model(&history, &current), None);
    }
}
