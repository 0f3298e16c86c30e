//! One load-generating connection: sends its share of the messages on
//! schedule and turns what comes back into samples. A message is followed
//! from its send through its ack (by request id) to its reply's first token
//! and committed reply (by the acked event id). Tokens and even the
//! committed reply can overtake the ack, so replies whose event id is not
//! known yet are kept until the ack names it.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::connection::Session;
use crate::protocol::{Incoming, Outgoing, ReplyOutcome, TransportError};
use crate::run_config::{LoadMode, RunConfig, WaitFor};
use crate::schedule::{ArrivalSchedule, closed_loop_start};
use crate::stats::Metric;
use crate::stats::Recorder;

/// How often unanswered messages are checked against the timeout.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// Pause between attempts to get a lost connection back.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);
/// Connection handshakes in progress at once: enough to be quick, few
/// enough not to overflow the server's accept backlog.
pub const CONCURRENT_HANDSHAKES: usize = 256;

/// What every connection of a run shares.
pub struct RunContext {
    pub config: RunConfig,
    pub text: Arc<str>,
    pub stats: Mutex<Recorder>,
    /// Tells this run's client message ids apart from earlier runs' (they
    /// are idempotency keys and never expire).
    pub run_id: String,
    /// Closed loop with `--messages`: how many have been claimed so far.
    pub claimed: AtomicU64,
    pub handshakes: Semaphore,
}

impl RunContext {
    pub fn api_key(&self, index: u32) -> &str {
        &self.config.api_keys[index as usize % self.config.api_keys.len()]
    }

    fn record(&self, f: impl FnOnce(&mut Recorder)) {
        // A panic elsewhere poisons the lock; the counts are still worth reporting.
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut stats);
    }

    async fn establish(&self, index: u32) -> Result<Session, TransportError> {
        let _permit = self.handshakes.acquire().await;
        Session::establish(
            &self.config,
            index,
            self.api_key(index),
            self.config.timeout,
        )
        .await
    }
}

/// Sets up connection `index`, tells `ready` how that went, waits for the
/// common start, then drives its messages until its share is done.
pub async fn drive_connection(
    ctx: Arc<RunContext>,
    index: u32,
    ready: mpsc::Sender<Result<(), TransportError>>,
    mut start: watch::Receiver<Option<Instant>>,
) {
    let mut session = match ctx.establish(index).await {
        Ok(session) => {
            let _ = ready.send(Ok(())).await;
            Some(session)
        }
        Err(error) => {
            let _ = ready.send(Err(error)).await;
            None
        }
    };
    drop(ready);
    let started = match start.wait_for(Option::is_some).await {
        Ok(started) => started.expect("wait_for checked it is set"),
        Err(_) => return, // the run was called off
    };
    let mut driver = Driver::new(ctx.clone(), index, started);
    while !driver.finished(Instant::now()) {
        let Some(active) = session.as_mut() else {
            match ctx.establish(index).await {
                Ok(fresh) => session = Some(fresh),
                Err(_) => {
                    driver.reconnect_failed(Instant::now());
                    tokio::time::sleep(RECONNECT_BACKOFF).await;
                }
            }
            continue;
        };
        match driver.run(active).await {
            Ok(()) => break,
            Err(error) => {
                driver.connection_lost(&error);
                session = None;
            }
        }
    }
}

/// A message sent and not acked yet.
struct AwaitingAck {
    scheduled: Instant,
    sent_at: Instant,
}

/// An acked message whose reply is not complete yet.
struct AwaitingReply {
    scheduled: Instant,
    acked_at: Instant,
    first_token_seen: bool,
}

/// Reply traffic for an event id that no ack has named yet.
struct EarlyReply {
    seen_at: Instant,
    first_token_at: Option<Instant>,
    committed: Option<(Instant, ReplyOutcome)>,
}

enum Plan {
    Open {
        schedule: ArrivalSchedule,
        /// Global number of this connection's next message. Connections take
        /// the numbers round robin, so each carries the same share of the rate.
        next: u64,
        step: u64,
    },
    Closed {
        concurrency: u32,
        wait_for: WaitFor,
        start_at: Instant,
    },
}

struct Driver {
    ctx: Arc<RunContext>,
    index: u32,
    started: Instant,
    end_at: Option<Instant>,
    plan: Plan,
    sending_done: bool,
    next_request: u64,
    awaiting_ack: HashMap<u64, AwaitingAck>,
    awaiting_reply: HashMap<String, AwaitingReply>,
    early: HashMap<String, EarlyReply>,
}

impl Driver {
    fn new(ctx: Arc<RunContext>, index: u32, started: Instant) -> Self {
        let config = &ctx.config;
        let plan = match config.mode {
            LoadMode::Open { rate } => Plan::Open {
                schedule: ArrivalSchedule::new(rate, config.ramp_up),
                next: u64::from(index),
                step: u64::from(config.connections),
            },
            LoadMode::Closed {
                concurrency,
                wait_for,
            } => Plan::Closed {
                concurrency,
                wait_for,
                start_at: started + closed_loop_start(index, config.connections, config.ramp_up),
            },
        };
        Self {
            end_at: config.duration.map(|d| started + d),
            ctx,
            index,
            started,
            plan,
            sending_done: false,
            next_request: 0,
            awaiting_ack: HashMap::new(),
            awaiting_reply: HashMap::new(),
            early: HashMap::new(),
        }
    }

    fn in_flight(&self) -> usize {
        self.awaiting_ack.len() + self.awaiting_reply.len()
    }

    fn finished(&mut self, now: Instant) -> bool {
        self.next_due(now);
        self.sending_done && self.in_flight() == 0
    }

    /// When the next message is due, or `None` when sending is over (which
    /// this also works out and remembers).
    fn next_due(&mut self, now: Instant) -> Option<Instant> {
        if self.sending_done {
            return None;
        }
        let due = match &self.plan {
            Plan::Open { schedule, next, .. } => {
                let over_budget = self.ctx.config.messages.is_some_and(|m| *next >= m);
                (!over_budget).then(|| self.started + schedule.due(*next))
            }
            Plan::Closed { start_at, .. } => Some((*start_at).max(now)),
        };
        match due {
            Some(due) if self.end_at.is_none_or(|end| due < end) => Some(due),
            _ => {
                self.sending_done = true;
                None
            }
        }
    }

    /// Whether a closed-loop connection has a free slot.
    fn has_free_slot(&self) -> bool {
        match self.plan {
            Plan::Open { .. } => true,
            Plan::Closed {
                concurrency,
                wait_for,
                ..
            } => {
                let holding = match wait_for {
                    WaitFor::Ack => self.awaiting_ack.len(),
                    WaitFor::Completion => self.in_flight(),
                };
                holding < concurrency as usize
            }
        }
    }

    /// Claims the next message: its scheduled time, or `None` when there is
    /// nothing to send right now.
    fn claim_due(&mut self, now: Instant) -> Option<Instant> {
        let due = self.next_due(now)?;
        if due > now || !self.has_free_slot() {
            return None;
        }
        match &mut self.plan {
            Plan::Open { next, step, .. } => *next += *step,
            Plan::Closed { .. } => {
                if let Some(limit) = self.ctx.config.messages
                    && self.ctx.claimed.fetch_add(1, Ordering::Relaxed) >= limit
                {
                    self.sending_done = true;
                    return None;
                }
            }
        }
        Some(due)
    }

    /// Sends every message that is due, then waits for frames, the next
    /// due time or the timeout sweep. Returns when this connection's share
    /// is done, or with the error that broke the connection.
    async fn run(&mut self, session: &mut Session) -> Result<(), TransportError> {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        let far_future = Instant::now() + Duration::from_secs(86_400 * 365);
        let wake = tokio::time::sleep_until(far_future);
        tokio::pin!(wake);
        loop {
            let now = Instant::now();
            while let Some(scheduled) = self.claim_due(now) {
                self.send(session, scheduled, now)?;
            }
            if self.finished(now) {
                return Ok(());
            }
            let wake_at = match self.next_due(now) {
                Some(due) if self.has_free_slot() => due,
                _ => far_future,
            };
            if wake.deadline() != wake_at {
                wake.as_mut().reset(wake_at);
            }
            tokio::select! {
                frame = session.connection.recv() => self.on_frame(frame?, Instant::now())?,
                _ = &mut wake => {}
                _ = sweep.tick() => self.expire(Instant::now()),
            }
        }
    }

    fn send(
        &mut self,
        session: &mut Session,
        scheduled: Instant,
        now: Instant,
    ) -> Result<(), TransportError> {
        let request = self.next_request;
        self.next_request += 1;
        session.connection.send(Outgoing::Send {
            request_id: request.to_string(),
            conversation_id: session.conversation_id.clone(),
            client_message_id: self
                .ctx
                .config
                .client_message_ids
                .then(|| format!("{}-{}-{request}", self.ctx.run_id, self.index)),
            text: self.ctx.text.clone(),
        })?;
        self.awaiting_ack.insert(
            request,
            AwaitingAck {
                scheduled,
                sent_at: now,
            },
        );
        self.ctx.record(|s| s.sent());
        Ok(())
    }

    fn on_frame(&mut self, frame: Incoming, now: Instant) -> Result<(), TransportError> {
        match frame {
            Incoming::Ack {
                request_id,
                event_id,
            } => self.on_ack(request_id, event_id, now),
            Incoming::Delta { reply_to } => self.on_first_token(reply_to, now),
            Incoming::ReplyCommitted {
                causation_id,
                outcome,
            } => self.on_reply(causation_id, outcome, now),
            Incoming::Error {
                request_id: Some(request_id),
                code,
                ..
            } => {
                let kind = format!("server:{code}");
                match self.take_awaiting_ack(Some(request_id)) {
                    Some(message) => self
                        .ctx
                        .record(|s| s.message_failed(message.scheduled.into_std(), &kind)),
                    None => self.ctx.record(|s| s.connection_error(&kind)),
                }
            }
            // An error that answers no request: the subscription stopped.
            Incoming::Error {
                request_id: None,
                code,
                message,
            } => {
                return Err(TransportError::Lost(format!(
                    "subscription stopped: {code}: {message}"
                )));
            }
            Incoming::Opened { .. } | Incoming::Subscribed | Incoming::Other => {}
        }
        Ok(())
    }

    fn take_awaiting_ack(&mut self, request_id: Option<String>) -> Option<AwaitingAck> {
        let request: u64 = request_id?.parse().ok()?;
        self.awaiting_ack.remove(&request)
    }

    fn on_ack(&mut self, request_id: Option<String>, event_id: String, now: Instant) {
        // An ack for a message that already timed out is not counted twice.
        let Some(message) = self.take_awaiting_ack(request_id) else {
            return;
        };
        let scheduled = message.scheduled;
        self.ctx
            .record(|s| s.record(Metric::Ack, scheduled.into_std(), now.into_std()));
        if self.ctx.config.ack_only {
            return;
        }
        let mut waiting = AwaitingReply {
            scheduled,
            acked_at: now,
            first_token_seen: false,
        };
        if let Some(early) = self.early.remove(&event_id) {
            if let Some(at) = early.first_token_at {
                waiting.first_token_seen = true;
                self.ctx
                    .record(|s| s.record(Metric::Ttft, scheduled.into_std(), at.into_std()));
            }
            if let Some((at, outcome)) = early.committed {
                self.finish_reply(waiting, outcome, at);
                return;
            }
        }
        self.awaiting_reply.insert(event_id, waiting);
    }

    fn on_first_token(&mut self, reply_to: String, now: Instant) {
        if let Some(waiting) = self.awaiting_reply.get_mut(&reply_to) {
            if !waiting.first_token_seen {
                waiting.first_token_seen = true;
                let scheduled = waiting.scheduled;
                self.ctx
                    .record(|s| s.record(Metric::Ttft, scheduled.into_std(), now.into_std()));
            }
        } else if !self.awaiting_ack.is_empty() {
            // Probably ahead of its ack; anything else expires in the sweep.
            self.early
                .entry(reply_to)
                .or_insert_with(|| EarlyReply::new(now))
                .first_token_at
                .get_or_insert(now);
        }
    }

    fn on_reply(&mut self, causation_id: String, outcome: ReplyOutcome, now: Instant) {
        if let Some(waiting) = self.awaiting_reply.remove(&causation_id) {
            self.finish_reply(waiting, outcome, now);
        } else if !self.awaiting_ack.is_empty() {
            self.early
                .entry(causation_id)
                .or_insert_with(|| EarlyReply::new(now))
                .committed = Some((now, outcome));
        }
    }

    fn finish_reply(&mut self, waiting: AwaitingReply, outcome: ReplyOutcome, at: Instant) {
        let scheduled = waiting.scheduled.into_std();
        match outcome {
            ReplyOutcome::Answered => self
                .ctx
                .record(|s| s.record(Metric::Completion, scheduled, at.into_std())),
            ReplyOutcome::Failed { code } => self
                .ctx
                .record(|s| s.message_failed(scheduled, &format!("reply:{code}"))),
        }
    }

    /// Fails messages that waited longer than the timeout.
    fn expire(&mut self, now: Instant) {
        let timeout = self.ctx.config.timeout;
        let mut expired = Vec::new();
        self.awaiting_ack.retain(|_, m| {
            let keep = now.duration_since(m.sent_at) < timeout;
            if !keep {
                expired.push((m.scheduled, "timeout:ack"));
            }
            keep
        });
        self.awaiting_reply.retain(|_, m| {
            let keep = now.duration_since(m.acked_at) < timeout;
            if !keep {
                expired.push((m.scheduled, "timeout:reply"));
            }
            keep
        });
        self.early
            .retain(|_, e| now.duration_since(e.seen_at) < timeout);
        if !expired.is_empty() {
            self.ctx.record(|s| {
                for (scheduled, kind) in expired {
                    s.message_failed(scheduled.into_std(), kind);
                }
            });
        }
    }

    /// Everything in flight on a broken connection is lost.
    fn connection_lost(&mut self, error: &TransportError) {
        report_lost_connection(self.index, error);
        let lost: Vec<Instant> = self
            .awaiting_ack
            .drain()
            .map(|(_, m)| m.scheduled)
            .chain(self.awaiting_reply.drain().map(|(_, m)| m.scheduled))
            .collect();
        self.early.clear();
        self.ctx.record(|s| {
            s.connection_error("connection_dropped");
            for scheduled in lost {
                s.message_failed(scheduled.into_std(), "connection_lost");
            }
        });
    }

    /// While disconnected, every message that comes due fails: in the open
    /// loop all of them (the schedule does not wait), in the closed loop
    /// the one this connection would have sent.
    fn reconnect_failed(&mut self, now: Instant) {
        self.ctx.record(|s| s.connection_error("reconnect_failed"));
        let mut failed = Vec::new();
        match self.plan {
            Plan::Open { .. } => {
                while let Some(scheduled) = self.claim_due(now) {
                    failed.push(scheduled);
                }
            }
            Plan::Closed { .. } => failed.extend(self.claim_due(now)),
        }
        self.ctx.record(|s| {
            for scheduled in failed {
                s.attempted();
                s.message_failed(scheduled.into_std(), "connect");
            }
        });
    }
}

impl EarlyReply {
    fn new(now: Instant) -> Self {
        Self {
            seen_at: now,
            first_token_at: None,
            committed: None,
        }
    }
}

/// Says why the first few connections broke; the report has the counts.
fn report_lost_connection(index: u32, error: &TransportError) {
    const SHOWN: u64 = 5;
    static SEEN: AtomicU64 = AtomicU64::new(0);
    match SEEN.fetch_add(1, Ordering::Relaxed) {
        n if n < SHOWN => eprintln!("\nconnection {index} lost: {error}"),
        SHOWN => eprintln!("\nmore connections lost; they are counted in the report"),
        _ => {}
    }
}
