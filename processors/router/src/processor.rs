//! Answers each user message once, with the conversation so far and the
//! tenant's tools offered to the model: deltas go to the fan-out as they
//! stream, the result goes to the log with an id derived from the user
//! message's id, and the side effect is marked done so a redelivery after
//! a crash neither calls the model nor appends again. With configured
//! providers, every routing decision and the turn's usage are events too,
//! with derived ids, so a redelivery re-produces the same ids and
//! consumers (budgets included) count each turn once.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use chatstream_core::fanout::{FanOut, FanOutMessage, TokenDelta};
use chatstream_core::log::{EventLog, LogPosition};
use chatstream_core::runner::{ProcessError, Processor};
use chatstream_core::store::ProjectionStore;
use chatstream_core::store::is_first_send;
use chatstream_core::tools::{ToolCatalog, ToolDescriptor};
use chatstream_schemas::Event;
use chatstream_schemas::event::derived_event;
use chatstream_schemas::pb::events::{ModelUsageRecorded, TokenUsage, event::Payload};

use crate::accounting::{BudgetLedger, month_of};
use crate::context;
use crate::model::ChatModel;
use crate::routing::Routing;
use crate::routing::turn::{TurnObserver, TurnRequest, TurnUsage, run_turn};
use crate::tools::{OfferedTools, TurnStep};

/// Derived-id index of a turn's `ModelUsageRecorded` (the answer is 0).
/// Far from the small indexes other outputs of the same message may use.
pub const USAGE_EVENT_INDEX: u32 = 100;
/// Longest a turn waits for the tenant's tool list, unless set otherwise.
const TOOL_LISTING_WAIT: Duration = Duration::from_secs(10);
/// Derived-id index of a turn's first routing event; the others follow.
pub const ROUTING_EVENT_FIRST_INDEX: u32 = 101;

pub struct ModelRouter {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    fanout: Arc<dyn FanOut>,
    routing: Arc<Routing>,
    /// Whether routing and usage events are recorded (configured providers)
    /// or only the answer (the built-in mock of `chatstream dev`).
    records_routing: bool,
    budgets: BudgetLedger,
    /// The tenants' tools offered to models.
    tools: Arc<dyn ToolCatalog>,
    /// Recent events of the conversations being answered.
    history: context::HistoryCache,
    /// Longest a turn waits for the tenant's tool list.
    tool_listing_wait: Duration,
}

/// No tools for anyone: a router without MCP servers.
struct NoTools;

#[async_trait]
impl ToolCatalog for NoTools {
    async fn tools_for_tenant(&self, _tenant_id: &str) -> Vec<ToolDescriptor> {
        Vec::new()
    }
}

impl ModelRouter {
    pub const NAME: &'static str = "router";

    /// Answers every message with `model`, recording only the answers.
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        fanout: Arc<dyn FanOut>,
        model: Arc<dyn ChatModel>,
    ) -> Self {
        let routing = Arc::new(Routing::single(model));
        let mut router = Self::with_routing(log, store, fanout, routing);
        router.records_routing = false;
        router
    }

    /// Routes by tenant policy over configured providers.
    pub fn with_routing(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        fanout: Arc<dyn FanOut>,
        routing: Arc<Routing>,
    ) -> Self {
        Self {
            budgets: BudgetLedger::new(store.clone()),
            log,
            store,
            fanout,
            routing,
            records_routing: true,
            tools: Arc::new(NoTools),
            history: context::HistoryCache::default(),
            tool_listing_wait: TOOL_LISTING_WAIT,
        }
    }

    /// Offers each tenant's tools from `tools` to its models.
    pub fn with_tools(mut self, tools: Arc<dyn ToolCatalog>) -> Self {
        self.tools = tools;
        self
    }

    /// How long a turn waits for the tenant's tool list (10 s by default).
    pub fn with_tool_listing_wait(mut self, wait: Duration) -> Self {
        self.tool_listing_wait = wait;
        self
    }

    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    /// The tenant's tools, or none when listing them takes longer than
    /// the tool listing wait (a server starting slowly or hanging must not
    /// hold the answer). The listing goes on and fills the cache for the
    /// next turn.
    async fn tenant_tools(&self, tenant_id: &str) -> Vec<ToolDescriptor> {
        let (catalog, tenant) = (self.tools.clone(), tenant_id.to_owned());
        // Polled here (no task hop when the list is cached); handed to a
        // task of its own only when it outlasts the wait.
        let mut listing = Box::pin(async move { catalog.tools_for_tenant(&tenant).await });
        match tokio::time::timeout(self.tool_listing_wait, &mut listing).await {
            Ok(tools) => tools,
            Err(_) => {
                tokio::spawn(listing);
                tracing::warn!(
                    tenant_id,
                    wait_ms = self.tool_listing_wait.as_millis() as u64,
                    "the tenant's tools are slow to list; answering without them"
                );
                Vec::new()
            }
        }
    }

    async fn append_derived(
        &self,
        cause: &Event,
        index: u32,
        payload: Payload,
    ) -> Result<(), ProcessError> {
        self.append_all_derived(cause, vec![derived_event(cause, index, payload)])
            .await
    }

    /// Appends events derived from `cause` together (one commit on the
    /// embedded log), in order.
    async fn append_all_derived(
        &self,
        cause: &Event,
        events: Vec<Event>,
    ) -> Result<(), ProcessError> {
        self.log
            .append_all(&cause.tenant_id, &events)
            .await
            .map(|_| ())
            .map_err(|e| ProcessError::Retryable(e.to_string()))
    }

    /// Tokens left this month, when the tenant has a budget.
    async fn budget_remaining(
        &self,
        tenant_id: &str,
        month: &str,
    ) -> Result<Option<u64>, ProcessError> {
        let Some(budget) = self.routing.monthly_budget(tenant_id) else {
            return Ok(None);
        };
        let spent = self
            .budgets
            .spent(tenant_id, month)
            .await
            .map_err(|e| ProcessError::Retryable(e.to_string()))?;
        Ok(Some(budget.saturating_sub(spent)))
    }
}

/// Streams a turn's tokens and records its routing events.
struct TurnReporter<'a> {
    router: &'a ModelRouter,
    user_message: &'a Event,
    next_index: AtomicU32,
    /// When the router started this step of the turn.
    started: Instant,
    /// How long after `started` the first token went out (the usage
    /// event's `time_to_first_token_ms`).
    first_token: OnceLock<Duration>,
}

#[async_trait]
impl TurnObserver for TurnReporter<'_> {
    async fn record(&self, payload: Payload) -> Result<(), ProcessError> {
        if !self.router.records_routing {
            return Ok(());
        }
        let index = self.next_index.fetch_add(1, Ordering::Relaxed);
        self.router
            .append_derived(self.user_message, index, payload)
            .await
    }

    async fn delta(&self, index: u32, text: &str) {
        self.first_token.get_or_init(|| self.started.elapsed());
        let message = self.user_message;
        let delta = TokenDelta {
            conversation_id: message.conversation_id.clone(),
            reply_to: message.id.clone(),
            index,
            text: text.to_owned(),
        };
        let published = self
            .router
            .fanout
            .publish(
                &message.tenant_id,
                &message.conversation_id,
                FanOutMessage::Delta(delta),
            )
            .await;
        if let Err(error) = published {
            tracing::warn!(event_id = %message.id, %error, "could not publish token delta");
        }
    }
}

fn usage_payload(usage: &TurnUsage, first_token: Option<Duration>) -> Payload {
    let tokens = usage.usage;
    Payload::ModelUsageRecorded(Box::new(ModelUsageRecorded {
        model: usage.model.clone(),
        provider: usage.provider.clone(),
        usage: Some(TokenUsage {
            prompt_tokens: tokens.prompt_tokens,
            completion_tokens: tokens.completion_tokens,
            total_tokens: tokens.prompt_tokens + tokens.completion_tokens,
        }),
        cost_micros: usage.cost_micros,
        partial: usage.partial,
        estimated: usage.estimated,
        attempts: usage.attempts,
        time_to_first_token_ms: first_token.map_or(0, |after| after.as_millis() as u64),
    }))
}

#[async_trait]
impl Processor for ModelRouter {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn handle(&self, event: &Event, position: LogPosition) -> Result<(), ProcessError> {
        let handled = self.answer(event, position).await;
        if handled.is_ok() {
            // Every event of a conversation passes here in log order (the
            // runner's ordering key is the conversation, and the cache is
            // kept per conversation): the conversations the router keeps
            // stay complete without reading the store, however turns of
            // different conversations interleave.
            self.history.observe(event, position);
        }
        handled
    }

    async fn partitions_assigned(&self, _partitions: &[u32]) {
        // Another member may have handled events of a partition this one
        // gets (back): what it kept may have gaps.
        self.history.clear();
    }
}

impl ModelRouter {
    /// Answers `event` when it starts or continues a turn.
    async fn answer(&self, event: &Event, position: LogPosition) -> Result<(), ProcessError> {
        // The step's time to first token counts from here: history and the
        // tenant's tool list are part of the wait.
        let started = Instant::now();
        let retryable =
            |e: chatstream_core::store::StoreError| ProcessError::Retryable(e.to_string());
        // A turn starts at a user message and goes on after each tool result.
        let step = match &event.payload {
            Some(Payload::UserMessageSent(sent)) => {
                if !is_first_send(self.log.as_ref(), self.store.as_ref(), event, position)
                    .await
                    .map_err(|e| ProcessError::Retryable(e.to_string()))?
                {
                    return Ok(());
                }
                TurnStep::first(&sent.text)
            }
            Some(Payload::ToolCallCompleted(done)) => TurnStep::after_tool(done),
            _ => return Ok(()),
        };
        if self
            .store
            .is_processed(Self::NAME, &event.id)
            .await
            .map_err(retryable)?
        {
            return Ok(());
        }

        let history = context::history_before(self.store.as_ref(), &self.history, event, position)
            .await
            .map_err(retryable)?;
        // At the maximum depth the model must answer in words.
        let tools = if step.may_call_tools() {
            OfferedTools::new(&self.tenant_tools(&event.tenant_id).await)
        } else {
            OfferedTools::default()
        };
        let month = month_of(SystemTime::now());
        let request = TurnRequest {
            event_id: event.id.clone(),
            tenant_id: event.tenant_id.clone(),
            conversation_id: event.conversation_id.clone(),
            messages: context::messages(&history, event, &tools),
            requested_model: context::requested_model(&history, event),
            tools,
            budget_remaining: self.budget_remaining(&event.tenant_id, &month).await?,
        };
        let reporter = TurnReporter {
            router: self,
            user_message: event,
            next_index: AtomicU32::new(ROUTING_EVENT_FIRST_INDEX),
            started,
            first_token: OnceLock::new(),
        };
        let outcome = run_turn(&self.routing, &request, &reporter).await?;

        if let Some(usage) = &outcome.usage {
            let tokens = usage.usage;
            metrics::counter!("chatstream_router_tokens_total", "model" => usage.model.clone(), "kind" => "prompt")
                .increment(u64::from(tokens.prompt_tokens));
            metrics::counter!("chatstream_router_tokens_total", "model" => usage.model.clone(), "kind" => "completion")
                .increment(u64::from(tokens.completion_tokens));
        }
        // The usage goes before the answer, in the same append (one commit
        // on the embedded log, queued in order on Kafka): a redelivery's
        // copies have the same ids, so nothing is charged or answered twice.
        let mut outputs = Vec::with_capacity(2);
        let charge = match &outcome.usage {
            Some(usage) if self.records_routing => {
                outputs.push(derived_event(
                    event,
                    USAGE_EVENT_INDEX,
                    usage_payload(usage, reporter.first_token.get().copied()),
                ));
                Some(
                    u64::from(usage.usage.prompt_tokens) + u64::from(usage.usage.completion_tokens),
                )
            }
            _ => None,
        };
        outputs.push(derived_event(event, 0, step.finish(outcome.answer)));
        self.append_all_derived(event, outputs).await?;
        if let Some(total) = charge {
            self.budgets
                .charge(&event.tenant_id, &month, &event.id, total);
        }
        self.store
            .mark_processed(Self::NAME, &event.id)
            .await
            .map_err(retryable)?;
        Ok(())
    }
}
