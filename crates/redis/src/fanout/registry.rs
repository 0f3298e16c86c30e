//! The local half of the Redis fan-out: which conversations this process
//! watches, and a broadcast channel per conversation that its local
//! subscribers share. One Redis subscription serves all of them.
//!
//! Only the session task sends subscribe/unsubscribe commands (so they reach
//! Redis in the order the registry changed); this registry records what it
//! must send next and turns the server's confirmations, which arrive in the
//! same stream as the messages, into "active". A conversation's subscribers
//! get the messages that follow the confirmation of their own subscribe
//! command, never older ones left over from an earlier subscription.
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::PubSubMode;
use chatstream_core::fanout::{FanOutError, FanOutMessage};

/// Where a conversation's Redis subscription stands, as its local
/// subscribers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ChannelState {
    /// The subscribe command is queued or sent, not confirmed yet.
    Subscribing,
    /// Confirmed: every message published from now on is delivered.
    Active,
    /// The connection to Redis went away; the subscription is over.
    Lost(String),
}

/// One live connection to Redis (`C`: the connection handle to publish
/// on; generic so the bookkeeping can be tested without a server).
pub(super) struct Session<C> {
    pub(super) id: u64,
    pub(super) connection: C,
    pub(super) mode: PubSubMode,
    /// Generations whose subscribe command was sent but not yet confirmed,
    /// per channel, in the order they were sent (the server confirms in
    /// that order).
    awaiting_confirmation: HashMap<String, VecDeque<u64>>,
}

impl<C> Session<C> {
    pub(super) fn new(id: u64, connection: C, mode: PubSubMode) -> Self {
        Self {
            id,
            connection,
            mode,
            awaiting_confirmation: HashMap::new(),
        }
    }
}

/// A command the session task must send to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SubscriptionCommand {
    Subscribe(String),
    Unsubscribe(String),
}

/// A conversation with local subscribers.
struct WatchedConversation {
    /// Tells this subscription apart from an earlier or later one of the
    /// same channel.
    generation: u64,
    tenant_id: String,
    conversation_id: String,
    /// `Arc`, because a broadcast channel allocates all its slots up front:
    /// a pointer per slot keeps an idle conversation's buffer small.
    messages: broadcast::Sender<Arc<FanOutMessage>>,
    state: watch::Sender<ChannelState>,
    /// Whether the subscribe command was handed to the session task.
    requested: bool,
}

/// What a new local subscriber gets.
pub(super) struct Joined {
    pub(super) generation: u64,
    pub(super) messages: broadcast::Receiver<Arc<FanOutMessage>>,
    pub(super) state: watch::Receiver<ChannelState>,
    /// True when the session task must be woken to subscribe on Redis.
    pub(super) needs_subscribe: bool,
}

pub(super) struct Registry<C> {
    session: Option<Session<C>>,
    conversations: HashMap<String, WatchedConversation>,
    /// Channels whose Redis subscription the session task must reconsider.
    changed: HashSet<String>,
    next_generation: u64,
    subscriber_capacity: usize,
}

impl<C: Clone> Registry<C> {
    pub(super) fn new(subscriber_capacity: usize) -> Self {
        Self {
            session: None,
            conversations: HashMap::new(),
            changed: HashSet::new(),
            next_generation: 0,
            subscriber_capacity: subscriber_capacity.max(1),
        }
    }

    /// The connection to publish on, or why there is none.
    pub(super) fn publisher(&self) -> Result<(C, PubSubMode), FanOutError> {
        self.session
            .as_ref()
            .map(|session| (session.connection.clone(), session.mode))
            .ok_or_else(not_connected)
    }

    /// The pub/sub commands of the current connection.
    pub(super) fn mode(&self) -> Option<PubSubMode> {
        self.session.as_ref().map(|session| session.mode)
    }

    /// Conversations with at least one local subscriber.
    pub(super) fn watched_conversations(&self) -> usize {
        self.conversations.len()
    }

    pub(super) fn start_session(&mut self, session: Session<C>) {
        self.session = Some(session);
    }

    /// Ends session `session_id` if it is the current one: every
    /// subscription ends with `reason`. Returns whether it was current.
    pub(super) fn end_session(&mut self, session_id: u64, reason: &str) -> bool {
        if self.session.as_ref().map(|session| session.id) != Some(session_id) {
            return false;
        }
        self.session = None;
        self.changed.clear();
        // Dropping the senders closes every subscriber's stream after what
        // it has buffered; the state tells it why.
        for (_, conversation) in self.conversations.drain() {
            conversation
                .state
                .send_replace(ChannelState::Lost(reason.to_owned()));
        }
        true
    }

    pub(super) fn current_session(&self) -> Option<u64> {
        self.session.as_ref().map(|session| session.id)
    }

    /// Adds a local subscriber to a conversation, creating its channel when
    /// it is the first.
    pub(super) fn join(
        &mut self,
        channel: &str,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<Joined, FanOutError> {
        if self.session.is_none() {
            return Err(not_connected());
        }
        if let Some(conversation) = self.conversations.get(channel) {
            return Ok(Joined {
                generation: conversation.generation,
                messages: conversation.messages.subscribe(),
                state: conversation.state.subscribe(),
                needs_subscribe: false,
            });
        }
        self.next_generation += 1;
        let (messages, receiver) = broadcast::channel(self.subscriber_capacity);
        let (state, state_receiver) = watch::channel(ChannelState::Subscribing);
        self.conversations.insert(
            channel.to_owned(),
            WatchedConversation {
                generation: self.next_generation,
                tenant_id: tenant_id.to_owned(),
                conversation_id: conversation_id.to_owned(),
                messages,
                state,
                requested: false,
            },
        );
        self.changed.insert(channel.to_owned());
        Ok(Joined {
            generation: self.next_generation,
            messages: receiver,
            state: state_receiver,
            needs_subscribe: true,
        })
    }

    /// Called when a local subscriber of `generation` left (its receiver is
    /// already dropped). Returns true when it was the last one, so the
    /// session task must unsubscribe on Redis.
    pub(super) fn leave(&mut self, channel: &str, generation: u64) -> bool {
        let last = self.conversations.get(channel).is_some_and(|conversation| {
            conversation.generation == generation && conversation.messages.receiver_count() == 0
        });
        if last {
            self.conversations.remove(channel);
            self.changed.insert(channel.to_owned());
        }
        last
    }

    /// The commands that bring Redis in line with the local subscribers,
    /// recorded as sent.
    pub(super) fn take_commands(&mut self) -> Vec<SubscriptionCommand> {
        let Some(session) = self.session.as_mut() else {
            return Vec::new();
        };
        let mut commands = Vec::with_capacity(self.changed.len());
        for channel in self.changed.drain() {
            match self.conversations.get_mut(&channel) {
                Some(conversation) if !conversation.requested => {
                    conversation.requested = true;
                    session
                        .awaiting_confirmation
                        .entry(channel.clone())
                        .or_default()
                        .push_back(conversation.generation);
                    commands.push(SubscriptionCommand::Subscribe(channel));
                }
                Some(_) => {}
                // Harmless when Redis had no subscription (yet): the
                // server confirms an unsubscribe of anything.
                None => commands.push(SubscriptionCommand::Unsubscribe(channel)),
            }
        }
        commands
    }

    /// The server confirmed a subscribe command for `channel`.
    pub(super) fn confirm_subscribed(&mut self, session_id: u64, channel: &str) {
        let Some(session) = self.session.as_mut().filter(|s| s.id == session_id) else {
            return;
        };
        let Some(queue) = session.awaiting_confirmation.get_mut(channel) else {
            tracing::debug!(channel, "subscribe confirmation nobody waited for");
            return;
        };
        let generation = queue.pop_front();
        if queue.is_empty() {
            session.awaiting_confirmation.remove(channel);
        }
        if let Some(conversation) = self.conversations.get(channel)
            && Some(conversation.generation) == generation
        {
            conversation.state.send_replace(ChannelState::Active);
        }
    }

    /// Hands a message from Redis to the conversation's local subscribers.
    pub(super) fn deliver(&self, session_id: u64, channel: &str, message: FanOutMessage) {
        if self.current_session() != Some(session_id) {
            return;
        }
        let Some(conversation) = self.conversations.get(channel) else {
            return;
        };
        if *conversation.state.borrow() != ChannelState::Active {
            // Published before this subscription was confirmed.
            return;
        }
        if let FanOutMessage::Committed(entry) = &message
            && (entry.event.tenant_id != conversation.tenant_id
                || entry.event.conversation_id != conversation.conversation_id)
        {
            tracing::warn!(
                channel,
                event_id = %entry.event.id,
                "dropping a committed event published to another conversation's channel"
            );
            return;
        }
        // No receiver left is fine: the last one is leaving right now.
        let _ = conversation.messages.send(Arc::new(message));
    }
}

fn not_connected() -> FanOutError {
    FanOutError::Unavailable("not connected to Redis".to_owned())
}

#[cfg(test)]
mod tests {
    use tokio::sync::broadcast::error::TryRecvError;

    use super::*;
    use chatstream_core::fanout::TokenDelta;

    const SESSION: u64 = 1;

    fn connected() -> Registry<()> {
        let mut registry = Registry::new(16);
        registry.start_session(Session::new(SESSION, (), PubSubMode::Sharded));
        registry
    }

    fn delta(index: u32) -> FanOutMessage {
        FanOutMessage::Delta(TokenDelta {
            conversation_id: "c".into(),
            reply_to: "e".into(),
            index,
            text: String::new(),
        })
    }

    fn subscribe(channel: &str) -> SubscriptionCommand {
        SubscriptionCommand::Subscribe(channel.to_owned())
    }

    fn unsubscribe(channel: &str) -> SubscriptionCommand {
        SubscriptionCommand::Unsubscribe(channel.to_owned())
    }

    #[test]
    fn first_subscriber_subscribes_and_last_one_unsubscribes() {
        let mut registry = connected();
        let first = registry.join("ch", "t", "c").expect("join");
        let second = registry.join("ch", "t", "c").expect("join");
        assert!(first.needs_subscribe && !second.needs_subscribe);
        assert_eq!(registry.take_commands(), vec![subscribe("ch")]);
        assert_eq!(registry.take_commands(), vec![], "sent once");

        drop(first.messages);
        assert!(!registry.leave("ch", first.generation), "one is left");
        drop(second.messages);
        assert!(registry.leave("ch", second.generation));
        assert_eq!(registry.take_commands(), vec![unsubscribe("ch")]);
        assert_eq!(registry.watched_conversations(), 0);
    }

    #[test]
    fn messages_before_the_confirmation_are_not_delivered() {
        let mut registry = connected();
        let mut joined = registry.join("ch", "t", "c").expect("join");
        registry.take_commands();
        registry.deliver(SESSION, "ch", delta(0));
        registry.confirm_subscribed(SESSION, "ch");
        assert_eq!(*joined.state.borrow(), ChannelState::Active);
        registry.deliver(SESSION, "ch", delta(1));
        assert_eq!(joined.messages.try_recv(), Ok(Arc::new(delta(1))));
        assert_eq!(joined.messages.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn an_earlier_subscriptions_confirmation_does_not_activate_a_new_one() {
        let mut registry = connected();
        let old = registry.join("ch", "t", "c").expect("join");
        assert_eq!(registry.take_commands(), vec![subscribe("ch")]);
        drop(old.messages);
        registry.leave("ch", old.generation);
        let mut new = registry.join("ch", "t", "c").expect("join again");
        assert_eq!(
            registry.take_commands(),
            vec![subscribe("ch")],
            "the new subscriber needs its own confirmation"
        );

        registry.confirm_subscribed(SESSION, "ch");
        registry.deliver(SESSION, "ch", delta(0));
        assert_eq!(*new.state.borrow(), ChannelState::Subscribing);
        registry.confirm_subscribed(SESSION, "ch");
        registry.deliver(SESSION, "ch", delta(1));
        assert_eq!(*new.state.borrow(), ChannelState::Active);
        assert_eq!(new.messages.try_recv(), Ok(Arc::new(delta(1))));
    }

    #[test]
    fn ending_the_session_ends_every_subscription_with_the_reason() {
        let mut registry = connected();
        let mut joined = registry.join("ch", "t", "c").expect("join");
        registry.take_commands();
        registry.confirm_subscribed(SESSION, "ch");
        assert!(
            !registry.end_session(SESSION + 1, "stale"),
            "not the current session"
        );
        assert!(registry.end_session(SESSION, "gone"));
        assert_eq!(*joined.state.borrow(), ChannelState::Lost("gone".into()));
        assert_eq!(joined.messages.try_recv(), Err(TryRecvError::Closed));
        assert!(matches!(
            registry.join("ch", "t", "c"),
            Err(FanOutError::Unavailable(_))
        ));
        assert!(registry.publisher().is_err());
        registry.deliver(SESSION, "ch", delta(0));
    }

    #[test]
    fn messages_of_an_old_session_are_ignored() {
        let mut registry = connected();
        registry.end_session(SESSION, "gone");
        registry.start_session(Session::new(SESSION + 1, (), PubSubMode::Sharded));
        let mut joined = registry.join("ch", "t", "c").expect("join");
        registry.take_commands();
        registry.confirm_subscribed(SESSION, "ch");
        assert_eq!(*joined.state.borrow(), ChannelState::Subscribing);
        registry.confirm_subscribed(SESSION + 1, "ch");
        registry.deliver(SESSION, "ch", delta(0));
        assert_eq!(joined.messages.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_committed_event_of_another_tenant_is_dropped() {
        use chatstream_core::log::LogPosition;
        use chatstream_core::store::HistoryEntry;

        let mut registry = connected();
        let mut joined = registry.join("ch", "acme", "c").expect("join");
        registry.take_commands();
        registry.confirm_subscribed(SESSION, "ch");
        let entry = |tenant: &str| {
            FanOutMessage::Committed(Arc::new(HistoryEntry {
                position: LogPosition {
                    partition: 0,
                    offset: 1,
                },
                event: chatstream_test_support::conformance::user_message(tenant, "c", "hi"),
            }))
        };
        let own = entry("acme");
        registry.deliver(SESSION, "ch", entry("globex"));
        registry.deliver(SESSION, "ch", own.clone());
        assert_eq!(joined.messages.try_recv(), Ok(Arc::new(own)));
        assert_eq!(joined.messages.try_recv(), Err(TryRecvError::Empty));
    }
}
