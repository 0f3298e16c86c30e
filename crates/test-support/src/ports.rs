//! Loopback ports for servers a test starts itself: one that is free now,
//! and waiting until something listens on one.
use std::time::Duration;

/// A loopback port nothing listens on at the moment (the OS picks it; it
/// stays free unless another process happens to take it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Waits until something accepts connections on loopback `port`, failing
/// after `limit` with `what` in the message.
pub async fn wait_for_port(port: u16, limit: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not listen on {port} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
