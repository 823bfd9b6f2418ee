//! Waiting helpers: polling until something holds, and firing requests at once.

use super::{Got, get};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it holds; panics naming `what` once `timeout` has passed.
/// For effects that land a moment after the request that caused them (a reload, a pub/sub
/// message, a detached write).
pub async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `n` concurrent GETs for `path`, request `i` to `addrs[i % addrs.len()]`
/// (interleaved across instances), and returns the responses in request order.
pub async fn concurrent(addrs: &[SocketAddr], path: &str, n: usize) -> Vec<Got> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let addr = addrs[i % addrs.len()];
            let path = path.to_string();
            tokio::spawn(async move { get(addr, &path, &[]).await })
        })
        .collect();
    let mut responses = Vec::with_capacity(n);
    for task in tasks {
        responses.push(task.await.expect("request task"));
    }
    responses
}
