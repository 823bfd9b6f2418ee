//! Sentinel: the proxy finds the primary through a real sentinel
//! (`redis-sentinel://...?sentinelServiceName=NAME`), and when the primary is killed under
//! load it follows the promoted replica with no client error.

mod support;

use std::time::{Duration, Instant};
use support::cluster::Sentinel;
use support::{Origin, check_connect, get, load, start_proxy_with};

const ITEMS: &str = r#"
[[route]]
name = "item"
match = "GET /items/{id}"
ttl = "10m"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_follows_the_promoted_replica_when_the_primary_dies() {
    let mut setup = Sentinel::start("cachalot-primary");
    let checked = check_connect(Some(&setup.url()), "", &[]);
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{report}");
    assert!(report.contains("connected (sentinel, plain"), "{report}");
    let origin = Origin::echo().await;
    let proxy = start_proxy_with(origin.addr(), &setup.url(), ITEMS).await;
    let addr = proxy.addr();
    let paths: Vec<String> = (0..20).map(|i| format!("/items/{i}")).collect();
    for path in &paths {
        assert!(get(addr, path, &[]).await.stored(), "{path}");
    }
    assert!(get(addr, &paths[0], &[]).await.hit());
    // The entries went to the primary the sentinel named (and reached the replica).
    assert_eq!(setup.primary.entries().len(), 20);

    let load = tokio::spawn(load::steady(addr, paths, 2, Duration::from_secs(8)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    setup.primary.kill();
    let promoted_port = setup.replica.port();
    let deadline = Instant::now() + Duration::from_secs(30);
    while setup.primary_port() != Some(promoted_port) {
        assert!(
            Instant::now() < deadline,
            "the sentinel did not promote the replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted = Instant::now();
    let report = load.await.expect("load");
    let first_hit = report.first_hit_after(promoted);
    println!(
        "sentinel failover: {} requests, {} errors, slowest {:?}; replica promoted {:?} after the kill, first hit {:?} after the promotion",
        report.requests(),
        report.errors(),
        report.max_latency(),
        promoted - killed,
        first_hit
    );
    assert_eq!(report.errors(), 0);
    assert!(
        first_hit.is_some(),
        "no hit from the promoted primary before the load ended"
    );
    // The hits after the promotion come from the replica that is primary now.
    assert!(!setup.replica.entries().is_empty());
    proxy.shutdown().await;
}
