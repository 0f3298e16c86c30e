//! Starts the real `chatstream dev` (and the echo baseline) for the load
//! tester's end-to-end tests, and runs the `chatstream-loadtest` binary.
//!
//! The `chatstream` binary belongs to another package, so Cargo does not
//! hand its path to these tests. It is found through `CHATSTREAM_BIN`, or
//! next to this package's binaries in the same target directory, where
//! `cargo nextest run --workspace` / `cargo test --workspace` (what
//! `scripts/test.sh` runs) build it before any test starts.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader, Read, Write};

use chatstream_test_support::platform::read_banner_blocking;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const STARTUP: Duration = Duration::from_secs(30);

pub fn loadtest_bin() -> &'static str {
    env!("CARGO_BIN_EXE_chatstream-loadtest")
}

pub fn echo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ws-echo-baseline")
}

/// The `chatstream` binary: `CHATSTREAM_BIN`, else the one built next to ours.
pub fn chatstream_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CHATSTREAM_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CHATSTREAM_BIN={} does not exist",
            path.display()
        );
        return path;
    }
    let sibling = PathBuf::from(loadtest_bin())
        .parent()
        .expect("the loadtest binary sits in a directory")
        .join(format!("chatstream{}", std::env::consts::EXE_SUFFIX));
    assert!(
        sibling.is_file(),
        "the chatstream binary is missing at {}. Build it first (`cargo build -p chatstream`; \
         `cargo nextest run --workspace` and scripts/test.sh do it), or point CHATSTREAM_BIN at it.",
        sibling.display()
    );
    sibling
}

/// A child process that is killed when the test ends, however it ends.
pub struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `chatstream dev` on free ports in a temporary data dir, mock model at zero delay.
pub struct Platform {
    _process: Running,
    pub data_dir: tempfile::TempDir,
    pub ws_url: String,
    pub grpc_addr: String,
    pub http_addr: String,
}

impl Platform {
    pub fn start() -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(chatstream_bin())
            .args(["dev", "--http-port", "0", "--grpc-port", "0", "--data-dir"])
            .arg(data_dir.path())
            .current_dir(data_dir.path())
            .env("LOG_LEVEL", "warn")
            .env("CHATSTREAM_MOCK_TOKEN_DELAY_MS", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start chatstream dev");
        let stdout = child.stdout.take().expect("piped stdout");
        let process = Running { child };
        let banner = read_banner_blocking(stdout);
        let platform = Self {
            _process: process,
            data_dir,
            ws_url: banner.websocket_url.clone().expect("WebSocket address"),
            grpc_addr: banner.grpc_addr.clone().expect("gRPC address"),
            http_addr: banner.http(),
        };
        platform.wait_ready();
        platform
    }

    pub fn api_key_file(&self) -> PathBuf {
        self.data_dir.path().join("dev-api-key")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + STARTUP;
        while http_status(&self.http_addr, "/ready") != Some(200) {
            assert!(Instant::now() < deadline, "chatstream did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Flags that point the load tester at this platform, then `flags`.
    pub fn target_args_and(&self, flags: &[&str]) -> Vec<String> {
        let mut all = self.target_args();
        all.extend(args(flags));
        all
    }

    /// Flags that point the load tester at this platform.
    pub fn target_args(&self) -> Vec<String> {
        vec![
            "--ws-url".into(),
            self.ws_url.clone(),
            "--grpc-addr".into(),
            self.grpc_addr.clone(),
            "--api-key-file".into(),
            self.api_key_file().display().to_string(),
        ]
    }
}

/// The echo baseline server on a free port.
pub struct EchoServer {
    _process: Running,
    pub ws_url: String,
}

impl EchoServer {
    pub fn start() -> Self {
        let mut child = Command::new(echo_bin())
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ws-echo-baseline");
        let stdout = child.stdout.take().expect("piped stdout");
        let process = Running { child };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the echo server's address");
        let ws_url = line
            .split_whitespace()
            .find(|w| w.starts_with("ws://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self {
            _process: process,
            ws_url,
        }
    }
}

fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the load tester to completion.
pub fn loadtest(args: &[String]) -> Output {
    let output = Command::new(loadtest_bin())
        .args(args)
        .output()
        .expect("run chatstream-loadtest");
    eprintln!(
        "--- loadtest stdout\n{}\n--- loadtest stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A load-tester run whose JSON report went to a temp dir of its own.
pub struct ReportedRun {
    pub output: Output,
    out_dir: tempfile::TempDir,
}

impl ReportedRun {
    /// The JSON report; fails when it was not written.
    pub fn report(&self) -> serde_json::Value {
        read_json(&self.out_dir.path().join("run.json"))
    }

    /// The JSON report of a run that passed (exit 0; stderr shown when not).
    pub fn passed_report(&self) -> serde_json::Value {
        let stderr = String::from_utf8_lossy(&self.output.stderr);
        assert_eq!(self.output.status.code(), Some(0), "{stderr}");
        self.report()
    }
}

/// Runs the load tester with `flags` and `--json-out` into a temp dir.
pub fn loadtest_with_report(mut flags: Vec<String>) -> ReportedRun {
    let out_dir = tempfile::tempdir().expect("temp dir");
    flags.push("--json-out".into());
    flags.push(out_dir.path().join("run.json").display().to_string());
    ReportedRun {
        output: loadtest(&flags),
        out_dir,
    }
}

pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the JSON report was written");
    serde_json::from_str(&text).expect("the JSON report parses")
}
