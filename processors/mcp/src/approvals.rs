//! Calls a tenant wants a person to approve: each waits, keyed by tenant
//! and request event, for a client's decision or its deadline, whichever
//! comes first; only the first of the two settles the call.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chatstream_schemas::Event;
use chatstream_schemas::pb::events::ToolCallRequested;

/// A call waiting for approval: its request event and the request.
#[derive(Debug, Clone)]
pub struct PendingCall {
    pub request_event: Event,
    pub request: ToolCallRequested,
}

#[derive(Debug, Default, Clone)]
pub struct PendingApprovals {
    calls: Arc<Mutex<HashMap<(String, String), PendingCall>>>,
}

impl PendingApprovals {
    pub fn wait_for(&self, call: PendingCall) {
        let key = (
            call.request_event.tenant_id.clone(),
            call.request_event.id.clone(),
        );
        self.calls.lock().expect("approvals lock").insert(key, call);
    }

    /// Takes the tenant's waiting call, if it still waits. A decision from
    /// another tenant finds nothing: the key includes the tenant.
    pub fn settle(&self, tenant_id: &str, request_event_id: &str) -> Option<PendingCall> {
        self.calls
            .lock()
            .expect("approvals lock")
            .remove(&(tenant_id.to_owned(), request_event_id.to_owned()))
    }
}
