//! `ws-echo-baseline`: the physical limit for the WebSocket numbers in
//! docs/performance.md. A bare WebSocket server on the gateway's own stack
//! (tokio, axum, serde_json) that answers each client frame the way the
//! gateway would, without doing any of the gateway's work (no auth check,
//! no log, no fsync, no fan-out, no model). The load generator drives it
//! with `--ack-only`, exactly as it drives chatstream.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "ws-echo-baseline",
    about = "Bare WebSocket server answering chatstream client frames (open, subscribe, send) \
             with opened/subscribed/ack frames: a baseline for chatstream-loadtest --ack-only"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port; the address is printed on stdout.
    #[arg(long, default_value_t = 0)]
    port: u16,
}

/// Ids and positions only need to be unique for the client to correlate.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let address: SocketAddr = listener.local_addr()?;
    println!("ws-echo-baseline listening on ws://{address}/api/v2/chat/ws");
    let app = Router::new().route("/api/v2/chat/ws", get(upgrade));
    // A baseline is the best this stack can do, so small frames go out at
    // once: axum::serve leaves Nagle's algorithm on unless told otherwise.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

async fn upgrade(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(answer_frames)
}

async fn answer_frames(mut socket: WebSocket) {
    let hello = json!({"type": "authenticated", "tenant_id": "echo", "key_id": "echo"});
    if socket.send(text(&hello)).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        let Message::Text(frame) = message else {
            continue;
        };
        // Parsed like the gateway parses it, so the JSON cost is in the baseline too.
        let Ok(frame) = serde_json::from_str::<Value>(&frame) else {
            continue;
        };
        let request_id = frame.get("request_id").cloned().unwrap_or(Value::Null);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let reply = match frame.get("type").and_then(Value::as_str) {
            Some("open") => json!({
                "type": "opened", "request_id": request_id,
                "conversation_id": format!("echo-conversation-{id}"), "position": id,
            }),
            Some("subscribe") => json!({
                "type": "subscribed", "request_id": request_id,
                "conversation_id": frame.get("conversation_id").cloned().unwrap_or(Value::Null),
            }),
            Some("send") => json!({
                "type": "ack", "request_id": request_id,
                "conversation_id": frame.get("conversation_id").cloned().unwrap_or(Value::Null),
                "event_id": format!("echo-event-{id}"), "position": id, "duplicate": false,
            }),
            _ => {
                json!({"type": "error", "request_id": request_id, "code": "unknown_type", "message": "echo baseline"})
            }
        };
        if socket.send(text(&reply)).await.is_err() {
            return;
        }
    }
}

fn text(value: &Value) -> Message {
    Message::Text(Utf8Bytes::from(value.to_string()))
}
