//! Calls a tenant wants a person to approve: each waits, keyed by tenant
//! and request event, for a client's decision or its deadline, whichever
//! comes first; only the first of the two settles the call. This is a
//! cache of what the log says: `recovery` refills it after a restart.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chatstream_schemas::Event;
use chatstream_schemas::pb::events::{
    ToolCallApprovalRequested, ToolCallRequested, event::Payload,
};
use tokio_util::sync::CancellationToken;

/// A call waiting for approval: its request event, the request and when
/// the wait ends.
#[derive(Debug, Clone)]
pub struct PendingCall {
    pub request_event: Event,
    pub request: ToolCallRequested,
    /// Unix milliseconds; a decision after this does not count.
    pub expires_at_ms: i64,
    /// The log partition the call's events are on (its tenant's).
    pub partition: u32,
}

impl PendingCall {
    /// The waiting call that `asked` (a `ToolCallApprovalRequested` event)
    /// stands for; its request event is rebuilt from the copy it carries.
    pub fn from_approval_request(
        asked_event: &Event,
        asked: &ToolCallApprovalRequested,
        partition: u32,
    ) -> Self {
        let request = asked.request.clone().unwrap_or_default();
        let request_event = Event {
            id: asked_event.causation_id.clone(),
            r#type: chatstream_schemas::event::TOOL_CALL_REQUESTED.into(),
            payload: Some(Payload::ToolCallRequested(Box::new(request.clone()))),
            ..asked_event.clone()
        };
        Self {
            request_event,
            request,
            expires_at_ms: asked.expires_at_ms,
            partition,
        }
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_at_ms
    }
}

type Key = (String, String);

struct Waiting {
    call: PendingCall,
    /// Cancelled once the call no longer waits, to stop its deadline timer.
    timer: CancellationToken,
}

#[derive(Default, Clone)]
pub struct PendingApprovals {
    calls: Arc<Mutex<HashMap<Key, Waiting>>>,
}

impl PendingApprovals {
    /// Starts the wait for `call` and returns the token its deadline timer
    /// stops on, or `None` when the call waits already (its timer runs).
    pub fn wait_for(
        &self,
        call: PendingCall,
        stop: &CancellationToken,
    ) -> Option<CancellationToken> {
        let key = (
            call.request_event.tenant_id.clone(),
            call.request_event.id.clone(),
        );
        let mut calls = self.calls.lock().expect("approvals lock");
        if calls.contains_key(&key) {
            return None;
        }
        let timer = stop.child_token();
        calls.insert(
            key,
            Waiting {
                call,
                timer: timer.clone(),
            },
        );
        Some(timer)
    }

    /// Takes the tenant's waiting call, if it still waits, and stops its
    /// timer; whoever takes it settles it. A decision from another tenant
    /// finds nothing: the key includes the tenant.
    pub fn settle(&self, tenant_id: &str, request_event_id: &str) -> Option<PendingCall> {
        let waiting = self
            .calls
            .lock()
            .expect("approvals lock")
            .remove(&(tenant_id.to_owned(), request_event_id.to_owned()))?;
        waiting.timer.cancel();
        Some(waiting.call)
    }

    /// Forgets the calls of partitions outside `owned` (another member
    /// owns them now and resumes their waits) and stops their timers.
    pub fn keep_partitions(&self, owned: &[u32]) {
        self.calls
            .lock()
            .expect("approvals lock")
            .retain(|_, waiting| {
                let keep = owned.contains(&waiting.call.partition);
                if !keep {
                    waiting.timer.cancel();
                }
                keep
            });
    }

    pub fn len(&self) -> usize {
        self.calls.lock().expect("approvals lock").len()
    }
}
