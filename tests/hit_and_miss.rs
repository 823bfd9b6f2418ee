//! The basic promise: a miss goes to the origin and is stored; the next request is a hit
//! from Redis with the origin's status, headers and body, plus `Age` and `Cache-Status`.

mod support;

use support::{Origin, RedisServer, Reply, get, start_proxy};

const CREDENTIAL: &str = r#"
[[route]]
name = "credential"
match = "GET /api/credentials/{id}"
ttl = "10m"
key = "credential:{id}"
"#;

#[tokio::test]
async fn second_request_is_a_hit_with_the_same_response() {
    let redis = RedisServer::start();
    let origin = Origin::start(|seen, n| {
        Reply::ok(format!("{{\"path\":\"{}\",\"n\":{n}}}", seen.target)).header("x-origin", "flask")
    })
    .await;
    let proxy = start_proxy(&origin, &redis, CREDENTIAL).await;

    let first = get(proxy.addr(), "/api/credentials/abc123", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.cache_status(),
        "cachalot; fwd=uri-miss; fwd-status=200; stored; ttl=600; detail=credential"
    );

    let second = get(proxy.addr(), "/api/credentials/abc123", &[]).await;
    assert_eq!(second.status, 200);
    assert!(
        second.cache_status().starts_with("cachalot; hit; ttl="),
        "{}",
        second.cache_status()
    );
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("x-origin"), "flask");
    assert_eq!(second.header("content-type"), "application/json");
    assert_eq!(second.header("age"), "0");
    assert_eq!(origin.count(), 1);

    assert_eq!(redis.keys("cachalot:*"), ["cachalot:credential:abc123"]);
    proxy.shutdown().await;
}
