//! `/metrics` explains itself: every metric family has a `# HELP` line, the build is
//! `cachalot_build_info{version}`, and `cachalot_redis_up` says whether Redis answers.

mod support;

use std::collections::BTreeSet;
use support::{Origin, RedisServer, get, start_proxy, start_proxy_with};

const ROUTES: &str = "[[route]]\nname = \"item\"\nmatch = \"GET /items/{id}\"\nttl = \"1m\"\n";

fn families(metrics: &str, keyword: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("# {keyword} ")))
        .map(|rest| rest.split(' ').next().unwrap().to_string())
        .collect()
}

fn value(metrics: &str, series: &str) -> Option<String> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')
            .map(str::to_string)
    })
}

#[tokio::test]
async fn every_family_has_help_and_the_build_and_redis_state_are_metrics() {
    let origin = Origin::echo().await;

    // Redis down (nothing listens there): up is 0.
    let dead = format!("redis://127.0.0.1:{}", support::redis::free_port());
    let without = start_proxy_with(origin.addr(), &dead, ROUTES).await;
    get(without.addr(), "/items/1", &[]).await;
    let metrics = get(without.admin_addr(), "/metrics", &[]).await.text();
    assert_eq!(
        value(&metrics, "cachalot_redis_up").as_deref(),
        Some("0"),
        "{metrics}"
    );
    without.shutdown().await;

    let redis = RedisServer::start();
    let proxy = start_proxy(&origin, &redis, ROUTES).await;
    for _ in 0..2 {
        get(proxy.addr(), "/items/1", &[]).await;
    }
    let metrics = get(proxy.admin_addr(), "/metrics", &[]).await.text();
    assert_eq!(
        value(&metrics, "cachalot_redis_up").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            &format!(
                "cachalot_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        )
        .as_deref(),
        Some("1"),
        "{metrics}"
    );
    let typed = families(&metrics, "TYPE");
    let helped = families(&metrics, "HELP");
    assert!(typed.len() >= 8, "{metrics}");
    let missing: Vec<_> = typed.difference(&helped).collect();
    assert!(missing.is_empty(), "families without # HELP: {missing:?}");
    proxy.shutdown().await;
}
