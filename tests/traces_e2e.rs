//! OpenTelemetry traces end to end: the real binary exports over OTLP/gRPC
//! to a real receiver this test serves (the OTLP `TraceService` over a real
//! socket), and one user message makes one trace, continuing the client's
//! `traceparent`, from the gRPC edge through the log append, the router's
//! handling and the model call, to the projector and the fan-out.
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatstream_schemas::pb::gateway as pb;
use futures::SinkExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use support::{Platform, WAIT, authed};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The client's trace: the test plays the caller whose span sends the message.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// A span as received, flattened for assertions.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: SpanKind,
    attributes: HashMap<String, String>,
}

impl ReceivedSpan {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The OTLP receiver: keeps every span exported to it.
#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| value_text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind(),
                        name: span.name,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| {
                                let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                                (kv.key.clone(), value_text(value))
                            })
                            .collect(),
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(array)) => {
            let items: Vec<String> = array
                .values
                .iter()
                .map(|v| value_text(v.value.as_ref()))
                .collect();
            format!("[{}]", items.join(","))
        }
        _ => String::new(),
    }
}

/// Serves the OTLP TraceService on a free port; returns its endpoint.
async fn start_receiver(receiver: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the OTLP receiver");
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{address}")
}

/// The span of `spans` that `matches`, a child of `parent`; the error
/// names what was there.
fn child_of<'a>(
    spans: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    what: &str,
    matches: impl Fn(&ReceivedSpan) -> bool,
) -> Result<&'a ReceivedSpan, String> {
    let children: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.parent_span_id == parent.span_id)
        .collect();
    children
        .iter()
        .copied()
        .find(|span| matches(span))
        .ok_or_else(|| {
            let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
            format!(
                "no {what} under {:?} (its children: {names:?})",
                parent.name
            )
        })
}

fn check(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what()) }
}

/// The spans received so far in the trace `trace_id`.
fn spans_of(receiver: &Receiver, trace_id: &str) -> Vec<ReceivedSpan> {
    receiver
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .cloned()
        .collect()
}

/// Polls until `check` accepts the spans of `trace_id` (they arrive in
/// batches, in no set order), and returns them; fails with `check`'s last
/// complaint at the deadline.
async fn wait_for_trace(
    receiver: &Receiver,
    trace_id: &str,
    check: impl Fn(&[ReceivedSpan]) -> Result<(), String>,
) -> Vec<ReceivedSpan> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let spans = spans_of(receiver, trace_id);
        match check(&spans) {
            Ok(()) => return spans,
            Err(problem) if tokio::time::Instant::now() >= deadline => {
                panic!("{problem}; the trace's spans: {spans:#?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Prints the span tree under `parent` (with `CHATSTREAM_TEST_PRINT_TRACE`
/// set, for a person reading the test's output).
fn print_tree(spans: &[ReceivedSpan], parent: &str, depth: usize) {
    for span in spans.iter().filter(|s| s.parent_span_id == parent) {
        let mut notes = String::new();
        for key in [
            "messaging.consumer.group.name",
            "chatstream.event.type",
            "gen_ai.request.model",
        ] {
            if let Some(value) = span.attribute(key) {
                notes += &format!(" {key}={value}");
            }
        }
        println!(
            "{}{} [{:?}]{notes}",
            "  ".repeat(depth),
            span.name,
            span.kind
        );
        print_tree(spans, &span.span_id, depth + 1);
    }
}

/// The whole turn of the user message `event_id`, sent with the client
/// span `CLIENT_SPAN_ID` as parent, in one trace.
fn check_turn(spans: &[ReceivedSpan], event_id: &str) -> Result<(), String> {
    check(
        spans.iter().all(|span| span.service == "chatstream-e2e"),
        || "OTEL_SERVICE_NAME does not name every span's service".into(),
    )?;
    // The edge continues the client's trace.
    let edge = spans
        .iter()
        .find(|span| span.parent_span_id == CLIENT_SPAN_ID)
        .ok_or("no span whose parent is the client's")?;
    check(
        edge.name == "chatstream.gateway.v1.ChatService/SendMessage"
            && edge.kind == SpanKind::Server
            && edge.attribute("rpc.system") == Some("grpc")
            && edge.attribute("rpc.service") == Some("chatstream.gateway.v1.ChatService")
            && edge.attribute("rpc.method") == Some("SendMessage")
            && edge.attribute("rpc.grpc.status_code") == Some("0"),
        || format!("the edge span is not the SendMessage server span: {edge:#?}"),
    )?;

    // The append of the user message (with its conversation's opening).
    let append = child_of(spans, edge, "log append", |s| {
        s.name == "send chatstream.events"
    })?;
    check(
        append.kind == SpanKind::Producer
            && append.attribute("messaging.operation.type") == Some("send")
            && append.attribute("messaging.system") == Some("chatstream_embedded")
            && append.attribute("messaging.destination.name") == Some("chatstream.events")
            && append.attribute("messaging.batch.message_count") == Some("2"),
        || format!("the append span lacks its messaging attributes: {append:#?}"),
    )?;

    // The router handles the user message as a child of its append.
    let routed = child_of(spans, append, "router handling", |s| {
        s.attribute("messaging.consumer.group.name") == Some("router")
            && s.attribute("messaging.message.id") == Some(event_id)
    })?;
    check(
        routed.name == "process chatstream.events"
            && routed.kind == SpanKind::Consumer
            && routed.attribute("messaging.operation.type") == Some("process")
            && routed.attribute("messaging.destination.name") == Some("chatstream.events")
            && routed
                .attribute("messaging.destination.partition.id")
                .is_some(),
        || format!("the router's span is not a messaging process span: {routed:#?}"),
    )?;

    // The model call, with the GenAI attributes.
    let model_call = child_of(spans, routed, "model call", |s| {
        s.attribute("gen_ai.operation.name") == Some("chat")
    })?;
    let output_tokens: u32 = model_call
        .attribute("gen_ai.usage.output_tokens")
        .and_then(|tokens| tokens.parse().ok())
        .unwrap_or(0);
    check(
        model_call.name == "chat mock"
            && model_call.kind == SpanKind::Client
            && model_call.attribute("gen_ai.request.model") == Some("mock")
            && model_call.attribute("gen_ai.response.model") == Some("mock")
            && model_call.attribute("gen_ai.provider.name") == Some("mock")
            && model_call.attribute("gen_ai.usage.input_tokens").is_some()
            && output_tokens > 0
            && model_call.attribute("gen_ai.response.finish_reasons") == Some("[stop]"),
        || format!("the model call lacks its GenAI attributes: {model_call:#?}"),
    )?;

    // The answer is appended by the router's handling and carries the
    // trace on: the projector records it and publishes it to the fan-out.
    let projected = spans
        .iter()
        .filter(|s| s.parent_span_id == routed.span_id && s.name == "send chatstream.events")
        .flat_map(|append| {
            spans.iter().filter(|s| {
                s.parent_span_id == append.span_id
                    && s.attribute("messaging.consumer.group.name")
                        == Some("conversation-projector")
            })
        })
        .find(|s| s.attribute("chatstream.event.type") == Some("chatstream.assistant_message.v1"))
        .ok_or("no projector handling of the answer under the router's append")?;
    child_of(spans, projected, "fan-out publish", |s| {
        s.name == "publish fanout" && s.kind == SpanKind::Producer
    })?;
    Ok(())
}

/// Starts the platform exporting to a new receiver.
async fn traced_platform() -> (Platform, Receiver) {
    let receiver = Receiver::default();
    let endpoint = start_receiver(receiver.clone()).await;
    let platform = Platform::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "chatstream-e2e"),
        // Exported every 50 ms, so the test waits little.
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    (platform, receiver)
}

#[tokio::test]
async fn one_trace_follows_a_message_from_the_edge_through_the_router_to_the_fanout() {
    let (platform, receiver) = traced_platform().await;
    let mut client = platform.grpc().await;
    let mut request = authed(
        pb::SendMessageRequest {
            text: "trace me".into(),
            ..Default::default()
        },
        platform.key("acme"),
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    let ack = client
        .send_message(request)
        .await
        .expect("the message is acked")
        .into_inner();

    let spans = wait_for_trace(&receiver, TRACE_ID, |spans| {
        check_turn(spans, &ack.event_id)
    })
    .await;
    if std::env::var_os("CHATSTREAM_TEST_PRINT_TRACE").is_some() {
        print_tree(&spans, CLIENT_SPAN_ID, 0);
    }
}

/// The HTTP and WebSocket edges continue the caller's trace too, and a
/// request without a `traceparent` starts a trace of its own.
#[tokio::test]
async fn the_http_and_websocket_edges_continue_the_callers_trace() {
    let (platform, receiver) = traced_platform().await;
    let key = platform.key("acme");

    let http_trace = "0af7651916cd43dd8448eb211c80319c";
    let http_parent = "b7ad6b7169203331";
    let body = r#"{"model":"mock","messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         traceparent: 00-{http_trace}-{http_parent}-01\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n{body}",
        addr = platform.http_addr,
        len = body.len(),
    );
    let (status, response) = support::http_request(&platform.http_addr, &request)
        .await
        .expect("POST /v1/chat/completions");
    assert_eq!(status, 200, "{response}");
    wait_for_trace(&receiver, http_trace, |spans| {
        let edge = spans
            .iter()
            .find(|s| s.parent_span_id == http_parent)
            .ok_or("no span whose parent is the client's")?;
        check(
            edge.name == "POST /v1/chat/completions"
                && edge.kind == SpanKind::Server
                && edge.attribute("http.request.method") == Some("POST")
                && edge.attribute("http.route") == Some("/v1/chat/completions")
                && edge.attribute("http.response.status_code") == Some("200"),
            || format!("not the HTTP server span: {edge:#?}"),
        )?;
        let append = child_of(spans, edge, "log append", |s| {
            s.name == "send chatstream.events"
        })?;
        let routed = child_of(spans, append, "router handling", |s| {
            s.attribute("messaging.consumer.group.name") == Some("router")
                && s.attribute("chatstream.event.type") == Some("chatstream.user_message.sent.v1")
        })?;
        child_of(spans, routed, "model call", |s| s.name == "chat mock").map(|_| ())
    })
    .await;

    let ws_trace = "5b8aa5a2d2c872e8321cf37308d69df2";
    let ws_parent = "051581bf3cb55c13";
    let mut request = format!("ws://{}/api/v2/chat/ws", platform.http_addr)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
    headers.insert(
        "traceparent",
        format!("00-{ws_trace}-{ws_parent}-01").parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket connects");
    let send = serde_json::json!({"type": "send", "text": "hello"}).to_string();
    ws.send(Message::text(send)).await.expect("send a frame");
    wait_for_trace(&receiver, ws_trace, |spans| {
        let edge = spans
            .iter()
            .find(|s| s.parent_span_id == ws_parent)
            .ok_or("no span whose parent is the client's")?;
        check(
            edge.name == "WebSocket send"
                && edge.kind == SpanKind::Server
                && edge.attribute("chatstream.command") == Some("send"),
            || format!("not the WebSocket command span: {edge:#?}"),
        )?;
        let append = child_of(spans, edge, "log append", |s| {
            s.name == "send chatstream.events"
        })?;
        child_of(spans, append, "router handling", |s| {
            s.attribute("messaging.consumer.group.name") == Some("router")
        })
        .map(|_| ())
    })
    .await;

    // Without a traceparent, the edge starts a trace: its span has no parent.
    let mut client = platform.grpc().await;
    let request = authed(
        pb::SendMessageRequest {
            text: "no trace".into(),
            ..Default::default()
        },
        key,
    );
    let ack = client
        .send_message(request)
        .await
        .expect("acked")
        .into_inner();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let spans = receiver.spans.lock().unwrap().clone();
        let routed = spans.iter().find(|s| {
            s.attribute("messaging.consumer.group.name") == Some("router")
                && s.attribute("messaging.message.id") == Some(ack.event_id.as_str())
        });
        if let Some(routed) = routed {
            let trace: Vec<&ReceivedSpan> = spans
                .iter()
                .filter(|s| s.trace_id == routed.trace_id)
                .collect();
            if let Some(root) = trace.iter().find(|s| s.parent_span_id.is_empty()) {
                assert_eq!(root.name, "chatstream.gateway.v1.ChatService/SendMessage");
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no trace rooted at the edge for an untraced request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
