//! Idempotent sends: a client message id is appended once, and every send
//! with it (a retry, or a copy racing the original) is acked with the same
//! event. On a log that claims ids itself (the embedded log), the append
//! and the claim are one durable commit. Otherwise per-id locks cover one
//! gateway, the projection store remembers outcomes for good, and shared
//! reservations cover several gateways.
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use chatstream_config::tenants::Principal;
use chatstream_core::log::{ClaimedAppend, ClaimingLog, LogPosition, SendClaim};
use chatstream_core::sends::{Reservation, SendReservations};
use chatstream_core::store::ClientMessageRecord;
use tokio::sync::Mutex;
// tokio's clock, so a test can pause time and see a send give up waiting.
use tokio::time::Instant;

use super::ChatCore;
use super::send::{Appended, Watcher, timed_append};
use crate::command::{MessageAck, SendMessage};
use crate::error::ChatError;

/// How long a send waits for another gateway's send with the same client
/// message id to finish before it gives up (retryably).
const RESERVATION_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting send looks at another gateway's reservation again.
const RESERVATION_POLL: Duration = Duration::from_millis(10);
/// Stripes of the per-id locks.
const SEND_LOCKS: usize = 64;

/// What keeps sends with one client message id from being appended twice.
pub(super) struct SendDeduplication {
    /// Striped locks so concurrent sends with one client message id
    /// (a retry racing its original) are appended once.
    locks: Vec<Mutex<()>>,
    /// Client message ids reserved across gateways; `None` in one process,
    /// where `locks` suffice.
    reservations: Option<Arc<dyn SendReservations>>,
}

impl SendDeduplication {
    pub(super) fn in_one_process() -> Self {
        Self {
            locks: (0..SEND_LOCKS).map(|_| Mutex::new(())).collect(),
            reservations: None,
        }
    }

    pub(super) fn shared_with(mut self, reservations: Arc<dyn SendReservations>) -> Self {
        self.reservations = Some(reservations);
        self
    }

    fn lock_of(&self, tenant_id: &str, client_message_id: &str) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        (tenant_id, client_message_id).hash(&mut hasher);
        &self.locks[(hasher.finish() % self.locks.len() as u64) as usize]
    }
}

impl ChatCore {
    /// Appends `message` unless a send with its client message id was
    /// appended before (here, in the store, or on another gateway), in
    /// which case that send's ack comes back marked `duplicate`.
    pub(super) async fn append_once(
        &self,
        who: &Principal,
        client_message_id: String,
        message: SendMessage,
        watcher: Option<Watcher>,
    ) -> Result<MessageAck, ChatError> {
        if let Some(log) = self.log.claiming() {
            return self
                .append_claiming(log, who, client_message_id, message, watcher)
                .await;
        }
        let _guard = self
            .deduplication
            .lock_of(&who.tenant.id, &client_message_id)
            .lock()
            .await;
        // The store holds outcomes for good, reservations the sends in
        // progress: both are asked at once, one round trip.
        let (stored, reserved) = tokio::join!(
            self.store
                .get_client_message(&who.tenant.id, &client_message_id),
            self.reserve(who, &client_message_id),
        );
        let reserved_here =
            self.deduplication.reservations.is_some() && matches!(reserved, Ok(None));
        let earlier = match (stored, reserved) {
            (Ok(Some(earlier)), _) => Ok(Some(earlier)),
            (Ok(None), reserved) => reserved,
            (Err(error), _) => Err(error.into()),
        };
        match earlier {
            Ok(None) => {}
            Ok(Some(earlier)) => {
                let answer = ack_for_retry(message, earlier);
                if reserved_here {
                    // Reserved before the store's answer came: hand the
                    // reservation the outcome the store knows.
                    self.settle(who, &client_message_id, &answer).await;
                }
                return answer;
            }
            Err(error) => {
                let failed = Err(error);
                if reserved_here {
                    self.settle(who, &client_message_id, &failed).await;
                }
                return failed;
            }
        }
        let acked = match self.append_user_message(who, &message, watcher).await {
            Ok(appended) => self.claim(who, &client_message_id, message, appended).await,
            Err(error) => Err(error),
        };
        self.settle(who, &client_message_id, &acked).await;
        acked
    }

    /// `append_once` on a log that claims ids itself: the log decides, in
    /// the commit that makes the message durable, whether this send or an
    /// earlier one holds the id. Nothing is read first and nothing is
    /// written after.
    async fn append_claiming(
        &self,
        log: &dyn ClaimingLog,
        who: &Principal,
        client_message_id: String,
        message: SendMessage,
        watcher: Option<Watcher>,
    ) -> Result<MessageAck, ChatError> {
        let new = self.new_message(who, &message, watcher).await?;
        let claim = SendClaim {
            tenant_id: who.tenant.id.clone(),
            client_message_id,
        };
        let claimed =
            timed_append(log.append_claiming(&who.tenant.id, &claim, &new.events)).await?;
        match claimed {
            ClaimedAppend::Appended(positions) => {
                Ok(self.appended(who, &message, new, &positions).await?.ack)
            }
            // A retry: whatever `new` opened or watched is dropped unused.
            ClaimedAppend::Earlier(earlier) => ack_for_retry(message, earlier),
        }
    }

    /// Reserves a client message id across gateways. `Some` is the outcome
    /// of an earlier send with it (waiting while one is in progress).
    async fn reserve(
        &self,
        who: &Principal,
        client_message_id: &str,
    ) -> Result<Option<ClientMessageRecord>, ChatError> {
        let Some(reservations) = &self.deduplication.reservations else {
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
                    tokio::time::sleep(RESERVATION_POLL).await;
                    // A gateway that died mid-send leaves its reservation
                    // pending until it expires; once that send is projected
                    // the store has its outcome, which is the answer.
                    if let Ok(Some(earlier)) = self
                        .store
                        .get_client_message(&who.tenant.id, client_message_id)
                        .await
                    {
                        return Ok(Some(earlier));
                    }
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

    /// Records the outcome of an appended send under its client message id;
    /// when an earlier send with the id won, answers with that one.
    async fn claim(
        &self,
        who: &Principal,
        client_message_id: &str,
        message: SendMessage,
        appended: Appended,
    ) -> Result<MessageAck, ChatError> {
        let record = ClientMessageRecord {
            tenant_id: who.tenant.id.clone(),
            client_message_id: client_message_id.to_owned(),
            conversation_id: appended.ack.conversation_id.clone(),
            event_id: appended.ack.event_id.clone(),
            position: appended.position,
        };
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

    /// Tells other gateways how a reserved send ended: its outcome, or that
    /// it failed and a retry may go ahead.
    async fn settle(
        &self,
        who: &Principal,
        client_message_id: &str,
        acked: &Result<MessageAck, ChatError>,
    ) {
        let Some(reservations) = &self.deduplication.reservations else {
            return;
        };
        let settled = match acked {
            Ok(ack) => {
                let record = ClientMessageRecord {
                    tenant_id: who.tenant.id.clone(),
                    client_message_id: client_message_id.to_owned(),
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
                    .release(&who.tenant.id, client_message_id)
                    .await
            }
        };
        if let Err(error) = settled {
            tracing::warn!(%error, "could not settle a send reservation; it expires by itself");
        }
    }
}

/// The ack for a send whose client message id an earlier send used; a
/// conflict when the earlier one went to another conversation.
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use chatstream_core::log::LogPosition;
    use chatstream_core::sends::{Reservation, SendReservations};
    use chatstream_core::store::{ClientMessageRecord, ProjectionStore};
    use futures::future::join_all;
    use tokio::sync::{Barrier, Notify};

    use super::RESERVATION_WAIT;
    use crate::chat::ChatCore;
    use crate::chat::testing::{
        Backends, Cue, MemoryReservations, ScriptedLog, Then, message, principal,
    };
    use crate::command::MessageAck;
    use crate::error::ChatError;

    /// Sends `copies` copies of one send at once, spread over `cores`.
    async fn send_copies(
        cores: &[Arc<ChatCore>],
        copies: usize,
        conversation_id: Option<&str>,
    ) -> Vec<MessageAck> {
        let sends = (0..copies).map(|copy| {
            let core = cores[copy % cores.len()].clone();
            let sent = message(conversation_id, Some("m-1"), "hello");
            tokio::spawn(async move { core.send_message(&principal("acme"), sent).await })
        });
        join_all(sends)
            .await
            .into_iter()
            .map(|joined| {
                joined
                    .expect("no send panics")
                    .expect("every copy is acked")
            })
            .collect()
    }

    /// Builds a gateway's core on the test's backends.
    type CoreOf = fn(&Backends) -> ChatCore;

    /// The two ways sends are deduplicated: by the log, in the commit of
    /// the append (the embedded log), and by per-id locks, the store and
    /// reservations (Kafka).
    const PATHS: [(&str, CoreOf); 2] = [
        ("claimed by the log", Backends::core),
        ("claimed in the store", Backends::core_claiming_in_the_store),
    ];

    /// Every ack names the one appended event, and exactly one is not a duplicate.
    fn assert_one_answer(acks: &[MessageAck], appended: &str) {
        let answers: HashSet<_> = acks
            .iter()
            .map(|ack| (&ack.conversation_id, &ack.event_id, ack.position))
            .collect();
        assert_eq!(answers.len(), 1, "{acks:?}");
        assert_eq!(acks[0].event_id, appended);
        assert_eq!(acks.iter().filter(|ack| !ack.duplicate).count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_copies_of_a_send_are_appended_once_and_all_get_its_ack() {
        for (path, core_of) in PATHS {
            let backends = Backends::new();
            let core = Arc::new(core_of(&backends));
            let (conversation_id, _) = core
                .open_conversation(&principal("acme"), "")
                .await
                .unwrap();

            let acks = send_copies(&[core], 32, Some(&conversation_id)).await;

            let appended = backends.user_messages().await;
            assert_eq!(appended.len(), 1, "{path}");
            assert_one_answer(&acks, &appended[0].id);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_copies_of_a_send_that_opens_its_conversation_open_one() {
        for (path, core_of) in PATHS {
            let backends = Backends::new();
            let core = Arc::new(core_of(&backends));

            let acks = send_copies(&[core], 16, None).await;

            let events = backends.events().await;
            assert_eq!(events.len(), 2, "{path}: one open, one message: {events:?}");
            assert_one_answer(&acks, &events[1].id);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copies_of_a_send_on_two_gateways_sharing_reservations_are_appended_once() {
        let backends = Backends::new();
        let reservations = Arc::new(MemoryReservations::default());
        let gateways = [
            Arc::new(
                backends
                    .core_claiming_in_the_store()
                    .with_send_reservations(reservations.clone()),
            ),
            Arc::new(
                backends
                    .core_claiming_in_the_store()
                    .with_send_reservations(reservations.clone()),
            ),
        ];
        let (conversation_id, _) = gateways[0]
            .open_conversation(&principal("acme"), "")
            .await
            .unwrap();

        let acks = send_copies(&gateways, 32, Some(&conversation_id)).await;

        let appended = backends.user_messages().await;
        assert_eq!(appended.len(), 1);
        assert_one_answer(&acks, &appended[0].id);
    }

    /// Without shared reservations two gateways can both append (their
    /// locks are their own); the store's first-claim-wins still gives both
    /// clients one answer, and the projector keeps the second copy out of
    /// the conversation's turns. Reservations exist to avoid the extra append.
    #[tokio::test]
    async fn without_reservations_the_store_claim_gives_two_gateways_one_answer() {
        let backends = Backends::new();
        let together = Arc::new(Barrier::new(2));
        let log = ScriptedLog::new(
            backends.log.clone(),
            [Cue::Together(together.clone()), Cue::Together(together)],
        );
        let gateways = [
            Arc::new(backends.core_with_log(log.clone())),
            Arc::new(backends.core_with_log(log)),
        ];
        let (conversation_id, _) = gateways[0]
            .open_conversation(&principal("acme"), "")
            .await
            .unwrap();

        let acks = send_copies(&gateways, 2, Some(&conversation_id)).await;

        let appended = backends.user_messages().await;
        assert_eq!(appended.len(), 2, "both gateways appended");
        let claimed = backends
            .store
            .get_client_message("acme", "m-1")
            .await
            .unwrap()
            .expect("claimed");
        assert_one_answer(&acks, &claimed.event_id);
    }

    #[tokio::test]
    async fn a_retry_waiting_for_a_send_whose_append_fails_appends_it_once() {
        let backends = Backends::new();
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let log = ScriptedLog::new(
            backends.log.clone(),
            [Cue::Hold {
                entered: entered.clone(),
                release: release.clone(),
                then: Then::Fail,
            }],
        );
        let core = Arc::new(backends.core_with_log(log));
        let send = || {
            let core = core.clone();
            // No conversation named: nothing to read before the per-id lock,
            // so a spawned send is waiting on it after one yield.
            tokio::spawn(async move {
                core.send_message(&principal("acme"), message(None, Some("m-1"), "hi"))
                    .await
            })
        };

        let original = send();
        entered.notified().await;
        let retry = send();
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        release.notify_one();

        let failed = original.await.unwrap().unwrap_err();
        assert_eq!(failed, ChatError::Unavailable("event log".into()));
        let acked = retry.await.unwrap().unwrap();
        assert!(!acked.duplicate);
        let appended = backends.user_messages().await;
        assert_eq!(appended.len(), 1);
        assert_eq!(appended[0].id, acked.event_id);
        let again = send().await.unwrap().unwrap();
        assert!(again.duplicate);
        assert_eq!(
            (again.event_id, again.position),
            (acked.event_id, acked.position)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_on_another_gateway_waits_out_a_failing_send_then_appends_once() {
        let backends = Backends::new();
        let reservations = Arc::new(MemoryReservations::default());
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let failing_log = ScriptedLog::new(
            backends.log.clone(),
            [Cue::Hold {
                entered: entered.clone(),
                release: release.clone(),
                then: Then::Fail,
            }],
        );
        let first = Arc::new(
            backends
                .core_with_log(failing_log)
                .with_send_reservations(reservations.clone()),
        );
        let second = Arc::new(
            backends
                .core_claiming_in_the_store()
                .with_send_reservations(reservations.clone()),
        );
        let (conversation_id, _) = first
            .open_conversation(&principal("acme"), "")
            .await
            .unwrap();
        let send = |core: &Arc<ChatCore>| {
            let core = core.clone();
            let sent = message(Some(&conversation_id), Some("m-1"), "hi");
            tokio::spawn(async move { core.send_message(&principal("acme"), sent).await })
        };

        let original = send(&first);
        entered.notified().await;
        let retry = send(&second);
        reservations.looked_up.notified().await;
        release.notify_one();

        let failed = original.await.unwrap().unwrap_err();
        assert_eq!(failed, ChatError::Unavailable("event log".into()));
        let acked = retry.await.unwrap().unwrap();
        assert!(!acked.duplicate);
        let appended = backends.user_messages().await;
        assert_eq!(appended.len(), 1);
        assert_eq!(appended[0].id, acked.event_id);
        match reservations.lookup("acme", "m-1").await.unwrap() {
            Reservation::Completed(record) => assert_eq!(record.event_id, acked.event_id),
            other => panic!("the outcome is shared with other gateways: {other:?}"),
        }
        let again = send(&first).await.unwrap().unwrap();
        assert!(again.duplicate);
        assert_eq!(again.event_id, acked.event_id);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_gives_up_retryably_while_another_gateway_holds_its_id() {
        let backends = Backends::new();
        let reservations = Arc::new(MemoryReservations::default());
        let core = backends
            .core_claiming_in_the_store()
            .with_send_reservations(reservations.clone());
        let (conversation_id, _) = core
            .open_conversation(&principal("acme"), "")
            .await
            .unwrap();
        reservations.hold("acme", "m-1");
        let started = tokio::time::Instant::now();

        let error = core
            .send_message(
                &principal("acme"),
                message(Some(&conversation_id), Some("m-1"), "hi"),
            )
            .await
            .unwrap_err();

        assert_eq!(
            error,
            ChatError::Unavailable("an earlier send with this client_message_id".into())
        );
        assert!(started.elapsed() >= RESERVATION_WAIT);
        assert!(backends.user_messages().await.is_empty());
    }

    #[tokio::test]
    async fn an_outcome_only_the_store_knows_completes_the_reservation_taken_meanwhile() {
        let backends = Backends::new();
        let acme = principal("acme");
        let original = backends
            .core_claiming_in_the_store()
            .send_message(&acme, message(None, Some("m-1"), "hi"))
            .await
            .unwrap();
        // Reservations that forgot the send (expired, or Redis restarted).
        let reservations = Arc::new(MemoryReservations::default());
        let core = backends
            .core_claiming_in_the_store()
            .with_send_reservations(reservations.clone());

        let retry = core
            .send_message(&acme, message(None, Some("m-1"), "hi"))
            .await
            .unwrap();

        assert!(retry.duplicate);
        assert_eq!(retry.event_id, original.event_id);
        match reservations.lookup("acme", "m-1").await.unwrap() {
            Reservation::Completed(record) => assert_eq!(record.event_id, original.event_id),
            other => panic!("the reservation must not stay held: {other:?}"),
        }
        assert_eq!(backends.user_messages().await.len(), 1);
    }

    #[tokio::test]
    async fn a_send_waiting_on_a_dead_gateways_reservation_is_answered_once_the_store_has_it() {
        let backends = Backends::new();
        let reservations = Arc::new(MemoryReservations::default());
        let core = Arc::new(
            backends
                .core_claiming_in_the_store()
                .with_send_reservations(reservations.clone()),
        );
        let (conversation_id, _) = core
            .open_conversation(&principal("acme"), "")
            .await
            .unwrap();
        // The gateway that reserved m-1 died after appending it; its
        // reservation stays pending until it expires.
        reservations.hold("acme", "m-1");
        let appended = ClientMessageRecord {
            tenant_id: "acme".into(),
            client_message_id: "m-1".into(),
            conversation_id: conversation_id.clone(),
            event_id: "appended-by-the-dead-gateway".into(),
            position: LogPosition {
                partition: 0,
                offset: 3,
            },
        };
        let retry = tokio::spawn({
            let (core, conversation_id) = (core.clone(), conversation_id.clone());
            async move {
                core.send_message(
                    &principal("acme"),
                    message(Some(&conversation_id), Some("m-1"), "hi"),
                )
                .await
            }
        });

        // The retry is waiting; then the projector records the send.
        reservations.looked_up.notified().await;
        backends
            .store
            .claim_client_message(&appended)
            .await
            .unwrap();
        let ack = retry.await.unwrap().unwrap();

        assert!(ack.duplicate);
        assert_eq!(ack.event_id, "appended-by-the-dead-gateway");
        assert!(backends.user_messages().await.is_empty());
    }

    #[tokio::test]
    async fn another_gateways_outcome_answers_before_the_store_has_it() {
        let backends = Backends::new();
        let reservations = Arc::new(MemoryReservations::default());
        let core = backends
            .core_claiming_in_the_store()
            .with_send_reservations(reservations.clone());
        let (conversation_id, _) = core
            .open_conversation(&principal("acme"), "")
            .await
            .unwrap();
        let elsewhere = ClientMessageRecord {
            tenant_id: "acme".into(),
            client_message_id: "m-1".into(),
            conversation_id: conversation_id.clone(),
            event_id: "appended-elsewhere".into(),
            position: LogPosition {
                partition: 0,
                offset: 7,
            },
        };
        reservations.complete(&elsewhere).await.unwrap();

        let ack = core
            .send_message(
                &principal("acme"),
                message(Some(&conversation_id), Some("m-1"), "hi"),
            )
            .await
            .unwrap();

        assert!(ack.duplicate);
        assert_eq!(
            (ack.event_id.as_str(), ack.position),
            ("appended-elsewhere", 7)
        );
        assert!(backends.user_messages().await.is_empty());
    }

    #[tokio::test]
    async fn a_retry_after_a_restart_gets_the_original_ack() {
        for (path, core_of) in PATHS {
            let backends = Backends::new();
            let acme = principal("acme");
            let original = {
                let core = core_of(&backends);
                let (conversation_id, _) = core.open_conversation(&acme, "").await.unwrap();
                core.send_message(&acme, message(Some(&conversation_id), Some("m-1"), "hi"))
                    .await
                    .unwrap()
            };

            let backends = backends.restart();
            let core = core_of(&backends);
            let retry = core
                .send_message(
                    &acme,
                    message(Some(&original.conversation_id), Some("m-1"), "hi"),
                )
                .await
                .unwrap();

            assert!(retry.duplicate, "{path}");
            assert_eq!(
                (&retry.conversation_id, &retry.event_id, retry.position),
                (
                    &original.conversation_id,
                    &original.event_id,
                    original.position
                ),
                "{path}"
            );
            assert_eq!(backends.user_messages().await.len(), 1, "{path}");

            let (elsewhere, _) = core.open_conversation(&acme, "").await.unwrap();
            let error = core
                .send_message(&acme, message(Some(&elsewhere), Some("m-1"), "hi"))
                .await
                .unwrap_err();
            assert_eq!(
                error,
                ChatError::ClientMessageConflict("m-1".into()),
                "{path}"
            );
            assert_eq!(backends.user_messages().await.len(), 1, "{path}");
        }
    }

    #[tokio::test]
    async fn a_retry_of_a_send_that_opened_its_conversation_opens_nothing() {
        for (path, core_of) in PATHS {
            let backends = Backends::new();
            let core = core_of(&backends);
            let acme = principal("acme");
            let original = core
                .send_message(&acme, message(None, Some("m-1"), "hi"))
                .await
                .unwrap();

            let retry = core
                .send_message(&acme, message(None, Some("m-1"), "hi"))
                .await
                .unwrap();

            assert!(retry.duplicate, "{path}");
            assert_eq!(retry.conversation_id, original.conversation_id, "{path}");
            assert_eq!(
                backends.events().await.len(),
                2,
                "{path}: one open, one message"
            );
        }
    }

    #[tokio::test]
    async fn client_message_ids_belong_to_their_tenant() {
        for (path, core_of) in PATHS {
            client_message_ids_of_tenants(path, core_of).await;
        }
    }

    async fn client_message_ids_of_tenants(path: &str, core_of: CoreOf) {
        let backends = Backends::new();
        let core = core_of(&backends);
        let ours = core
            .send_message(&principal("acme"), message(None, Some("m-1"), "hi"))
            .await
            .unwrap();

        let theirs = core
            .send_message(&principal("globex"), message(None, Some("m-1"), "hi"))
            .await
            .unwrap();

        assert!(
            !theirs.duplicate,
            "{path}: another tenant's id is not a retry"
        );
        assert_ne!(theirs.conversation_id, ours.conversation_id);
        assert_ne!(theirs.event_id, ours.event_id);
        let tenants: Vec<_> = backends
            .user_messages()
            .await
            .into_iter()
            .map(|event| event.tenant_id)
            .collect();
        assert_eq!(tenants, ["acme", "globex"]);
    }
}
