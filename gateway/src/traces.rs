//! The edges' server spans (OpenTelemetry semantic conventions for RPC and
//! HTTP; WebSocket and `Converse` commands as spans of their own), each
//! continuing the trace the client sent in `traceparent`. While tracing is
//! off every function here returns a disabled span and reads no header.
use axum::http::HeaderMap;
use chatstream_core::trace::{self, TRACEPARENT, set_attribute};
use tonic::metadata::MetadataMap;
use tracing::Span;
use tracing::field::Empty;

/// The gRPC service the chat RPCs belong to.
pub const CHAT_SERVICE: &str = "chatstream.gateway.v1.ChatService";

/// The `traceparent` an HTTP request (or a WebSocket upgrade) carries.
pub fn traceparent_of_headers(headers: &HeaderMap) -> Option<String> {
    if !trace::enabled() {
        return None;
    }
    headers.get(TRACEPARENT)?.to_str().ok().map(str::to_owned)
}

/// The `traceparent` a gRPC call's metadata carries.
pub fn traceparent_of_metadata(metadata: &MetadataMap) -> Option<String> {
    if !trace::enabled() {
        return None;
    }
    metadata.get(TRACEPARENT)?.to_str().ok().map(str::to_owned)
}

/// A unary gRPC call of `service`: `<service>/<method>`, kind server.
pub fn grpc_span(service: &'static str, method: &'static str, metadata: &MetadataMap) -> Span {
    if !trace::enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "grpc",
        otel.name = format!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.grpc.status_code = Empty,
    );
    set_attribute(&span, "rpc.system", "grpc");
    set_attribute(&span, "rpc.service", service);
    set_attribute(&span, "rpc.method", method);
    trace::continue_trace(&span, traceparent_of_metadata(metadata).as_deref());
    span
}

/// Records a gRPC call's outcome on its span (`Ok` is status 0).
pub fn record_grpc_status(span: &Span, status: Option<&tonic::Status>) {
    if span.is_disabled() {
        return;
    }
    let code = status.map_or(tonic::Code::Ok, tonic::Status::code);
    span.record("rpc.grpc.status_code", code as i64);
    // Server spans count only server-side failures as errors.
    if matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
}

/// An HTTP request to `route`: `<method> <route>`, kind server.
pub fn http_span(method: &'static str, route: &'static str, headers: &HeaderMap) -> Span {
    if !trace::enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "http",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.response.status_code = Empty,
    );
    set_attribute(&span, "http.request.method", method);
    set_attribute(&span, "http.route", route);
    set_attribute(&span, "url.scheme", "http");
    trace::continue_trace(&span, traceparent_of_headers(headers).as_deref());
    span
}

/// Records an HTTP response's status on its span (5xx is an error).
pub fn record_http_status(span: &Span, status: u16) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// How a long-lived connection's commands are traced: each command is a
/// server span of its own, a child of the trace context the connection was
/// opened with (the WebSocket upgrade's headers, the `Converse` call's
/// metadata), or a new trace when it had none.
#[derive(Debug, Clone, Default)]
pub struct ConnectionTrace {
    edge: Option<Edge>,
    traceparent: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Edge {
    WebSocket,
    Converse,
}

impl ConnectionTrace {
    /// A WebSocket connection upgraded with `headers`.
    pub fn websocket(headers: &HeaderMap) -> Self {
        Self::new(Edge::WebSocket, traceparent_of_headers(headers))
    }

    /// A gRPC `Converse` stream opened with `metadata`.
    pub fn converse(metadata: &MetadataMap) -> Self {
        Self::new(Edge::Converse, traceparent_of_metadata(metadata))
    }

    fn new(edge: Edge, traceparent: Option<String>) -> Self {
        if !trace::enabled() {
            return Self::default();
        }
        Self {
            edge: Some(edge),
            traceparent,
        }
    }

    /// The span of one `command` (`send`, `open`...) on this connection.
    pub fn command_span(&self, command: &'static str) -> Span {
        let Some(edge) = self.edge else {
            return Span::none();
        };
        let span = match edge {
            Edge::WebSocket => tracing::info_span!(
                "websocket",
                otel.name = format!("WebSocket {command}"),
                otel.kind = "server",
                otel.status_code = Empty,
            ),
            Edge::Converse => tracing::info_span!(
                "grpc",
                otel.name = format!("{CHAT_SERVICE}/Converse {command}"),
                otel.kind = "server",
                otel.status_code = Empty,
            ),
        };
        match edge {
            Edge::WebSocket => {
                set_attribute(&span, "network.protocol.name", "websocket");
                set_attribute(&span, "url.path", "/api/v2/chat/ws");
            }
            Edge::Converse => {
                set_attribute(&span, "rpc.system", "grpc");
                set_attribute(&span, "rpc.service", CHAT_SERVICE);
                set_attribute(&span, "rpc.method", "Converse");
            }
        }
        set_attribute(&span, "chatstream.command", command);
        trace::continue_trace(&span, self.traceparent.as_deref());
        span
    }
}
