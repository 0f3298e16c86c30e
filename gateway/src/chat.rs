//! What the gateway does, whatever the protocol: open conversations, append
//! user messages (idempotently, acked once durable), read history, and
//! deliver a conversation from a position with no gap and no duplicate.
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatstream_config::tenants::Principal;
use chatstream_core::fanout::{FanOut, FanOutError, FanOutMessage, FanOutStream};
use chatstream_core::log::{EventLog, LogPosition};
use chatstream_core::ratelimit::{RateDecision, RateLimit, RateLimiter};
use chatstream_core::sends::{Reservation, SendReservations};
use chatstream_core::store::{
    ClientMessageRecord, ConversationRecord, HistoryEntry, ProjectionStore,
};
use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::ids::new_event_id;
use chatstream_schemas::pb::events::{ConversationOpened, UserMessageSent, event::Payload};
use futures::StreamExt;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::command::{ChatReply, MessageAck, SendMessage};
use crate::error::ChatError;

/// Longest accepted client message id, conversation id, title or request id.
pub const MAX_ID_BYTES: usize = 256;
/// History entries read per store round trip while replaying.
const REPLAY_PAGE: usize = 500;
/// Largest page `history` returns, in events and in encoded bytes (a page
/// holds at least one event whatever its size).
pub const MAX_HISTORY_PAGE: usize = 1000;
pub const MAX_HISTORY_PAGE_BYTES: usize = 3 * 1024 * 1024;

/// Platform-wide limits; a tenant's own limits override them.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatLimits {
    pub max_message_bytes: usize,
    /// Sends and opens per second per tenant; unlimited when `None`.
    pub requests_per_second: Option<f64>,
    pub burst: Option<u32>,
}

/// A user message on the log, before its client message id is claimed.
struct Appended {
    ack: MessageAck,
    position: LogPosition,
}

/// How long a send waits for another gateway's send with the same client
/// message id to finish before it gives up (retryably).
const RESERVATION_WAIT: Duration = Duration::from_secs(5);

/// Where `send_message_watched` delivers the conversation a send opens,
/// as `subscribe` would, until `stop` is cancelled or `out` closes.
pub struct Watcher {
    pub out: mpsc::Sender<ChatReply>,
    pub stop: CancellationToken,
}

pub struct ChatCore {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    fanout: Arc<dyn FanOut>,
    rate_limiter: Arc<dyn RateLimiter>,
    limits: ChatLimits,
    /// Striped locks so concurrent sends with one client message id
    /// (a retry racing its original) are appended once.
    send_locks: Vec<Mutex<()>>,
    /// Client message ids reserved across gateways; `None` in one process,
    /// where `send_locks` suffice.
    reservations: Option<Arc<dyn SendReservations>>,
}

impl ChatCore {
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        fanout: Arc<dyn FanOut>,
        rate_limiter: Arc<dyn RateLimiter>,
        limits: ChatLimits,
    ) -> Self {
        Self {
            log,
            store,
            fanout,
            rate_limiter,
            limits,
            send_locks: (0..64).map(|_| Mutex::new(())).collect(),
            reservations: None,
        }
    }

    /// Shares client message ids with other gateways, so a retry that
    /// reaches another gateway mid-send gets the same answer.
    pub fn with_send_reservations(mut self, reservations: Arc<dyn SendReservations>) -> Self {
        self.reservations = Some(reservations);
        self
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    pub fn store(&self) -> &Arc<dyn ProjectionStore> {
        &self.store
    }

    pub fn fanout(&self) -> &Arc<dyn FanOut> {
        &self.fanout
    }

    /// Opens a conversation: appended to the log, then recorded in the store
    /// before the reply, so a send right after the reply finds it (the
    /// projector would record it too, but maybe not that soon).
    pub async fn open_conversation(
        &self,
        who: &Principal,
        title: &str,
    ) -> Result<(String, u64), ChatError> {
        check_len("title", title)?;
        self.check_rate(who).await?;
        self.append_conversation_opened(who, title).await
    }

    /// The work of `open_conversation`, without counting a request.
    async fn append_conversation_opened(
        &self,
        who: &Principal,
        title: &str,
    ) -> Result<(String, u64), ChatError> {
        let conversation_id = new_event_id();
        let event = client_event(
            who,
            &conversation_id,
            Payload::ConversationOpened(ConversationOpened {
                title: title.to_owned(),
                opened_by_key_id: who.key_id.clone(),
            }),
        );
        let position = self.log.append(&who.tenant.id, &event).await?;
        let record = ConversationRecord {
            tenant_id: who.tenant.id.clone(),
            conversation_id: conversation_id.clone(),
            title: title.to_owned(),
            created_at_ms: now_ms(),
            opened_by_key_id: who.key_id.clone(),
        };
        if let Err(error) = self.store.put_conversation(&record).await {
            // Durable on the log already; the projector records it shortly.
            tracing::warn!(%error, %conversation_id, "could not record the conversation; the projector will");
        }
        Ok((conversation_id, position.offset))
    }

    /// Appends a user message and returns its ack once it is durable. A
    /// retry with the same client message id gets the original ack back.
    pub async fn send_message(
        &self,
        who: &Principal,
        message: SendMessage,
    ) -> Result<MessageAck, ChatError> {
        self.send_message_watched(who, message, None).await
    }

    /// `send_message` for a caller that waits for the reply: when the send
    /// opens a new conversation, `watcher` is subscribed to it before the
    /// message is appended, so it misses no delta. A retried send (a
    /// duplicate ack) opens nothing and leaves `watcher` unused.
    pub async fn send_message_watched(
        &self,
        who: &Principal,
        message: SendMessage,
        watcher: Option<Watcher>,
    ) -> Result<MessageAck, ChatError> {
        let limit = who
            .tenant
            .limits
            .max_message_bytes
            .unwrap_or(self.limits.max_message_bytes);
        let context_bytes: usize = message.context.iter().map(|m| m.text.len()).sum();
        let size = message.text.len() + context_bytes;
        if size > limit {
            return Err(ChatError::MessageTooLarge { size, limit });
        }
        if message.text.trim().is_empty() {
            return Err(ChatError::InvalidRequest("text must not be empty".into()));
        }
        if let Some(id) = &message.client_message_id {
            check_len("client_message_id", id)?;
        }
        if let Some(id) = &message.conversation_id {
            self.require_conversation(who, id).await?;
        }
        self.check_rate(who).await?;

        let _guard = match &message.client_message_id {
            Some(id) => Some(self.send_lock(&who.tenant.id, id).lock().await),
            None => None,
        };
        if let Some(client_message_id) = &message.client_message_id
            && let Some(earlier) = self
                .store
                .get_client_message(&who.tenant.id, client_message_id)
                .await?
        {
            return ack_for_retry(message, earlier);
        }
        let reserved = match &message.client_message_id {
            Some(id) => match self.reserve(who, id).await? {
                Some(earlier) => return ack_for_retry(message, earlier),
                None => self.reservations.is_some(),
            },
            None => false,
        };
        let sent = self.append_message(who, &message, watcher).await;
        let Some(client_message_id) = message.client_message_id.clone() else {
            return sent.map(|appended| appended.ack);
        };
        let acked = match sent {
            Ok(appended) => self.claim(who, &client_message_id, message, appended).await,
            Err(error) => Err(error),
        };
        if reserved && let Some(reservations) = &self.reservations {
            let settled = match &acked {
                Ok(ack) => {
                    let record = ClientMessageRecord {
                        tenant_id: who.tenant.id.clone(),
                        client_message_id: client_message_id.clone(),
                        conversation_id: ack.conversation_id.clone(),
                        event_id: ack.event_id.clone(),
                        position: LogPosition {
                            partition: self.log.partition_for(&who.tenant.id),
                            offset: ack.position,
                        },
                    };
                    reservations.complete(&record).await
                }
                Err(_) => {
                    reservations
                        .release(&who.tenant.id, &client_message_id)
                        .await
                }
            };
            if let Err(error) = settled {
                tracing::warn!(%error, "could not settle a send reservation; it expires by itself");
            }
        }
        acked
    }

    /// Reserves a client message id across gateways. `Some` is the outcome
    /// of an earlier send with it (waiting while one is in progress).
    async fn reserve(
        &self,
        who: &Principal,
        client_message_id: &str,
    ) -> Result<Option<ClientMessageRecord>, ChatError> {
        let Some(reservations) = &self.reservations else {
            return Ok(None);
        };
        let deadline = Instant::now() + RESERVATION_WAIT;
        let mut found = reservations
            .reserve(&who.tenant.id, client_message_id)
            .await;
        loop {
            match found {
                Ok(Reservation::Reserved) => return Ok(None),
                Ok(Reservation::Completed(earlier)) => return Ok(Some(earlier)),
                Ok(Reservation::InProgress) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    found = match reservations.lookup(&who.tenant.id, client_message_id).await {
                        // Released by a failed send (or expired): take it.
                        Ok(Reservation::Reserved) => {
                            reservations
                                .reserve(&who.tenant.id, client_message_id)
                                .await
                        }
                        other => other,
                    };
                }
                Ok(Reservation::InProgress) => {
                    return Err(ChatError::Unavailable(
                        "an earlier send with this client_message_id".into(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "send reservations unavailable");
                    return Err(ChatError::Unavailable("send reservations".into()));
                }
            }
        }
    }

    fn record_of(
        &self,
        who: &Principal,
        client_message_id: &str,
        ack: &Appended,
    ) -> ClientMessageRecord {
        ClientMessageRecord {
            tenant_id: who.tenant.id.clone(),
            client_message_id: client_message_id.to_owned(),
            conversation_id: ack.ack.conversation_id.clone(),
            event_id: ack.ack.event_id.clone(),
            position: ack.position,
        }
    }

    /// Appends the user message (opening its conversation first when the
    /// send names none).
    async fn append_message(
        &self,
        who: &Principal,
        message: &SendMessage,
        watcher: Option<Watcher>,
    ) -> Result<Appended, ChatError> {
        let conversation_id = match &message.conversation_id {
            Some(id) => id.clone(),
            // Part of this send: no second rate-limit check.
            None => {
                let (id, opened_at) = self.append_conversation_opened(who, "").await?;
                if let Some(Watcher { out, stop }) = watcher {
                    self.subscribe(who, None, &id, Some(opened_at), out, stop)
                        .await?;
                }
                id
            }
        };
        let event = client_event(
            who,
            &conversation_id,
            Payload::UserMessageSent(Box::new(UserMessageSent {
                client_message_id: message.client_message_id.clone().unwrap_or_default(),
                text: message.text.clone(),
                sent_by_key_id: who.key_id.clone(),
                context: message.context.clone(),
                model: message.model.clone(),
            })),
        );
        let started = Instant::now();
        let position = self.log.append(&who.tenant.id, &event).await?;
        metrics::histogram!("chatstream_gateway_append_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("chatstream_gateway_messages_total", "tenant" => who.tenant.id.clone())
            .increment(1);

        let ack = MessageAck {
            request_id: message.request_id.clone(),
            conversation_id,
            event_id: event.id.clone(),
            position: position.offset,
            duplicate: false,
        };
        Ok(Appended { ack, position })
    }

    /// Records the outcome of an appended send under its client message id;
    /// when an earlier send with the id won, answers with that one.
    async fn claim(
        &self,
        who: &Principal,
        client_message_id: &str,
        message: SendMessage,
        appended: Appended,
    ) -> Result<MessageAck, ChatError> {
        let record = self.record_of(who, client_message_id, &appended);
        // The message is durable whatever happens here; the projector
        // claims the id too, so a failure only widens the retry window.
        match self.store.claim_client_message(&record).await {
            Ok(winner) if winner.event_id != record.event_id => ack_for_retry(message, winner),
            Ok(_) => Ok(appended.ack),
            Err(error) => {
                tracing::warn!(%error, "could not record client message id; the projector will");
                Ok(appended.ack)
            }
        }
    }

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

    /// Starts delivering a conversation to `out`: a `Subscribed` reply,
    /// committed events after `after_offset` from history, then live deltas
    /// and events, until `stop` is cancelled or `out` closes.
    pub async fn subscribe(
        &self,
        who: &Principal,
        request_id: Option<String>,
        conversation_id: &str,
        after_offset: Option<u64>,
        out: mpsc::Sender<ChatReply>,
        stop: CancellationToken,
    ) -> Result<(), ChatError> {
        self.require_conversation(who, conversation_id).await?;
        // Subscribe before reading history: whatever is committed after the
        // history read is then already on its way to us.
        let live = self
            .fanout
            .subscribe(&who.tenant.id, conversation_id)
            .await?;
        let delivery = Delivery {
            store: self.store.clone(),
            fanout: self.fanout.clone(),
            tenant_id: who.tenant.id.clone(),
            conversation_id: conversation_id.to_owned(),
            delivered_up_to: after_offset,
            out,
        };
        let subscribed = ChatReply::Subscribed {
            request_id,
            conversation_id: conversation_id.to_owned(),
        };
        tokio::spawn(async move {
            if delivery.send(subscribed).await.is_err() {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = delivery.run(live) => {}
            }
        });
        Ok(())
    }

    /// Admits a request: refused (retryably) while live delivery is down,
    /// since its answer could not reach anyone, then counted against the
    /// tenant's rate limit, if it has one.
    async fn check_rate(&self, who: &Principal) -> Result<(), ChatError> {
        if let Err(error) = self.fanout.ping().await {
            tracing::warn!(%error, "refusing a request while live delivery is down");
            return Err(ChatError::Unavailable("live delivery".into()));
        }
        let Some(limit) = self.rate_limit_of(who) else {
            return Ok(());
        };
        match self.rate_limiter.check(&who.tenant.id, limit).await {
            Ok(RateDecision::Allowed) => Ok(()),
            Ok(RateDecision::Limited { retry_after }) => {
                metrics::counter!("chatstream_gateway_rate_limited_total", "tenant" => who.tenant.id.clone())
                    .increment(1);
                Err(ChatError::RateLimited { retry_after })
            }
            Err(error) => {
                tracing::warn!(%error, "rate limiter error");
                Err(ChatError::Unavailable("rate limiter".into()))
            }
        }
    }

    fn rate_limit_of(&self, who: &Principal) -> Option<RateLimit> {
        let tenant = &who.tenant.limits;
        let per_second = tenant
            .requests_per_second
            .or(self.limits.requests_per_second)?;
        let burst = tenant
            .burst
            .or(self.limits.burst)
            .unwrap_or_else(|| per_second.ceil().max(1.0) as u32);
        Some(RateLimit { per_second, burst })
    }

    /// Records a person's decision on a tool call of one of the tenant's
    /// conversations; the mcp processor acts on it if the call still waits
    /// (and only for this tenant's calls).
    pub async fn decide_tool_call(
        &self,
        who: &Principal,
        decision: crate::command::ToolCallDecision,
    ) -> Result<MessageAck, ChatError> {
        check_len("tool_call_event_id", &decision.tool_call_event_id)?;
        if decision.tool_call_event_id.is_empty() {
            return Err(ChatError::InvalidRequest(
                "tool_call_event_id is required".into(),
            ));
        }
        if decision.reason.len() > MAX_DECISION_REASON_BYTES {
            return Err(ChatError::InvalidRequest(format!(
                "reason is longer than {MAX_DECISION_REASON_BYTES} bytes"
            )));
        }
        self.check_rate(who).await?;
        self.require_conversation(who, &decision.conversation_id)
            .await?;
        let event = client_event(
            who,
            &decision.conversation_id,
            Payload::ToolCallApprovalDecided(Box::new(
                chatstream_schemas::pb::events::ToolCallApprovalDecided {
                    call_id: String::new(),
                    request_event_id: decision.tool_call_event_id,
                    approved: decision.approved,
                    reason: decision.reason,
                    decided_by_key_id: who.key_id.clone(),
                },
            )),
        );
        let position = self.log.append(&who.tenant.id, &event).await?;
        Ok(MessageAck {
            request_id: decision.request_id,
            conversation_id: decision.conversation_id,
            event_id: event.id,
            position: position.offset,
            duplicate: false,
        })
    }

    /// The conversation must exist for this tenant; another tenant's id is
    /// "not found" too, so ids cannot be probed across tenants.
    async fn require_conversation(
        &self,
        who: &Principal,
        conversation_id: &str,
    ) -> Result<(), ChatError> {
        if conversation_id.is_empty() {
            return Err(ChatError::InvalidRequest(
                "conversation_id is required".into(),
            ));
        }
        check_len("conversation_id", conversation_id)?;
        match self
            .store
            .get_conversation(&who.tenant.id, conversation_id)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(ChatError::ConversationNotFound(conversation_id.to_owned())),
        }
    }

    fn send_lock(&self, tenant_id: &str, client_message_id: &str) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        (tenant_id, client_message_id).hash(&mut hasher);
        &self.send_locks[(hasher.finish() % self.send_locks.len() as u64) as usize]
    }
}

fn ack_for_retry(
    message: SendMessage,
    earlier: ClientMessageRecord,
) -> Result<MessageAck, ChatError> {
    if let Some(conversation_id) = &message.conversation_id
        && *conversation_id != earlier.conversation_id
    {
        return Err(ChatError::ClientMessageConflict(earlier.client_message_id));
    }
    Ok(MessageAck {
        request_id: message.request_id,
        conversation_id: earlier.conversation_id,
        event_id: earlier.event_id,
        position: earlier.position.offset,
        duplicate: true,
    })
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

/// An event caused by a client: a fresh id, which also starts the turn's
/// correlation.
fn client_event(
    who: &Principal,
    conversation_id: &str,
    payload: Payload,
) -> chatstream_schemas::Event {
    let id = new_event_id();
    new_event(
        id.clone(),
        EventContext {
            tenant_id: &who.tenant.id,
            conversation_id,
            causation_id: "",
            correlation_id: &id,
        },
        payload,
    )
}

/// Longest reason a person may give for a tool-call decision.
const MAX_DECISION_REASON_BYTES: usize = 1024;

fn check_len(field: &str, value: &str) -> Result<(), ChatError> {
    if value.len() > MAX_ID_BYTES {
        return Err(ChatError::InvalidRequest(format!(
            "{field} is longer than {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// One subscription's delivery task: replays history, then forwards live
/// messages, dropping committed events at or before what it delivered.
struct Delivery {
    store: Arc<dyn ProjectionStore>,
    fanout: Arc<dyn FanOut>,
    tenant_id: String,
    conversation_id: String,
    delivered_up_to: Option<u64>,
    out: mpsc::Sender<ChatReply>,
}

/// Why delivery stopped.
enum Stopped {
    ClientGone,
    Failed(ChatError),
}

impl Delivery {
    async fn run(mut self, mut live: FanOutStream) {
        let stopped = loop {
            if let Err(stopped) = self.replay_history().await {
                break stopped;
            }
            match self.forward_live(&mut live).await {
                // Fell behind the live stream: resubscribe, then catch up from history again.
                Ok(()) => match self
                    .fanout
                    .subscribe(&self.tenant_id, &self.conversation_id)
                    .await
                {
                    Ok(fresh) => live = fresh,
                    Err(error) => break Stopped::Failed(error.into()),
                },
                Err(stopped) => break stopped,
            }
        };
        if let Stopped::Failed(error) = stopped {
            let _ = self
                .out
                .send(ChatReply::Error {
                    request_id: None,
                    error,
                })
                .await;
        }
    }

    async fn replay_history(&mut self) -> Result<(), Stopped> {
        loop {
            let page = self
                .store
                .read_history(
                    &self.tenant_id,
                    &self.conversation_id,
                    self.delivered_up_to,
                    REPLAY_PAGE,
                )
                .await
                .map_err(|e| Stopped::Failed(e.into()))?;
            let complete = page.len() < REPLAY_PAGE;
            for entry in page {
                self.deliver_committed(entry).await?;
            }
            if complete {
                return Ok(());
            }
        }
    }

    /// Returns `Ok` when the subscriber lagged and must catch up.
    async fn forward_live(&mut self, live: &mut FanOutStream) -> Result<(), Stopped> {
        while let Some(item) = live.next().await {
            match item {
                Ok(FanOutMessage::Delta(delta)) => self.send(ChatReply::Delta(delta)).await?,
                Ok(FanOutMessage::Committed(entry)) => self.deliver_committed(entry).await?,
                Err(FanOutError::Lagged { skipped }) => {
                    tracing::debug!(skipped, conversation_id = %self.conversation_id, "subscriber lagged; catching up from history");
                    return Ok(());
                }
                Err(error) => return Err(Stopped::Failed(error.into())),
            }
        }
        Err(Stopped::Failed(ChatError::Unavailable(
            "live delivery".into(),
        )))
    }

    async fn deliver_committed(&mut self, entry: HistoryEntry) -> Result<(), Stopped> {
        let offset = entry.position.offset;
        if self.delivered_up_to.is_some_and(|up_to| offset <= up_to) {
            return Ok(());
        }
        self.send(ChatReply::Event(entry)).await?;
        self.delivered_up_to = Some(offset);
        Ok(())
    }

    async fn send(&self, reply: ChatReply) -> Result<(), Stopped> {
        self.out.send(reply).await.map_err(|_| Stopped::ClientGone)
    }
}
