//! The fail-open promise: Redis is a cache, never a dependency. Killed, hanging, absent at
//! start or holding an unreadable value, the proxy keeps answering from the origin, says so
//! in `Cache-Status` (`redis-unavailable`) and on the admin listener's `/health/cache` (503),
//! and caching resumes by itself once Redis is back. Also: the admin endpoints answer on
//! the admin port only; on the public port the same paths are the origin's.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::routes::CREDENTIAL;
use support::{Got, Origin, RedisServer, Reply, Stack, get, load, start_proxy};

/// The echo origin's body names the target it was asked for.
fn assert_from_origin_for(got: &Got, path: &str) {
    assert_eq!(
        got.status,
        200,
        "{path}: {} {}",
        got.cache_status(),
        got.text()
    );
    assert!(
        got.text().contains(&format!("\"target\":\"{path}\"")),
        "{path}: body {}",
        got.text()
    );
}

/// Requests `path` until a response says it was stored (caching works again), for up to 5 s.
async fn until_stored(addr: SocketAddr, path: &str) -> Got {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = get(addr, path, &[]).await;
        assert_from_origin_for(&got, path);
        if got.cache_status().contains("stored") {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "caching did not resume within 5 s; last Cache-Status: {}",
            got.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Caching works: `path` is stored by one request and a hit for the next.
async fn assert_caching_works(addr: SocketAddr, path: &str) {
    let stored = until_stored(addr, path).await;
    let hit = get(addr, path, &[]).await;
    assert!(hit.hit(), "{}", hit.cache_status());
    assert_eq!(hit.body, stored.body);
}

async fn health(admin: SocketAddr) -> Got {
    get(admin, "/health/cache", &[]).await
}

#[tokio::test]
async fn redis_killed_mid_run_still_gives_200s_and_health_says_down() {
    let Stack {
        mut redis,
        origin,
        proxy,
        ..
    } = Stack::start(CREDENTIAL).await;
    let filled = get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert!(filled.cache_status().contains("stored"));
    let hit = get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert!(hit.hit());

    redis.kill();

    // Half for the entry that was a hit a moment ago, half for keys never seen.
    for i in 0..20 {
        let path = if i % 2 == 0 {
            "/api/credentials/abc".to_string()
        } else {
            format!("/api/credentials/new{i}")
        };
        let got = get(proxy.addr(), &path, &[]).await;
        assert_from_origin_for(&got, &path);
        assert!(
            got.cache_status().contains("redis-unavailable"),
            "request {i} for {path}: {}",
            got.cache_status()
        );
    }
    assert_eq!(origin.count(), 1 + 20, "every request went to the origin");

    let down = health(proxy.admin_addr()).await;
    assert_eq!(down.status, 503);
    assert_eq!(down.text().trim(), r#"{"redis":"down"}"#);
    let alive = get(proxy.admin_addr(), "/healthz", &[]).await;
    assert_eq!(alive.status, 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn caching_resumes_after_redis_restarts() {
    let Stack {
        mut redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::start(CREDENTIAL).await;
    assert_caching_works(proxy.addr(), "/api/credentials/before").await;

    redis.kill();
    let during = get(proxy.addr(), "/api/credentials/during", &[]).await;
    assert_from_origin_for(&during, "/api/credentials/during");
    assert!(
        during.cache_status().contains("redis-unavailable"),
        "{}",
        during.cache_status()
    );
    assert_eq!(health(proxy.admin_addr()).await.status, 503);

    redis.restart(); // same port, empty
    assert_caching_works(proxy.addr(), "/api/credentials/after").await;
    let up = health(proxy.admin_addr()).await;
    assert_eq!(up.status, 200);
    assert_eq!(up.text().trim(), r#"{"redis":"ok"}"#);
    assert_eq!(
        redis.keys("cachalot:{credential:*"),
        ["cachalot:{credential:after}"]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_proxy_started_without_redis_serves_and_caches_once_redis_appears() {
    let mut redis = RedisServer::start();
    redis.kill();
    let origin = Origin::echo().await;
    let proxy = start_proxy(&origin, &redis, CREDENTIAL).await;

    for i in 0..3 {
        let got = get(proxy.addr(), "/api/credentials/abc", &[]).await;
        assert_from_origin_for(&got, "/api/credentials/abc");
        assert!(
            got.cache_status().contains("redis-unavailable"),
            "request {i}: {}",
            got.cache_status()
        );
    }
    assert_eq!(origin.count(), 3);
    assert_eq!(health(proxy.admin_addr()).await.status, 503);

    redis.restart();
    assert_caching_works(proxy.addr(), "/api/credentials/abc").await;
    assert_eq!(health(proxy.admin_addr()).await.status, 200);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_redis_costs_at_most_its_timeout_then_caching_resumes() {
    let Stack {
        redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::start(CREDENTIAL).await;
    assert_caching_works(proxy.addr(), "/api/credentials/before").await;

    redis.signal("STOP");
    // The redis timeout is 300 ms: no request may wait anywhere near the 2 s origin timeout.
    let limit = Duration::from_millis(1500);
    for i in 0..6 {
        let path = if i % 2 == 0 {
            "/api/credentials/before".to_string()
        } else {
            format!("/api/credentials/new{i}")
        };
        let started = Instant::now();
        let got = get(proxy.addr(), &path, &[]).await;
        let took = started.elapsed();
        assert_from_origin_for(&got, &path);
        assert!(took < limit, "request {i} took {took:?} while Redis hung");
        assert!(
            got.cache_status().contains("redis-unavailable"),
            "request {i}: {}",
            got.cache_status()
        );
    }
    let started = Instant::now();
    let down = health(proxy.admin_addr()).await;
    assert!(
        started.elapsed() < limit,
        "health took {:?}",
        started.elapsed()
    );
    assert_eq!(down.status, 503);

    redis.signal("CONT");
    assert_caching_works(proxy.addr(), "/api/credentials/after").await;
    assert_eq!(health(proxy.admin_addr()).await.status, 200);
    // The entry stored before the hang is still served.
    let before = get(proxy.addr(), "/api/credentials/before", &[]).await;
    assert!(before.hit(), "{}", before.cache_status());
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_unreadable_entry_is_a_miss_and_gets_replaced() {
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::start(CREDENTIAL).await;
    for (key, value) in [
        ("cachalot:{credential:abc}", "garbage"),
        // Right magic and version, broken envelope.
        ("cachalot:{credential:def}", "CLT\u{1}\u{ff}\u{ff}\u{ff}"),
    ] {
        let set = redis.command(&["SET", key, value]).unwrap();
        assert!(set.starts_with("+OK"), "{set:?}");
    }

    for path in ["/api/credentials/abc", "/api/credentials/def"] {
        let first = get(proxy.addr(), path, &[]).await;
        assert_from_origin_for(&first, path);
        assert!(
            first.cache_status().contains("fwd=uri-miss")
                && first.cache_status().contains("stored"),
            "{path}: {}",
            first.cache_status()
        );
        let second = get(proxy.addr(), path, &[]).await;
        assert!(second.hit(), "{path}: {}", second.cache_status());
        assert_eq!(second.body, first.body);
    }
    assert_eq!(origin.count(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_value_of_the_wrong_redis_type_is_a_miss_not_an_outage() {
    let Stack {
        redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::start(CREDENTIAL).await;
    // Something else wrote a list where an entry belongs: GET answers WRONGTYPE.
    let pushed = redis
        .command(&["RPUSH", "cachalot:{credential:abc}", "x"])
        .unwrap();
    assert!(pushed.starts_with(':'), "{pushed:?}");

    let first = get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert_from_origin_for(&first, "/api/credentials/abc");
    // Redis answered: this key is unreadable, Redis is not unavailable ...
    assert!(
        !first.cache_status().contains("redis-unavailable"),
        "one bad value made Redis count as down: {}",
        first.cache_status()
    );
    // ... so other keys keep caching at once.
    let other = get(proxy.addr(), "/api/credentials/other", &[]).await;
    assert!(
        other.cache_status().contains("stored"),
        "a bad value under one key stopped caching for another: {}",
        other.cache_status()
    );
    assert_eq!(health(proxy.admin_addr()).await.status, 200);
    // And the bad value is replaced like any other unreadable entry.
    let second = get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert!(
        second.hit(),
        "the list was not replaced by an entry: first {}, second {}",
        first.cache_status(),
        second.cache_status()
    );
    assert_eq!(second.body, first.body);
    proxy.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints_answer_on_the_admin_port_only() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(CREDENTIAL).await;
    let admin = proxy.admin_addr();
    assert_ne!(admin, proxy.addr());

    let alive = get(admin, "/healthz", &[]).await;
    assert_eq!(alive.status, 200);
    assert_eq!(alive.text().trim(), "ok");
    let up = health(admin).await;
    assert_eq!(up.status, 200);
    assert_eq!(up.text().trim(), r#"{"redis":"ok"}"#);
    assert_eq!(up.header("content-type"), "application/json");
    assert_eq!(get(admin, "/nope", &[]).await.status, 404);
    assert_eq!(origin.count(), 0, "the admin port never reaches the origin");

    // On the public port these paths belong to the origin.
    for path in ["/health/cache", "/healthz"] {
        let public = get(proxy.addr(), path, &[]).await;
        assert_from_origin_for(&public, path);
        assert_eq!(origin.count_of(path), 1, "{path} reached the origin");
    }
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Drills under steady load. Each prints its figures (run with --no-capture to see them);
// the README's operations section reports them. Bounds are generous on purpose: a noisy
// 2-core machine must not fail them, while a proxy that hangs or errors still does.
// ---------------------------------------------------------------------------------------

/// The proxy's Redis command timeout in the test policy (`support::policy_text`).
const REDIS_TIMEOUT: Duration = Duration::from_millis(300);
/// What the drills' origin takes per request.
const ORIGIN_LATENCY: Duration = Duration::from_millis(20);

fn credentials(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("/api/credentials/c{i}")).collect()
}

async fn slow_origin(latency: Duration) -> Origin {
    Origin::start(move |seen, n| {
        Reply::ok(format!("{{\"target\":\"{}\",\"n\":{n}}}", seen.target)).delay(latency)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_redis_killed_and_restarted_3s_later_loses_no_request() {
    let origin = slow_origin(ORIGIN_LATENCY).await;
    let Stack {
        mut redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(CREDENTIAL).origin(origin).start().await;
    let paths = credentials(20);
    for path in &paths {
        get(proxy.addr(), path, &[]).await;
    }
    let load = tokio::spawn(load::steady(proxy.addr(), paths, 4, Duration::from_secs(7)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| redis.restart());
    let back = Instant::now();
    let report = load.await.expect("load");
    let recovery = report.first_hit_after(back);
    println!(
        "kill + restart after 3 s: {} requests, {} errors, slowest while down {:?}, first hit {:?} after redis answered again",
        report.requests(),
        report.errors(),
        report.max_latency_between(killed, back),
        recovery
    );
    assert_eq!(report.errors(), 0);
    let recovery = recovery.expect("hits resumed before the load ended");
    assert!(recovery < Duration::from_secs(2) * 3, "{recovery:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_redis_paused_5s_costs_each_request_at_most_the_timeout() {
    let origin = slow_origin(ORIGIN_LATENCY).await;
    let Stack {
        redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(CREDENTIAL).origin(origin).start().await;
    let paths = credentials(20);
    for path in &paths {
        get(proxy.addr(), path, &[]).await;
    }
    let load = tokio::spawn(load::steady(proxy.addr(), paths, 4, Duration::from_secs(8)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let paused = Instant::now();
    redis.signal("STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    redis.signal("CONT");
    let resumed = Instant::now();
    let report = load.await.expect("load");
    let slowest = report.max_latency_between(paused, resumed);
    let recovery = report.first_hit_after(resumed);
    println!(
        "SIGSTOP 5 s: {} requests, {} errors, slowest during the pause {slowest:?} (timeout {REDIS_TIMEOUT:?} + origin {ORIGIN_LATENCY:?}), first hit {recovery:?} after SIGCONT",
        report.requests(),
        report.errors(),
    );
    assert_eq!(report.errors(), 0);
    // The bound allows a full second of scheduling noise beyond timeout + origin.
    let bound = REDIS_TIMEOUT + ORIGIN_LATENCY + Duration::from_secs(1);
    assert!(
        slowest < bound,
        "a request hung {slowest:?} (bound {bound:?})"
    );
    assert!(recovery.is_some(), "hits did not resume after SIGCONT");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_a_killed_lock_holder_delays_the_other_instance_by_at_most_lock_ttl() {
    let redis = RedisServer::start();
    let fetch = Duration::from_millis(1500);
    let origin = slow_origin(fetch).await;
    let lock_ttl = Duration::from_secs(2);
    let text = |listen: &str| {
        support::policy_text(origin.addr(), &redis.url(), CREDENTIAL)
            .replace("lock_ttl = \"5s\"", "lock_ttl = \"2s\"")
            .replace("wait = \"3s\"", "wait = \"10s\"")
            .replace("addr = \"127.0.0.1:0\"", &format!("addr = \"{listen}\""))
    };
    // The lock holder is a real process, so that it can die as a crash would (SIGKILL).
    let holder_addr: SocketAddr = format!("127.0.0.1:{}", support::redis::free_port())
        .parse()
        .unwrap();
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text(&holder_addr.to_string())).unwrap();
    let mut holder = std::process::Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(["run", "--config"])
        .arg(file.path())
        .env_remove("REDIS_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cachalot starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(holder_addr).await.is_err() {
        assert!(Instant::now() < deadline, "the holder did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = cachalot::Server::start(
        cachalot::Policy::parse(&text("127.0.0.1:0"), "test.toml").unwrap(),
    )
    .await
    .unwrap();

    let path = "/api/credentials/slow";
    let doomed = tokio::spawn(async move {
        // The client of the killed instance loses its connection; that is not this drill's
        // question, so the outcome is ignored.
        let _ = tokio::time::timeout(Duration::from_secs(10), get(holder_addr, path, &[])).await;
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.keys("cachalot:lock:*").is_empty() {
        assert!(Instant::now() < deadline, "the holder never took the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let locked = Instant::now();
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let addr = other.addr();
            tokio::spawn(async move { get(addr, path, &[]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    holder.kill().expect("SIGKILL");
    holder.wait().expect("reaped");
    let mut slowest = Duration::ZERO;
    for waiter in waiters {
        let got = waiter.await.expect("waiter");
        slowest = slowest.max(locked.elapsed());
        assert_eq!(got.status, 200, "{}", got.cache_status());
        assert!(got.text().contains(path), "{}", got.text());
    }
    doomed.abort();
    println!(
        "lock holder killed: 5 waiters on the other instance answered {slowest:?} after the lock was taken (lock_ttl {lock_ttl:?} + fetch {fetch:?})"
    );
    let bound = lock_ttl + fetch + Duration::from_secs(2);
    assert!(slowest < bound, "{slowest:?} (bound {bound:?})");
    assert_eq!(origin.count(), 2, "the holder's fetch, then one takeover");
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_a_full_redis_keeps_the_proxy_serving() {
    for policy in ["allkeys-lru", "noeviction"] {
        let redis = RedisServer::start_with(&["--maxmemory", "3mb", "--maxmemory-policy", policy]);
        let origin = Origin::start(|_, _| Reply::ok(support::pattern(64 * 1024))).await;
        let proxy = start_proxy(&origin, &redis, CREDENTIAL).await;
        let (mut errors, mut stored) = (0, 0);
        for i in 0..150 {
            let got = get(proxy.addr(), &format!("/api/credentials/big{i}"), &[]).await;
            if got.status != 200 || got.body != support::pattern(64 * 1024) {
                errors += 1;
            }
            stored += usize::from(got.stored());
        }
        let last = get(proxy.addr(), "/api/credentials/big149", &[]).await;
        let info = redis.command(&["INFO", "stats"]).unwrap();
        let evicted = info
            .lines()
            .find_map(|l| l.strip_prefix("evicted_keys:"))
            .unwrap_or("?")
            .to_string();
        println!(
            "maxmemory 3mb {policy}: 150 fills of 64 KiB, {errors} errors, {stored} stored, {} entries left, {evicted} evicted, last key a hit: {}",
            redis.entries().len(),
            last.hit()
        );
        assert_eq!(errors, 0, "{policy}");
        assert_eq!(last.status, 200);
        if policy == "allkeys-lru" {
            assert!(last.hit(), "{}", last.cache_status());
        }
        proxy.shutdown().await;
    }
}
