//! Calls the tenant wants a person to approve: they wait for a client's
//! decision (run on approval, an error result on rejection or when nobody
//! decides in time), and only the tenant's own decisions count. A waiting
//! call survives a restart of the processor: a new one, run over the same
//! log and store, runs it on a later approval or expires it, once.
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chatstream_core::log::{EventLog, LogPosition};
use chatstream_core::runner::{Processor, ProcessorRunner, RunnerConfig};
use chatstream_mcp::{McpClientPool, McpProcessor};
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
    setup(approval_servers(everything), approval_config(timeout))
}

/// Tenant `acme` must approve `echo` calls to its `everything` server.
fn approval_servers(
    everything: &str,
) -> HashMap<String, Vec<chatstream_config::mcp::McpServerConfig>> {
    let servers = servers_yaml(&format!(
        "- name: everything\n  transport: {{type: stdio, command: {everything:?}, args: [stdio]}}\n  require_approval: [echo]\n"
    ));
    HashMap::from([("acme".to_owned(), servers)])
}

fn approval_config(timeout: Duration) -> chatstream_mcp::McpSettings {
    chatstream_mcp::McpSettings {
        approval_timeout_ms: timeout.as_millis() as u64,
        ..test_config()
    }
}

/// Appends and handles `request`; returns the approval request it caused,
/// after handing that back to the processor as the log would.
async fn ask(setup: &Setup, request: &Event) -> Event {
    let position = setup.log.append("acme", request).await.unwrap();
    setup.processor.handle(request, position).await.unwrap();
    let (asked, position) = approval_request_of(setup.log.as_ref(), request).await;
    assert!(
        results_of(setup.log.as_ref(), request).await.is_empty(),
        "nothing runs before the decision"
    );
    setup.processor.handle(&asked, position).await.unwrap();
    asked
}

/// The `ToolCallApprovalRequested` that `request` caused, and where it is.
async fn approval_request_of(log: &dyn EventLog, request: &Event) -> (Event, LogPosition) {
    let records = log.read(0, 0, 10_000).await.unwrap();
    records
        .iter()
        .map(|r| (codec::decode(&r.value).unwrap(), r.position))
        .find(|(e, _)| {
            e.causation_id == request.id
                && matches!(e.payload, Some(Payload::ToolCallApprovalRequested(_)))
        })
        .expect("an approval request")
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

/// An mcp processor as a process runs it: its own pool, under a runner.
struct Running {
    processor: Arc<McpProcessor>,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(setup: &Setup, everything: &str, timeout: Duration) -> Running {
    let pool = McpClientPool::new(approval_servers(everything), approval_config(timeout));
    let processor = Arc::new(McpProcessor::new(
        setup.log.clone(),
        setup.store.clone(),
        Arc::new(pool),
    ));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let runner = ProcessorRunner::new(
        setup.log.clone(),
        processor.clone(),
        RunnerConfig::default(),
    );
    let stop = shutdown.clone();
    let task = tokio::spawn(async move { runner.run(stop).await.unwrap() });
    Running {
        processor,
        shutdown,
        task,
    }
}

/// Stops the runner and drops the processor, timers and all, as a crash
/// or a restart would.
async fn stop(running: Running) {
    running.shutdown.cancel();
    running.task.await.unwrap();
    let processor = Arc::try_unwrap(running.processor)
        .ok()
        .expect("the runner let go of the processor");
    drop(processor);
}

/// Waits until the runner told the processor its partition (so it resumed
/// what waited there), then checks how many calls wait.
async fn resumed(running: &Running, waiting: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !running.processor.owns_partitions() {
        assert!(tokio::time::Instant::now() < deadline, "never assigned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(running.processor.waiting_approvals(), waiting);
}

/// Waits until the mcp group committed everything on the log.
async fn caught_up(log: &dyn EventLog) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let end = log.end_offset(0).await.unwrap();
        let committed = log.committed(McpProcessor::NAME, 0).await.unwrap();
        if committed == Some(end) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mcp group did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The request's results once there is one (or after 20 s).
async fn results_once_settled(
    log: &dyn EventLog,
    request: &Event,
) -> Vec<(Event, chatstream_schemas::pb::events::ToolCallCompleted)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let results = results_of(log, request).await;
        if !results.is_empty() || tokio::time::Instant::now() > deadline {
            return results;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks for approval of an `echo` call under a first processor, then stops
/// it with the call waiting.
async fn ask_then_stop(setup: &Setup, everything: &str, timeout: Duration, text: &str) -> Event {
    let first = start(setup, everything, timeout);
    let request = tool_request(
        "acme",
        "everything",
        "echo",
        &format!(r#"{{"message":"{text}"}}"#),
    );
    setup.log.append("acme", &request).await.unwrap();
    approval_request_of_eventually(setup.log.as_ref(), &request).await;
    caught_up(setup.log.as_ref()).await;
    assert_eq!(first.processor.waiting_approvals(), 1);
    stop(first).await;
    assert!(results_of(setup.log.as_ref(), &request).await.is_empty());
    request
}

async fn approval_request_of_eventually(log: &dyn EventLog, request: &Event) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !log.read(0, 0, 10_000).await.unwrap().iter().any(|r| {
        let event = codec::decode(&r.value).unwrap();
        event.causation_id == request.id
            && matches!(event.payload, Some(Payload::ToolCallApprovalRequested(_)))
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no approval request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_call_approved_after_a_restart_runs_once() {
    let Some((everything, _)) = real_servers() else {
        return;
    };
    let timeout = Duration::from_secs(60);
    let setup = approval_setup(&everything, timeout);
    let request = ask_then_stop(&setup, &everything, timeout, "after restart").await;

    let second = start(&setup, &everything, timeout);
    // Nothing new on the log: the wait resumes from what is there.
    resumed(&second, 1).await;
    // Another tenant's decision on the call settles nothing.
    let globex = decision("globex", &request, true);
    setup.log.append("globex", &globex).await.unwrap();
    caught_up(setup.log.as_ref()).await;
    assert!(results_of(setup.log.as_ref(), &request).await.is_empty());
    assert_eq!(second.processor.waiting_approvals(), 1);

    let approval = decision("acme", &request, true);
    setup.log.append("acme", &approval).await.unwrap();
    let results = results_once_settled(setup.log.as_ref(), &request).await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(!results[0].1.is_error, "{:?}", results[0].1);
    assert!(results[0].1.content_text.contains("after restart"));
    caught_up(setup.log.as_ref()).await;
    // Redelivered (a crash before the commit), the approval runs nothing again.
    second
        .processor
        .handle(
            &approval,
            LogPosition {
                partition: 0,
                offset: 0,
            },
        )
        .await
        .unwrap();
    stop(second).await;

    // Nor does a third run resume anything.
    let third = start(&setup, &everything, timeout);
    resumed(&third, 0).await;
    stop(third).await;
    assert_eq!(results_of(setup.log.as_ref(), &request).await.len(), 1);
}

#[tokio::test]
async fn a_call_nobody_approves_expires_once_after_a_restart() {
    let Some((everything, _)) = real_servers() else {
        return;
    };
    let timeout = Duration::from_millis(1500);
    let setup = approval_setup(&everything, timeout);
    let request = ask_then_stop(&setup, &everything, timeout, "never").await;

    let second = start(&setup, &everything, timeout);
    let results = results_once_settled(setup.log.as_ref(), &request).await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].1.error_kind, "rejected");
    assert!(results[0].1.content_text.contains("approved"));
    // A late approval does not run it, and a restart does not expire it again.
    setup
        .log
        .append("acme", &decision("acme", &request, true))
        .await
        .unwrap();
    caught_up(setup.log.as_ref()).await;
    stop(second).await;
    let third = start(&setup, &everything, timeout);
    caught_up(setup.log.as_ref()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(third).await;
    assert_eq!(results_of(setup.log.as_ref(), &request).await.len(), 1);
}

#[tokio::test]
async fn an_approval_given_in_time_while_the_processor_was_down_counts() {
    let Some((everything, _)) = real_servers() else {
        return;
    };
    let timeout = Duration::from_millis(1500);
    let setup = approval_setup(&everything, timeout);
    let request = ask_then_stop(&setup, &everything, timeout, "decided while down").await;
    setup
        .log
        .append("acme", &decision("acme", &request, true))
        .await
        .unwrap();
    // The deadline passes before any processor sees the approval.
    tokio::time::sleep(timeout + Duration::from_millis(200)).await;

    let second = start(&setup, &everything, timeout);
    let results = results_once_settled(setup.log.as_ref(), &request).await;
    caught_up(setup.log.as_ref()).await;
    stop(second).await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(!results[0].1.is_error, "{:?}", results[0].1);
    assert_eq!(results_of(setup.log.as_ref(), &request).await.len(), 1);
}
