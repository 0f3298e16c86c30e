//! Idle WebSocket connections held open for the whole run, to measure what
//! a connection that does nothing costs the server.
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::driver::CONCURRENT_HANDSHAKES;
use crate::ws_client::IdleWs;

pub struct IdleConnections {
    held: Vec<IdleWs>,
    pub failed: u32,
    pub first_error: Option<String>,
}

impl IdleConnections {
    /// Opens `count` authenticated connections, taking the keys in turn.
    pub async fn open(url: &str, api_keys: &[String], count: u32) -> Self {
        let handshakes = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
        let mut opening = JoinSet::new();
        for i in 0..count {
            let url = url.to_owned();
            let key = api_keys[i as usize % api_keys.len()].clone();
            let handshakes = handshakes.clone();
            opening.spawn(async move {
                let _permit = handshakes.acquire_owned().await;
                IdleWs::connect(&url, &key).await
            });
        }
        let mut idle = Self {
            held: Vec::with_capacity(count as usize),
            failed: 0,
            first_error: None,
        };
        while let Some(result) = opening.join_next().await {
            match result {
                Ok(Ok(connection)) => idle.held.push(connection),
                Ok(Err(error)) => {
                    idle.failed += 1;
                    idle.first_error.get_or_insert_with(|| error.to_string());
                }
                Err(panic) => {
                    idle.failed += 1;
                    idle.first_error.get_or_insert_with(|| panic.to_string());
                }
            }
        }
        idle
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}
