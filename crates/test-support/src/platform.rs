//! Starting the real `chatstream` binary: the banner it prints on start
//! (where it listens), a role process that is ready and can be stopped or
//! crashed, the tenants file it reads, and one-shot subcommands under a
//! time limit.
//!
//! The binary's path is the caller's (`env!("CARGO_BIN_EXE_chatstream")`
//! in the binary's own package): Cargo hands it to that package only.
use std::io::BufRead;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use chatstream_config::tenants::{generate_api_key, hash_api_key};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::http::http_get;

/// How long starting, becoming ready and stopping may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Where a started `chatstream` listens, as its banner says: every role
/// prints `  probes     http://HOST:PORT/health ...` last, a gateway (and
/// `dev`) first `  WebSocket  ws://HOST:PORT/api/v2/chat/ws` and
/// `  gRPC       HOST:PORT  (reflection on)`.
#[derive(Clone, Debug, Default)]
pub struct Banner {
    pub websocket_url: Option<String>,
    pub grpc_addr: Option<String>,
    /// The probes' (and a gateway's WebSocket and HTTP API) address.
    pub http_addr: Option<String>,
}

impl Banner {
    /// Takes one line of the process's stdout; true once the banner is
    /// complete.
    pub fn read_line(&mut self, line: &str) -> bool {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("WebSocket") {
            self.websocket_url = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("gRPC") {
            self.grpc_addr = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("probes") {
            self.http_addr = rest
                .trim()
                .strip_prefix("http://")
                .and_then(|address| address.split('/').next())
                .map(str::to_owned);
            return true;
        }
        false
    }

    /// Reads the banner from blocking stdout `lines`.
    pub fn read_from(lines: impl Iterator<Item = std::io::Result<String>>) -> Self {
        let mut banner = Self::default();
        for line in lines {
            if banner.read_line(&line.expect("read chatstream's stdout")) {
                return banner;
            }
        }
        panic!("chatstream exited before printing its addresses");
    }

    /// The probes address; fails when the banner had none.
    pub fn http(&self) -> String {
        self.http_addr.clone().expect("a probes address")
    }
}

/// Reads the banner from a blocking reader, then keeps draining it on a
/// thread of its own so the process never blocks on a full pipe.
pub fn read_banner_blocking(stdout: impl std::io::Read + Send + 'static) -> Banner {
    let mut lines = std::io::BufReader::new(stdout).lines();
    let banner = Banner::read_from(&mut lines);
    std::thread::spawn(move || for _ in lines {});
    banner
}

/// One running `chatstream` process (`dev`, `gateway` or `processor
/// <kind>`), ready; killed when dropped.
pub struct RoleProcess {
    child: Child,
    /// Probes (and, for a gateway, WebSocket and HTTP API) address.
    pub http_addr: String,
    /// A gateway's gRPC address.
    pub grpc_addr: Option<String>,
    role: String,
}

impl RoleProcess {
    /// Spawns `command` (its stdout piped, killed on drop), reads its banner
    /// and waits until `/ready` says 200. `role` names it in failures.
    pub async fn start(mut command: Command, role: &str) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("start chatstream {role}: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let banner = tokio::time::timeout(WAIT, async {
            let mut banner = Banner::default();
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if banner.read_line(&line) {
                    return banner;
                }
            }
            panic!("chatstream {role} exited before printing its addresses");
        })
        .await
        .unwrap_or_else(|_| panic!("chatstream {role} printed its addresses in time"));
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let process = Self {
            child,
            http_addr: banner.http(),
            grpc_addr: banner.grpc_addr,
            role: role.to_owned(),
        };
        process.wait_ready().await;
        process
    }

    /// Waits until `/ready` says 200.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok((200, _)) = http_get(&self.http_addr, "/ready").await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not become ready",
                self.role
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: a crash, with no chance to commit or leave a group.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(&mut self) {
        let pid = self.child.id().expect("running");
        // `kill` the command-line tool avoids a libc dependency.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("wait");
        assert!(exit.success(), "{} exited with {exit:?}", self.role);
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(&self.http_addr, "/metrics")
            .await
            .expect("GET /metrics");
        assert_eq!(status, 200);
        body
    }
}

/// A tenant with a fresh API key.
#[derive(Clone, Debug)]
pub struct TestTenant {
    pub id: String,
    pub api_key: String,
}

/// The tenants a platform under test knows.
#[derive(Clone, Debug)]
pub struct Tenants(pub Vec<TestTenant>);

impl Tenants {
    /// One tenant per id, each with a fresh API key.
    pub fn new(ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self(
            ids.into_iter()
                .map(|id| TestTenant {
                    id: id.into(),
                    api_key: generate_api_key(),
                })
                .collect(),
        )
    }

    /// A known tenant's API key.
    pub fn key(&self, tenant: &str) -> &str {
        &self
            .0
            .iter()
            .find(|t| t.id == tenant)
            .expect("known tenant")
            .api_key
    }

    /// Writes the tenants file, with `extras` (tenant id, YAML lines
    /// indented by four spaces, e.g. `mcp_servers`) in their entries.
    pub fn write_file(&self, path: &Path, extras: &[(&str, &str)]) {
        let mut yaml = String::from("tenants:\n");
        for tenant in &self.0 {
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
}

/// Runs `chatstream <subcommand> <args>` to its end with none of the
/// platform's settings from the environment (`CHATSTREAM_*`, `KAFKA_*`,
/// `SCYLLA_*`, `REDIS_URL`) and in a neutral working directory (no
/// `chatstream.yaml` there), so only `args` count; fails when it runs
/// over `limit`.
pub async fn run_subcommand(bin: &str, subcommand: &str, args: &[&str], limit: Duration) -> Output {
    let mut command = Command::new(bin);
    command.arg(subcommand).args(args).kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if ["CHATSTREAM_", "KAFKA_", "SCYLLA_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || name == "REDIS_URL"
        {
            command.env_remove(&*name);
        }
    }
    command.current_dir(std::env::temp_dir());
    tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("`chatstream {subcommand} {args:?}` ran over {limit:?}"))
        .expect("run chatstream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_of_every_role_is_read_up_to_its_probes_line() {
        let dev = "chatstream dev is running (dev environment)\n  WebSocket  ws://127.0.0.1:4000/api/v2/chat/ws\n  gRPC       127.0.0.1:5000  (reflection on)\n  probes     http://127.0.0.1:4000/health  /ready  /metrics\n  data       /tmp/x\n";
        let banner = Banner::read_from(dev.lines().map(|l| Ok(l.to_owned())));
        assert_eq!(
            banner.websocket_url.as_deref(),
            Some("ws://127.0.0.1:4000/api/v2/chat/ws")
        );
        assert_eq!(banner.grpc_addr.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(banner.http(), "127.0.0.1:4000");

        let processor = "chatstream processor router\n  probes     http://127.0.0.1:4001/health  /ready  /metrics\n";
        let banner = Banner::read_from(processor.lines().map(|l| Ok(l.to_owned())));
        assert_eq!(banner.grpc_addr, None);
        assert_eq!(banner.http(), "127.0.0.1:4001");
    }
}
