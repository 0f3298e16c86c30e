//! Calls the tenant wants a person to approve: they wait for a client's
//! decision (run on approval, an error result on rejection or when nobody
//! decides in time), and only the tenant's own decisions count.
mod support;

use std::collections::HashMap;
use std::time::Duration;

use chatstream_runtime::log::LogPosition;
use chatstream_runtime::runner::Processor;
use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::ids::new_event_id;
use chatstream_schemas::pb::events::{ToolCallApprovalDecided, event::Payload};
use chatstream_schemas::{Event, codec};
use support::*;

const AT: LogPosition = LogPosition {
    partition: 0,
    offset: 0,
};

fn approval_setup(everything: &str, timeout: Duration) -> Setup {
    let servers = servers_yaml(&format!(
        "- name: everything\n  transport: {{type: stdio, command: {everything:?}, args: [stdio]}}\n  require_approval: [echo]\n"
    ));
    let config = chatstream_mcp::McpConfig {
        approval_timeout: timeout,
        ..test_config()
    };
    setup(HashMap::from([("acme".to_owned(), servers)]), config)
}

/// Appends and handles `request`; returns the approval request it caused,
/// after handing that back to the processor as the log would.
async fn ask(setup: &Setup, request: &Event) -> Event {
    setup.log.append("acme", request).await.unwrap();
    setup.processor.handle(request, AT).await.unwrap();
    let records = setup.log.read(0, 0, 10_000).await.unwrap();
    let asked = records
        .iter()
        .map(|r| codec::decode(&r.value).unwrap())
        .find(|e| {
            e.causation_id == request.id
                && matches!(e.payload, Some(Payload::ToolCallApprovalRequested(_)))
        })
        .expect("an approval request");
    assert!(
        results_of(setup.log.as_ref(), request).await.is_empty(),
        "nothing runs before the decision"
    );
    setup.processor.handle(&asked, AT).await.unwrap();
    asked
}

fn decision(tenant: &str, request: &Event, approved: bool) -> Event {
    new_event(
        new_event_id(),
        EventContext {
            tenant_id: tenant,
            conversation_id: &request.conversation_id,
            causation_id: "",
            correlation_id: "",
        },
        Payload::ToolCallApprovalDecided(Box::new(ToolCallApprovalDecided {
            call_id: "call-echo".into(),
            request_event_id: request.id.clone(),
            approved,
            reason: if approved { "" } else { "not today" }.into(),
            decided_by_key_id: "test".into(),
        })),
    )
}

#[tokio::test]
async fn an_approved_call_runs_and_a_rejected_one_does_not() {
    let Some((everything, _)) = real_servers() else {
        return;
    };
    let setup = approval_setup(&everything, Duration::from_secs(30));

    let approved = tool_request("acme", "everything", "echo", r#"{"message":"ok'd"}"#);
    ask(&setup, &approved).await;
    // Another tenant's decision on acme's call is ignored.
    setup
        .processor
        .handle(&decision("globex", &approved, true), AT)
        .await
        .unwrap();
    assert!(results_of(setup.log.as_ref(), &approved).await.is_empty());
    setup
        .processor
        .handle(&decision("acme", &approved, true), AT)
        .await
        .unwrap();
    let results = results_of(setup.log.as_ref(), &approved).await;
    assert_eq!(results.len(), 1);
    assert!(!results[0].1.is_error, "{:?}", results[0].1);
    assert!(results[0].1.content_text.contains("ok'd"));

    let rejected = tool_request("acme", "everything", "echo", r#"{"message":"no"}"#);
    ask(&setup, &rejected).await;
    setup
        .processor
        .handle(&decision("acme", &rejected, false), AT)
        .await
        .unwrap();
    // A second decision on a settled call changes nothing.
    setup
        .processor
        .handle(&decision("acme", &rejected, true), AT)
        .await
        .unwrap();
    let results = results_of(setup.log.as_ref(), &rejected).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].1.error_kind, "rejected");
    assert!(results[0].1.content_text.contains("not today"));

    // Tools outside the approval list run straight away.
    let sum = call(
        &setup,
        &tool_request("acme", "everything", "get-sum", r#"{"a":1,"b":1}"#),
    )
    .await;
    assert!(!sum.is_error, "{sum:?}");
}

#[tokio::test]
async fn a_call_nobody_approves_in_time_fails() {
    let Some((everything, _)) = real_servers() else {
        return;
    };
    let setup = approval_setup(&everything, Duration::from_millis(300));
    let request = tool_request("acme", "everything", "echo", r#"{"message":"late"}"#);
    ask(&setup, &request).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let results = loop {
        let results = results_of(setup.log.as_ref(), &request).await;
        if !results.is_empty() || tokio::time::Instant::now() > deadline {
            break results;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(results.len(), 1, "one result once the wait expired");
    assert_eq!(results[0].1.error_kind, "rejected");
    assert!(
        results[0].1.content_text.contains("approved"),
        "{:?}",
        results[0].1
    );

    // A late approval does not run it.
    setup
        .processor
        .handle(&decision("acme", &request, true), AT)
        .await
        .unwrap();
    assert_eq!(results_of(setup.log.as_ref(), &request).await.len(), 1);
}
