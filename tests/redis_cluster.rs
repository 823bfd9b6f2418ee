//! The proxy on a real Redis Cluster (three primaries joined by `redis-cli --cluster create`):
//! hits, query variants, invalidation by key, by tag and by prefix across slots, pub/sub
//! invalidation published on any node, collapsed misses across two instances, and a
//! primary killed under load while its replica takes over.

mod support;

use cachalot::app::admin::AdminConfig;
use cachalot::{Policy, Server};
use http::Method;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::cluster::Cluster;
use support::{Got, Origin, Reply, check_connect, get, load, policy_text, send};

const ROUTES: &str = r#"
[[route]]
name = "item"
match = "GET /orgs/{org}/items/{id}"
ttl = "10m"
key = "item:{id}"
tags = ["org:{org}"]

[[route]]
name = "touch"
match = "POST /items/{id}/touch"
invalidate = ["item:{id}"]

[[route]]
name = "suspend"
match = "POST /orgs/{org}/suspend"
invalidate_tags = ["org:{org}"]
"#;

const TOKEN: &str = "cluster-test-token";

async fn start(origin: SocketAddr, cluster: &Cluster) -> Server {
    let policy = Policy::parse(&policy_text(origin, &cluster.url(), ROUTES), "test.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    Server::start_with(policy, AdminConfig::with_token(Some(TOKEN.into())))
        .await
        .expect("proxy starts")
}

fn item(id: u32) -> String {
    format!(
        "/orgs/{}/items/{id}{}",
        id % 2,
        if id % 3 == 0 { "?v=1" } else { "" }
    )
}

fn is_hit(got: &Got) -> bool {
    got.hit()
}

async fn post(addr: SocketAddr, path: &str) -> Got {
    send(addr, Method::POST, path, &[], bytes::Bytes::new()).await
}

/// Requests `path` until it is a hit (Cache-Status), for up to `limit`.
async fn until_hit(addr: SocketAddr, path: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if is_hit(&get(addr, path, &[]).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_and_every_kind_of_invalidation_work_across_slots() {
    let cluster = Cluster::start(3, 0);
    let checked = check_connect(Some(&cluster.url()), "", &[]);
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{report}");
    assert!(report.contains("connected (cluster, plain"), "{report}");
    let origin = Origin::echo().await;
    let proxy = start(origin.addr(), &cluster).await;
    let addr = proxy.addr();
    for id in 1..=20 {
        let got = get(addr, &item(id), &[]).await;
        assert!(got.stored(), "{}: {}", item(id), got.cache_status());
    }
    for id in 1..=20 {
        let got = get(addr, &item(id), &[]).await;
        assert!(is_hit(&got), "{}: {}", item(id), got.cache_status());
    }
    assert_eq!(origin.count(), 20);
    // The entries are spread over the primaries, and each one's lock, variants and
    // generation hash to its slot.
    let holding = cluster
        .masters()
        .into_iter()
        .filter(|&i| !cluster.nodes()[i].keys("cachalot:{item:*").is_empty())
        .count();
    assert!(holding >= 2, "entries on {holding} primaries only");
    let slot = |key: &str| {
        cluster.nodes()[0]
            .command(&["CLUSTER", "KEYSLOT", key])
            .expect("KEYSLOT")
    };
    assert_eq!(slot("cachalot:{item:3}?v=1"), slot("cachalot:gen:{item:3}"));
    assert_eq!(
        slot("cachalot:{item:3}"),
        slot("cachalot:lock:{item:3}?v=1")
    );
    assert_eq!(
        cluster.keys("cachalot:{item:3}*"),
        ["cachalot:{item:3}?v=1"]
    );

    // By key: both variants of item 3 go, nothing else.
    assert_eq!(post(addr, "/items/3/touch").await.status, 200);
    assert!(!is_hit(&get(addr, &item(3), &[]).await));
    assert!(is_hit(&get(addr, &item(4), &[]).await));

    // By tag: org 1 holds the odd ids, spread over every slot range.
    assert_eq!(post(addr, "/orgs/1/suspend").await.status, 200);
    for id in [5, 7, 9, 11] {
        assert!(!is_hit(&get(addr, &item(id), &[]).await), "{}", item(id));
    }
    for id in [2, 4, 8] {
        assert!(is_hit(&get(addr, &item(id), &[]).await), "{}", item(id));
    }

    // By prefix, over the admin API: item:1, item:10 .. item:19, on whichever primaries.
    let purged = send(
        proxy.admin_addr(),
        Method::POST,
        "/purge",
        &[("authorization", &format!("Bearer {TOKEN}"))],
        bytes::Bytes::from_static(br#"{"prefix":"item:1"}"#),
    )
    .await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    for id in [10, 12, 14, 16, 18] {
        assert!(!is_hit(&get(addr, &item(id), &[]).await), "{}", item(id));
    }
    assert!(is_hit(&get(addr, &item(2), &[]).await));

    // Classic pub/sub is cluster-wide: a message published on any node reaches the proxy.
    for (n, id) in [(0usize, 20u32), (1, 6), (2, 8)] {
        let message = format!(r#"{{"keys":["item:{id}"]}}"#);
        cluster.nodes()[n]
            .command(&["PUBLISH", "cache:invalidate", &message])
            .expect("PUBLISH");
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_hit(&get(addr, &item(id), &[]).await) {
            assert!(
                Instant::now() < deadline,
                "published on node {n}, item {id} still a hit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_make_one_origin_request_for_a_cold_key() {
    let cluster = Cluster::start(3, 0);
    let origin = Origin::start(|seen, n| {
        Reply::ok(format!("{{\"target\":\"{}\",\"n\":{n}}}", seen.target))
            .delay(Duration::from_millis(400))
    })
    .await;
    let a = start(origin.addr(), &cluster).await;
    let b = start(origin.addr(), &cluster).await;
    let addrs = [a.addr(), b.addr()];
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let addr = addrs[i % 2];
            tokio::spawn(async move { get(addr, "/orgs/1/items/77", &[]).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for task in tasks {
        let got = task.await.expect("request");
        assert_eq!(got.status, 200, "{}", got.cache_status());
        bodies.push(got.body);
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    assert_eq!(
        origin.count(),
        1,
        "one origin request for 20 across two instances"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// The drill: steady load through the proxy, one primary killed (SIGKILL); its replica is
/// promoted after `cluster-node-timeout` (1 s here). Every client request must get a 200
/// (from the origin while the slot has no primary), and hits must come back on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_primary_under_load_loses_no_request() {
    let mut cluster = Cluster::start(3, 1);
    let origin = Origin::echo().await;
    let proxy = start(origin.addr(), &cluster).await;
    let addr = proxy.addr();
    for id in 1..=30 {
        assert!(get(addr, &item(id), &[]).await.stored());
    }
    let victim = cluster.master_of("cachalot:{item:1}");
    let paths: Vec<String> = (1..=30).map(item).collect();
    let load = tokio::spawn(load::steady(addr, paths, 2, Duration::from_secs(6)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    cluster.node_mut(victim).kill();
    let recovered = until_hit(addr, &item(1), Duration::from_secs(30)).await;
    let recovery = killed.elapsed();
    let report = load.await.expect("load task");
    println!(
        "primary kill: {} requests, {} errors, slowest {:?}; item:1 a hit again {recovery:?} after the kill",
        report.requests(),
        report.errors(),
        report.max_latency()
    );
    assert_eq!(report.errors(), 0, "client errors during the failover");
    assert!(recovered, "hits did not resume within 30 s of the kill");
    proxy.shutdown().await;
}
