//! Starts the real `chatstream` binary for end-to-end tests and talks to it
//! over real sockets: WebSocket (tokio-tungstenite), gRPC (tonic) and HTTP.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chatstream_config::tenants::{generate_api_key, hash_api_key};
use chatstream_schemas::pb::gateway::chat_service_client::ChatServiceClient;
use chatstream_schemas::ws::{ClientFrame, ServerFrame};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tonic::transport::Channel;

pub mod cluster;

pub const WAIT: Duration = Duration::from_secs(20);

/// A tenant with a fresh API key, written into the test's tenants file.
#[derive(Clone, Debug)]
pub struct TestTenant {
    pub id: String,
    pub api_key: String,
}

/// The platform under test: a data dir and, while running, the process.
pub struct Platform {
    pub data_dir: tempfile::TempDir,
    pub tenants: Vec<TestTenant>,
    env: Vec<(String, String)>,
    process: Option<Child>,
    pub http_addr: String,
    pub grpc_addr: String,
}

impl Platform {
    /// Starts `chatstream dev` with tenants `acme` and `globex` and extra env vars.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with_tenant_config(env, &[]).await
    }

    /// Like `start`, with extra YAML lines in some tenants' entries
    /// (`(tenant id, lines indented by four spaces)`), e.g. `mcp_servers`.
    pub async fn start_with_tenant_config(env: &[(&str, &str)], extras: &[(&str, &str)]) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let tenants: Vec<TestTenant> = ["acme", "globex"]
            .iter()
            .map(|id| TestTenant {
                id: id.to_string(),
                api_key: generate_api_key(),
            })
            .collect();
        write_tenants_file_with(&data_dir.path().join("test-tenants.yaml"), &tenants, extras);
        let mut platform = Self {
            data_dir,
            tenants,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            process: None,
            http_addr: String::new(),
            grpc_addr: String::new(),
        };
        platform.launch().await;
        platform
    }

    pub fn key(&self, tenant: &str) -> &str {
        &self
            .tenants
            .iter()
            .find(|t| t.id == tenant)
            .expect("known tenant")
            .api_key
    }

    async fn launch(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatstream"));
        command
            .arg("dev")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--tenants")
            .arg(self.data_dir.path().join("test-tenants.yaml"))
            .arg("--http-port")
            .arg("0")
            .arg("--grpc-port")
            .arg("0")
            .env("LOG_LEVEL", "warn")
            .env("CHATSTREAM_MOCK_TOKEN_DELAY_MS", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.data_dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start chatstream");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let banner = tokio::time::timeout(WAIT, async {
            let (mut http, mut grpc) = (None, None);
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(rest) = line.trim().strip_prefix("WebSocket") {
                    http = rest
                        .trim()
                        .strip_prefix("ws://")
                        .and_then(|a| a.split('/').next())
                        .map(str::to_owned);
                }
                if let Some(rest) = line.trim().strip_prefix("gRPC") {
                    grpc = rest.split_whitespace().next().map(str::to_owned);
                }
                if let (Some(http), Some(grpc)) = (&http, &grpc) {
                    return (http.clone(), grpc.clone());
                }
            }
            panic!("chatstream exited before printing its addresses");
        })
        .await
        .expect("chatstream printed its addresses in time");
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (self.http_addr, self.grpc_addr) = banner;
        self.process = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok((200, _)) = http_get(&self.http_addr, "/ready").await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chatstream did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process without warning (SIGKILL), like a crash.
    pub async fn kill(&mut self) {
        let mut child = self.process.take().expect("running");
        child.kill().await.expect("kill");
    }

    /// Stops with SIGTERM and waits for a clean exit.
    pub async fn stop(&mut self) {
        let mut child = self.process.take().expect("running");
        let pid = child.id().expect("pid") as i32;
        // SAFETY-free: `kill` the command-line tool avoids a libc dependency.
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("wait");
        assert!(exit.success(), "clean exit after SIGTERM, got {exit:?}");
    }

    pub async fn restart(&mut self) {
        self.launch().await;
    }

    pub async fn ws(&self, api_key: &str) -> Ws {
        connect_ws(&self.http_addr, api_key).await
    }

    /// A WebSocket connection that has not authenticated yet.
    pub async fn ws_anonymous(&self) -> Ws {
        let url = format!("ws://{}/api/v2/chat/ws", self.http_addr);
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Ws { stream }
    }

    pub async fn grpc(&self) -> ChatServiceClient<Channel> {
        ChatServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("grpc connects")
    }

    pub fn grpc_channel_addr(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }
}

/// An authenticated WebSocket connection to the gateway at `http_addr`.
pub async fn connect_ws(http_addr: &str, api_key: &str) -> Ws {
    let mut request = format!("ws://{http_addr}/api/v2/chat/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {api_key}").parse().unwrap(),
    );
    let (stream, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket connects");
    let mut ws = Ws { stream };
    match ws.next_frame().await {
        ServerFrame::Authenticated { .. } => ws,
        other => panic!("expected authenticated, got {other:?}"),
    }
}

pub fn write_tenants_file(path: &Path, tenants: &[TestTenant]) {
    write_tenants_file_with(path, tenants, &[]);
}

/// A tenants file with `extras` (tenant id, YAML lines) added to the entries.
pub fn write_tenants_file_with(path: &Path, tenants: &[TestTenant], extras: &[(&str, &str)]) {
    let mut yaml = String::from("tenants:\n");
    for tenant in tenants {
        yaml += &format!(
            "  - id: {}\n    api_keys:\n      - id: test\n        sha256: {}\n",
            tenant.id,
            hash_api_key(&tenant.api_key)
        );
        for (_, lines) in extras.iter().filter(|(id, _)| *id == tenant.id) {
            yaml += lines;
        }
    }
    std::fs::write(path, yaml).expect("write tenants file");
}

pub async fn grpc_client(addr: &str) -> ChatServiceClient<Channel> {
    ChatServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("grpc connects")
}

/// A conversation's whole committed history, as `GetConversation` returns it.
pub async fn conversation_events(
    client: &mut ChatServiceClient<Channel>,
    api_key: &str,
    conversation_id: &str,
) -> Vec<chatstream_schemas::ws::EventJson> {
    let request = chatstream_schemas::pb::gateway::GetConversationRequest {
        conversation_id: conversation_id.to_owned(),
        after_position: None,
        page_size: 1000,
    };
    client
        .get_conversation(authed(request, api_key))
        .await
        .expect("GetConversation")
        .into_inner()
        .events
        .iter()
        .map(|committed| {
            let event = committed.event.as_ref().expect("an event");
            chatstream_schemas::ws::EventJson::from_event(event).expect("a known payload")
        })
        .collect()
}

/// The Kafka-protocol broker at `CHATSTREAM_TEST_KAFKA` (default
/// `127.0.0.1:9092`) when it answers; otherwise `None` after a "not run"
/// notice, or a failure when `CHATSTREAM_TEST_STRICT=1`.
pub fn kafka_broker() -> Option<String> {
    use std::net::ToSocketAddrs;
    let servers = std::env::var("CHATSTREAM_TEST_KAFKA")
        .ok()
        .filter(|servers| !servers.is_empty())
        .unwrap_or_else(|| "127.0.0.1:9092".to_owned());
    let first = servers.split(',').next().unwrap_or_default().trim();
    let reachable = first
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| {
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
        });
    if reachable {
        return Some(servers);
    }
    let notice = format!("not run: no Kafka-protocol broker at {servers}");
    assert!(
        std::env::var("CHATSTREAM_TEST_STRICT").as_deref() != Ok("1"),
        "{notice} (CHATSTREAM_TEST_STRICT=1: Kafka tests must run)"
    );
    // Straight to stderr: the harness captures `eprintln!` of passing tests.
    let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("{notice}\n"));
    None
}

/// A gRPC request carrying an API key.
pub fn authed<T>(message: T, api_key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {api_key}").parse().unwrap(),
    );
    request
}

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_text(&serde_json::to_string(frame).unwrap()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("websocket send");
    }

    /// The next raw message (text, close, ...), within the wait limit.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a frame in time");
            match message {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn next_frame(&mut self) -> ServerFrame {
        match self.next_message().await {
            Some(Message::Text(text)) => {
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad frame {text}: {e}"))
            }
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Frames until `stop` returns true for one (included).
    pub async fn frames_until(
        &mut self,
        mut stop: impl FnMut(&ServerFrame) -> bool,
    ) -> Vec<ServerFrame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next_frame().await;
            let done = stop(&frame);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// Sends a message and returns its ack (event id, position, conversation).
    pub async fn send_message(
        &mut self,
        conversation_id: Option<&str>,
        text: &str,
    ) -> (String, u64, String) {
        self.send(&ClientFrame::Send {
            request_id: Some("r".into()),
            conversation_id: conversation_id.map(str::to_owned),
            client_message_id: None,
            text: text.into(),
        })
        .await;
        match self
            .frames_until(|f| matches!(f, ServerFrame::Ack { .. } | ServerFrame::Error { .. }))
            .await
            .pop()
        {
            Some(ServerFrame::Ack {
                event_id,
                position,
                conversation_id,
                ..
            }) => (event_id, position, conversation_id),
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    /// Opens a conversation with an `open` frame and returns its id.
    pub async fn open_conversation(&mut self) -> String {
        self.send(&ClientFrame::Open {
            request_id: None,
            title: None,
        })
        .await;
        match self.next_frame().await {
            ServerFrame::Opened {
                conversation_id, ..
            } => conversation_id,
            other => panic!("expected opened, got {other:?}"),
        }
    }

    /// Expects an error frame with `code` (skipping deltas and events).
    pub async fn expect_error(&mut self, code: &str) -> String {
        match self
            .frames_until(|f| matches!(f, ServerFrame::Error { .. } | ServerFrame::Ack { .. }))
            .await
            .pop()
        {
            Some(ServerFrame::Error {
                code: got, message, ..
            }) => {
                assert_eq!(got, code, "error message: {message}");
                message
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }
}

/// A minimal HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Sends a raw HTTP/1.1 request and reads the response head and its
/// `Content-Length` body (the connection may stay open).
pub async fn http_request(addr: &str, request: &str) -> std::io::Result<(u16, String)> {
    let stream = TcpStream::connect(addr).await?;
    let mut reader = BufReader::new(stream);
    reader.get_mut().write_all(request.as_bytes()).await?;
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {status_line:?}")))?;
    let mut content_length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).await?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub fn data_path(platform: &Platform, name: &str) -> PathBuf {
    platform.data_dir.path().join(name)
}
