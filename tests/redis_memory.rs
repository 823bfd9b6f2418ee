//! Redis memory per route, against a real Redis (and a real Redis Cluster): the proxy's
//! sampled figures match Redis's own numbers (the sum of `MEMORY USAGE` over every key of
//! the route, computed here over all keys) within 10 %, the bytes stored since start are
//! exactly the entries' encoded sizes, and each route's share of `maxmemory` is reported in
//! `/metrics` (gauges with HELP) and `/status.json`.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use support::cluster::Cluster;
use support::prometheus::scrape;
use support::wait::eventually;
use support::{Origin, RedisServer, Reply, get, start_proxy_redis};

/// Two routes whose keys start with their names; `mem_item` has far more keys than the
/// sampler reads (it extrapolates), `mem_user` fewer (it sums), with query variants.
const ROUTES: &str = r#"
[[route]]
name = "mem_item"
match = "GET /items/{id}"
ttl = "10m"
key = "mem_item:{id}"

[[route]]
name = "mem_user"
match = "GET /users/{id}"
ttl = "10m"
key = "mem_user:{id}"
tags = ["users"]
"#;

const ITEMS: usize = 400;
const USERS: usize = 30;

/// Items of 1000 to 1399 bytes, users of 5000.
fn origin_reply(seen: &support::origin::Seen, _n: usize) -> Reply {
    let path = seen.target.split('?').next().unwrap_or_default();
    let size = match path.strip_prefix("/items/") {
        Some(id) => 1000 + id.parse::<usize>().unwrap_or(0) * 37 % 400,
        None => 5000,
    };
    Reply::ok("x".repeat(size))
}

async fn fill(proxy: SocketAddr) {
    for id in 0..ITEMS {
        assert!(get(proxy, &format!("/items/{id}"), &[]).await.stored());
    }
    for id in 0..USERS {
        get(proxy, &format!("/users/{id}"), &[]).await;
        get(proxy, &format!("/users/{id}?v=2"), &[]).await;
    }
}

/// The route a key belongs to: the name before the first `:` inside its hash tag (the
/// routes' keys start with their names); tag sets and purge marks belong to none.
fn route_of(key: &str) -> String {
    let rest = key.strip_prefix("cachalot:").expect("a key of the proxy");
    if rest.starts_with("tag:") || rest.starts_with("purged:") {
        return "(proxy)".to_string();
    }
    let tagged = rest.split_once('{').map_or("", |(_, tagged)| tagged);
    tagged.split(':').next().unwrap_or_default().to_string()
}

fn integer(reply: &str) -> u64 {
    reply
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("an integer reply: {reply:?}"))
}

/// Redis's own numbers: per route, its keys and the sum of their `MEMORY USAGE`, and the
/// sum of its entries' lengths (the encoded sizes stored), over every node given.
/// Waits until no fill lock is left: a fill releases its lock after the client has its
/// answer, so right after the last request a lock may still be there, counted in Redis's
/// numbers and gone by the proxy's next pass.
async fn unlocked(nodes: &[&RedisServer]) {
    eventually(
        "every fill lock released",
        Duration::from_secs(10),
        async || {
            nodes
                .iter()
                .all(|node| node.keys("cachalot:lock:*").is_empty())
        },
    )
    .await;
}

fn redis_numbers(nodes: &[&RedisServer]) -> BTreeMap<String, (u64, u64, u64)> {
    let mut numbers = BTreeMap::new();
    for node in nodes {
        for key in node.keys("cachalot:*") {
            let usage = integer(&node.command(&["MEMORY", "USAGE", &key]).unwrap());
            let entry = key.starts_with("cachalot:{");
            let length = if entry {
                integer(&node.command(&["STRLEN", &key]).unwrap())
            } else {
                0
            };
            let (keys, bytes, stored) = numbers.entry(route_of(&key)).or_insert((0, 0, 0));
            *keys += 1;
            *bytes += usage;
            *stored += length;
        }
    }
    numbers
}

fn memory_row<'a>(status: &'a Value, route: &str) -> &'a Value {
    status["redis_memory"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == route)
        .unwrap_or_else(|| panic!("no memory row {route}: {status:#}"))
}

async fn status(admin: SocketAddr) -> Value {
    let got = get(admin, "/status.json", &[]).await;
    serde_json::from_slice(&got.body).unwrap()
}

/// Waits for a sampling pass that saw every key Redis holds now.
async fn measured(admin: SocketAddr, expected: &BTreeMap<String, (u64, u64, u64)>) -> Value {
    let mut last = Value::Null;
    eventually(
        "a sampling pass over every key",
        Duration::from_secs(20),
        async || {
            last = status(admin).await;
            last["redis_memory"]["measured"] == true
                && expected.iter().all(|(route, (keys, _, _))| {
                    last["redis_memory"]["routes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r["route"] == route.as_str() && r["keys"] == *keys)
                })
        },
    )
    .await;
    last
}

fn within_ten_percent(route: &str, measured: u64, truth: u64) {
    let error = (measured as f64 - truth as f64).abs() / truth as f64;
    eprintln!(
        "{route}: the proxy says {measured} bytes, Redis {truth} ({:+.2} %)",
        (measured as f64 / truth as f64 - 1.0) * 100.0
    );
    assert!(
        error <= 0.10,
        "{route}: the proxy says {measured} bytes, Redis {truth} ({:.1} % off)",
        error * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_figures_match_redis_own_numbers() {
    let redis = RedisServer::start_with(&["--maxmemory", "64mb"]);
    let origin = Origin::start(origin_reply).await;
    let server = start_proxy_redis(
        origin.addr(),
        &redis.url(),
        "memory_sample_interval = \"100ms\"",
        ROUTES,
    )
    .await;
    fill(server.addr()).await;

    unlocked(&[&redis]).await;
    let truth = redis_numbers(&[&redis]);
    assert_eq!(truth["mem_item"].0, ITEMS as u64, "one entry per item");
    let status = measured(server.admin_addr(), &truth).await;
    let memory = &status["redis_memory"];
    assert_eq!(memory["maxmemory_bytes"], 64 * 1024 * 1024);
    for route in ["mem_item", "mem_user"] {
        let (keys, bytes, stored) = truth[route];
        let row = memory_row(&status, route);
        within_ten_percent(route, row["bytes"].as_u64().unwrap(), bytes);
        assert_eq!(row["keys"], keys);
        // Every entry was stored once, by this instance: exactly their encoded sizes.
        assert_eq!(row["stored_bytes_total"], stored, "{route}");
        let share = row["maxmemory_share"].as_f64().unwrap();
        let expected = row["bytes"].as_f64().unwrap() / (64.0 * 1024.0 * 1024.0);
        assert!((share - expected).abs() < 1e-9, "{route}: {share}");
    }
    // The item route has more keys than the sampler reads: it extrapolated from a sample.
    assert_eq!(memory_row(&status, "mem_item")["sampled"], 100);
    assert_eq!(
        memory_row(&status, "mem_user")["sampled"],
        truth["mem_user"].0
    );
    // The tag set belongs to no route.
    assert!(memory_row(&status, "(proxy)")["keys"].as_u64().unwrap() >= 1);

    let metrics = scrape(server.admin_addr()).await;
    for (family, help) in [
        (
            "cachalot_redis_route_bytes",
            "# HELP cachalot_redis_route_bytes ",
        ),
        (
            "cachalot_redis_route_keys",
            "# HELP cachalot_redis_route_keys ",
        ),
        (
            "cachalot_redis_route_maxmemory_ratio",
            "# HELP cachalot_redis_route_maxmemory_ratio ",
        ),
        (
            "cachalot_stored_bytes_total",
            "# HELP cachalot_stored_bytes_total ",
        ),
    ] {
        assert!(metrics.text.contains(help), "{family} has no HELP");
    }
    let item = [("route", "mem_item")];
    within_ten_percent(
        "mem_item (metrics)",
        metrics.sum("cachalot_redis_route_bytes", &item) as u64,
        truth["mem_item"].1,
    );
    assert_eq!(
        metrics.sum("cachalot_redis_route_keys", &item) as u64,
        ITEMS as u64
    );
    assert_eq!(
        metrics.sum("cachalot_stored_bytes_total", &item) as u64,
        truth["mem_item"].2
    );
    assert_eq!(
        metrics.sum("cachalot_redis_maxmemory_bytes", &[]) as u64,
        64 * 1024 * 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_figures_on_a_cluster_cover_every_primary() {
    let cluster = Cluster::start(3, 0);
    let origin = Origin::start(origin_reply).await;
    let server = start_proxy_redis(
        origin.addr(),
        &cluster.url(),
        "memory_sample_interval = \"100ms\"",
        &ROUTES
            .replace("mem_item", "cl_item")
            .replace("mem_user", "cl_user"),
    )
    .await;
    for id in 0..ITEMS {
        assert!(
            get(server.addr(), &format!("/items/{id}"), &[])
                .await
                .stored()
        );
    }
    let primaries: Vec<&RedisServer> = cluster
        .masters()
        .into_iter()
        .map(|i| &cluster.nodes()[i])
        .collect();
    unlocked(&primaries).await;
    let truth = redis_numbers(&primaries);
    assert_eq!(truth["cl_item"].0, ITEMS as u64);
    let per_node: Vec<usize> = primaries
        .iter()
        .map(|node| node.keys("cachalot:{cl_item:*").len())
        .collect();
    assert!(
        per_node.iter().all(|n| *n > 0),
        "keys spread over every primary: {per_node:?}"
    );
    let status = measured(server.admin_addr(), &truth).await;
    let row = memory_row(&status, "cl_item");
    within_ten_percent(
        "cl_item",
        row["bytes"].as_u64().unwrap(),
        truth["cl_item"].1,
    );
    assert_eq!(row["stored_bytes_total"], truth["cl_item"].2);
    // No maxmemory on these nodes: no share to report.
    assert_eq!(status["redis_memory"]["maxmemory_bytes"], Value::Null);
    assert_eq!(row["maxmemory_share"], Value::Null);
}
