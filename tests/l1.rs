//! The in-process tier: opted-in routes are answered from this process's memory, and stay
//! coherent with every other instance. A write-through on one instance drops the entry from
//! the others' tiers within moments (the window is measured and printed), and the tier is
//! flushed and bypassed whenever the invalidation feed or Redis is in doubt.

mod support;

use http::Method;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Got, Origin, Reply, Stack, get, send, start_proxy};

/// The shared credential and revoke routes, the credential one kept in the in-process tier.
const ROUTES: &str = concat!(
    "\n[l1]\nsize = \"16MiB\"\n",
    support::routes::credential!(),
    "l1 = true\n",
    support::routes::revoke!()
);

/// An origin with credentials a revoke really flips.
async fn credentials() -> Origin {
    let state: Arc<Mutex<HashMap<String, &'static str>>> = Arc::default();
    Origin::start(move |seen, _| {
        let id = seen
            .target
            .rsplit('/')
            .nth(usize::from(seen.method == "POST"))
            .unwrap_or("")
            .to_string();
        let mut state = state.lock().unwrap();
        if seen.method == "POST" {
            state.insert(id.clone(), "revoked");
        }
        let status = state.get(&id).copied().unwrap_or("valid");
        Reply::ok(format!("{{\"id\":\"{id}\",\"status\":\"{status}\"}}"))
    })
    .await
}

fn from_l1(got: &Got) -> bool {
    got.cache_status().contains("; hit") && got.cache_status().ends_with("/l1")
}

/// Reads until the tier answers (it is trusted once the pub/sub feed is up).
async fn until_l1(addr: SocketAddr, path: &str) -> Got {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = get(addr, path, &[]).await;
        if from_l1(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "never served from the tier: {}",
            got.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_drops_the_entry_from_the_others_tier() {
    let origin = credentials().await;
    let Stack {
        redis,
        origin,
        proxy: a,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    let b = start_proxy(&origin, &redis, ROUTES).await;
    let path = "/api/credentials/abc";

    let on_a = until_l1(a.addr(), path).await;
    let on_b = until_l1(b.addr(), path).await;
    assert!(on_a.text().contains("valid") && on_b.text().contains("valid"));
    let origin_before = origin.count();

    // The tier answers without Redis: no origin request, and the answer survives a Redis
    // that still has the entry.
    for _ in 0..20 {
        assert!(from_l1(&get(b.addr(), path, &[]).await));
    }
    assert_eq!(origin.count(), origin_before);

    let revoke = send(
        a.addr(),
        Method::POST,
        "/api/credentials/abc/revoke",
        &[],
        Default::default(),
    )
    .await;
    assert_eq!(revoke.status, 200);
    let revoked_at = Instant::now();

    // The writing instance dropped it before answering.
    let after = get(a.addr(), path, &[]).await;
    assert!(
        after.text().contains("revoked"),
        "{}: {}",
        after.cache_status(),
        after.text()
    );

    // The other instance drops it when the published list arrives.
    let deadline = revoked_at + Duration::from_secs(2);
    loop {
        let got = get(b.addr(), path, &[]).await;
        if got.text().contains("revoked") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "instance B kept serving the old entry from its tier"
        );
    }
    println!(
        "write-through window: the other instance's tier dropped the entry within {:?}",
        revoked_at.elapsed()
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_tier_is_flushed_when_the_feed_drops_and_bypassed_while_redis_is_down() {
    let origin = credentials().await;
    let Stack {
        mut redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    let path = "/api/credentials/xyz";
    until_l1(proxy.addr(), path).await;

    // The pub/sub connection is cut: messages may be lost, so the tier is flushed.
    let killed = redis
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .unwrap();
    assert!(
        killed.starts_with(':') && !killed.starts_with(":0"),
        "{killed}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = get(proxy.addr(), path, &[]).await;
        if !from_l1(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tier kept answering after the feed dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Once the feed is back, the tier is used again.
    until_l1(proxy.addr(), path).await;

    // Redis down: nothing from the tier (its invalidations could be queued), the origin answers.
    redis.kill();
    for _ in 0..5 {
        let got = get(proxy.addr(), path, &[]).await;
        assert_eq!(got.status, 200);
        assert!(!from_l1(&got), "{}", got.cache_status());
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn routes_without_l1_never_use_the_tier() {
    let origin = credentials().await;
    let routes = ROUTES.replace("l1 = true\n", "");
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(&routes).origin(origin).start().await;
    for _ in 0..10 {
        let got = get(proxy.addr(), "/api/credentials/q", &[]).await;
        assert!(!from_l1(&got), "{}", got.cache_status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.shutdown().await;
}
