//! A `redis-server` of a test's own on a free port, with nothing on disk,
//! so a test can take it away and bring it back; never the shared Redis.
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{ports, services};

/// How long a started `redis-server` may take to answer.
const STARTUP: Duration = Duration::from_secs(20);

/// The test's own `redis-server`; killed when dropped.
pub struct OwnRedis {
    port: u16,
    process: Option<Child>,
}

impl OwnRedis {
    /// Starts one and waits until it answers; `None` (after a "not run"
    /// notice, or a failure in a strict run) when `redis-server` cannot be
    /// started (`scripts/test.sh` installs it).
    pub async fn start() -> Option<Self> {
        let mut server = Self {
            port: ports::free_port(),
            process: None,
        };
        if let Err(error) = server.spawn() {
            return services::not_run(format!("cannot start redis-server: {error}"));
        }
        server.wait_until_it_answers().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it without warning, like a crash.
    pub async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await.expect("kill the test's redis-server");
        }
    }

    /// Starts it again on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        self.spawn().expect("restart redis-server");
        self.wait_until_it_answers().await;
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let process = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        self.process = Some(process);
        Ok(())
    }

    async fn wait_until_it_answers(&self) {
        let deadline = tokio::time::Instant::now() + STARTUP;
        loop {
            let url = self.url();
            let answer = tokio::task::spawn_blocking(move || services::redis_answers(&url))
                .await
                .expect("the PING task");
            match answer {
                Ok(()) => return,
                Err(error) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "the test's redis-server did not answer within {STARTUP:?}: {error}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
