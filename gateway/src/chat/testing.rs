//! Fixtures for the chat core's unit tests: a core on the embedded backends
//! in a temporary directory (reopenable, as after a restart), principals of
//! any tenant, and backends that fail or hold on cue, so races that need
//! several processes elsewhere can be staged in one.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_config::tenants::{Principal, Tenant, TenantLimits};
use chatstream_core::fanout::in_process::InProcessFanOut;
use chatstream_core::fanout::{FanOut, FanOutError, FanOutMessage, FanOutStream};
use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_core::log::{EventLog, LogConsumer, LogError, LogPosition, LogRecord};
use chatstream_core::ratelimit::in_process::InProcessRateLimiter;
use chatstream_core::ratelimit::{RateDecision, RateLimit, RateLimitError, RateLimiter};
use chatstream_core::sends::{Reservation, ReservationError, SendReservations};
use chatstream_core::store::embedded::EmbeddedStore;
use chatstream_core::store::{ClientMessageRecord, HistoryEntry, ProjectionStore};
use chatstream_schemas::Event;
use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::ids::new_event_id;
use chatstream_schemas::pb::events::{AssistantMessage, event::Payload};
use tokio::sync::{Notify, mpsc};

use super::{ChatCore, ChatLimits};
use crate::command::{ChatReply, SendMessage};

pub const LIMITS: ChatLimits = ChatLimits {
    max_message_bytes: 1024,
    requests_per_second: None,
    burst: None,
};

/// The embedded log and store in a temporary directory, and an in-process
/// fan-out: what `chatstream dev` runs on.
pub struct Backends {
    pub dir: tempfile::TempDir,
    pub log: Arc<EmbeddedLog>,
    pub store: Arc<EmbeddedStore>,
    pub fanout: Arc<InProcessFanOut>,
}

impl Backends {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (log, store) = open(&dir);
        Self {
            dir,
            log,
            store,
            fanout: Arc::new(InProcessFanOut::new()),
        }
    }

    /// The same data directory opened again, as by a restarted gateway.
    /// Every core built on these backends must be dropped first.
    pub fn restart(self) -> Self {
        let Self {
            dir, log, store, ..
        } = self;
        drop((log, store));
        let (log, store) = open(&dir);
        Self {
            dir,
            log,
            store,
            fanout: Arc::new(InProcessFanOut::new()),
        }
    }

    /// A core on these backends with no rate limit.
    pub fn core(&self) -> ChatCore {
        self.core_with_log(self.log.clone())
    }

    /// A core whose log does not claim client message ids (as on Kafka):
    /// its sends are deduplicated by locks, the store and reservations.
    pub fn core_claiming_in_the_store(&self) -> ChatCore {
        self.core_with_log(ScriptedLog::new(self.log.clone(), []))
    }

    pub fn core_with_log(&self, log: Arc<dyn EventLog>) -> ChatCore {
        ChatCore::new(
            log,
            self.store.clone(),
            self.fanout.clone(),
            Arc::new(InProcessRateLimiter::new()),
            LIMITS,
        )
    }

    /// Every event on the log, in order.
    pub async fn events(&self) -> Vec<Event> {
        let records = self.log.read(0, 0, 10_000).await.expect("the log reads");
        records
            .iter()
            .map(|record| chatstream_schemas::codec::decode(&record.value).expect("an event"))
            .collect()
    }

    /// The user messages on the log, in order.
    pub async fn user_messages(&self) -> Vec<Event> {
        self.events()
            .await
            .into_iter()
            .filter(|event| matches!(event.payload, Some(Payload::UserMessageSent(_))))
            .collect()
    }

    /// Records an assistant answer in the conversation's history at
    /// `offset`, as the projector would, and returns the entry.
    pub async fn project_answer(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        offset: u64,
        text: &str,
    ) -> HistoryEntry {
        let entry = answer(tenant_id, conversation_id, offset, text);
        self.store
            .append_history(&entry)
            .await
            .expect("history is recorded");
        entry
    }
}

fn open(dir: &tempfile::TempDir) -> (Arc<EmbeddedLog>, Arc<EmbeddedStore>) {
    let log = EmbeddedLog::open(dir.path(), 1).expect("the embedded log opens");
    let store = EmbeddedStore::open(dir.path()).expect("the embedded store opens");
    (Arc::new(log), Arc::new(store))
}

/// An assistant answer of a conversation at `offset` (partition 0).
pub fn answer(tenant_id: &str, conversation_id: &str, offset: u64, text: &str) -> HistoryEntry {
    let id = new_event_id();
    let event = new_event(
        id.clone(),
        EventContext {
            tenant_id,
            conversation_id,
            causation_id: "",
            correlation_id: &id,
        },
        Payload::AssistantMessage(AssistantMessage {
            text: text.to_owned(),
            ..Default::default()
        }),
    );
    HistoryEntry {
        position: LogPosition {
            partition: 0,
            offset,
        },
        event,
    }
}

pub fn principal(tenant_id: &str) -> Principal {
    principal_with_limits(tenant_id, TenantLimits::default())
}

pub fn principal_with_limits(tenant_id: &str, limits: TenantLimits) -> Principal {
    Principal {
        tenant: Arc::new(Tenant {
            id: tenant_id.to_owned(),
            name: tenant_id.to_owned(),
            limits,
            mcp_servers: Vec::new(),
            routing: None,
        }),
        key_id: format!("{tenant_id}-key"),
    }
}

pub fn message(
    conversation_id: Option<&str>,
    client_message_id: Option<&str>,
    text: &str,
) -> SendMessage {
    SendMessage {
        request_id: None,
        conversation_id: conversation_id.map(str::to_owned),
        client_message_id: client_message_id.map(str::to_owned),
        text: text.to_owned(),
        context: Vec::new(),
        model: String::new(),
    }
}

/// The next reply on a subscription's channel, failing instead of hanging
/// when none comes (the channel stays open while delivery runs).
pub async fn next_reply(replies: &mut mpsc::Receiver<ChatReply>) -> ChatReply {
    tokio::time::timeout(Duration::from_secs(10), replies.recv())
        .await
        .expect("a reply within 10 s")
        .expect("the subscription is still delivering")
}

/// The log offsets of the committed events among `replies`.
pub fn offsets(replies: &[ChatReply]) -> Vec<u64> {
    replies
        .iter()
        .filter_map(|reply| match reply {
            ChatReply::Event(entry) => Some(entry.position.offset),
            _ => None,
        })
        .collect()
}

/// What a held append does once released.
pub enum Then {
    Append,
    Fail,
}

/// What the next user-message append of a `ScriptedLog` does.
pub enum Cue {
    /// Signals `entered`, waits for `release`, then appends or fails.
    Hold {
        entered: Arc<Notify>,
        release: Arc<Notify>,
        then: Then,
    },
    /// Waits until `parties` appends reached it, then appends: two gateways
    /// in the middle of the same send at once.
    Together(Arc<tokio::sync::Barrier>),
}

/// The embedded log with cues for user-message appends (other events and
/// appends past the script go straight through). It does not claim client
/// message ids, as Kafka does not.
pub struct ScriptedLog {
    inner: Arc<EmbeddedLog>,
    script: Mutex<VecDeque<Cue>>,
    /// While set, every append fails (a log outage).
    down: AtomicBool,
}

impl ScriptedLog {
    pub fn new(inner: Arc<EmbeddedLog>, script: impl IntoIterator<Item = Cue>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            script: Mutex::new(script.into_iter().collect()),
            down: AtomicBool::new(false),
        })
    }

    /// Starts or ends an outage: appends fail while it lasts.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

fn failed_append() -> LogError {
    LogError::Unavailable("scripted append failure".into())
}

#[async_trait]
impl EventLog for ScriptedLog {
    fn partition_count(&self) -> u32 {
        self.inner.partition_count()
    }

    async fn append(&self, key: &str, event: &Event) -> Result<LogPosition, LogError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(failed_append());
        }
        let cue = match event.payload {
            Some(Payload::UserMessageSent(_)) => self
                .script
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front(),
            _ => None,
        };
        match cue {
            None => {}
            Some(Cue::Hold {
                entered,
                release,
                then,
            }) => {
                entered.notify_one();
                release.notified().await;
                if let Then::Fail = then {
                    return Err(failed_append());
                }
            }
            Some(Cue::Together(barrier)) => {
                barrier.wait().await;
            }
        }
        self.inner.append(key, event).await
    }

    async fn append_bytes(&self, key: &str, value: Vec<u8>) -> Result<LogPosition, LogError> {
        self.inner.append_bytes(key, value).await
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.inner.read(partition, from, max).await
    }

    async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        self.inner.end_offset(partition).await
    }

    async fn subscribe(&self, group: &str) -> Result<Box<dyn LogConsumer>, LogError> {
        self.inner.subscribe(group).await
    }

    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError> {
        self.inner.committed(group, partition).await
    }

    async fn ping(&self) -> Result<(), LogError> {
        self.inner.ping().await
    }
}

/// Send reservations in memory, shared by the cores of one test as Redis
/// is by gateways: `pending` while a send appends, then its outcome.
#[derive(Default)]
pub struct MemoryReservations {
    held: Mutex<HashMap<(String, String), Reservation>>,
    /// Notified on every `lookup`: a send is waiting for another one.
    pub looked_up: Notify,
}

impl MemoryReservations {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Reservation>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves an id as a gateway that is still appending would.
    pub fn hold(&self, tenant_id: &str, client_message_id: &str) {
        self.held().insert(
            (tenant_id.to_owned(), client_message_id.to_owned()),
            Reservation::InProgress,
        );
    }
}

#[async_trait]
impl SendReservations for MemoryReservations {
    async fn reserve(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Reservation, ReservationError> {
        let key = (tenant_id.to_owned(), client_message_id.to_owned());
        let mut held = self.held();
        match held.get(&key) {
            Some(found) => Ok(found.clone()),
            None => {
                held.insert(key, Reservation::InProgress);
                Ok(Reservation::Reserved)
            }
        }
    }

    async fn lookup(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Reservation, ReservationError> {
        let key = (tenant_id.to_owned(), client_message_id.to_owned());
        let found = self.held().get(&key).cloned();
        self.looked_up.notify_one();
        Ok(found.unwrap_or(Reservation::Reserved))
    }

    async fn complete(&self, record: &ClientMessageRecord) -> Result<(), ReservationError> {
        let key = (record.tenant_id.clone(), record.client_message_id.clone());
        self.held()
            .insert(key, Reservation::Completed(record.clone()));
        Ok(())
    }

    async fn release(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<(), ReservationError> {
        let key = (tenant_id.to_owned(), client_message_id.to_owned());
        let mut held = self.held();
        if held.get(&key) == Some(&Reservation::InProgress) {
            held.remove(&key);
        }
        Ok(())
    }
}

/// A fan-out that cannot be reached (Redis down).
pub struct UnreachableFanOut;

#[async_trait]
impl FanOut for UnreachableFanOut {
    async fn publish(&self, _: &str, _: &str, _: FanOutMessage) -> Result<(), FanOutError> {
        Err(FanOutError::Unavailable("unreachable".into()))
    }

    async fn subscribe(&self, _: &str, _: &str) -> Result<FanOutStream, FanOutError> {
        Err(FanOutError::Unavailable("unreachable".into()))
    }

    async fn ping(&self) -> Result<(), FanOutError> {
        Err(FanOutError::Unavailable("unreachable".into()))
    }
}

/// A rate limiter that cannot be reached (Redis down).
pub struct UnreachableRateLimiter;

#[async_trait]
impl RateLimiter for UnreachableRateLimiter {
    async fn check(&self, _: &str, _: RateLimit) -> Result<RateDecision, RateLimitError> {
        Err(RateLimitError::Unavailable("unreachable".into()))
    }
}
