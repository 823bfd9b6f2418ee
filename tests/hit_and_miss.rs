//! The basic promise: a miss goes to the origin and is stored; the next request is a hit
//! from Redis with the origin's status, headers and body, plus `Age` and `Cache-Status`.

mod support;

use support::routes::CREDENTIAL;
use support::{Origin, Reply, Stack, get};

#[tokio::test]
async fn second_request_is_a_hit_with_the_same_response() {
    let origin = Origin::start(|seen, n| {
        Reply::ok(format!("{{\"path\":\"{}\",\"n\":{n}}}", seen.target)).header("x-origin", "flask")
    })
    .await;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(CREDENTIAL).origin(origin).start().await;

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

    assert_eq!(redis.keys("cachalot:*"), ["cachalot:{credential:abc123}"]);
    proxy.shutdown().await;
}

/// A client that already holds the representation gets a 304 from the stored entry, with
/// its validators and no body; the fill itself is never conditional (the origin always
/// sends the whole response to store).
#[tokio::test]
async fn conditional_requests_are_answered_from_the_entry() {
    let origin = Origin::start(|_, n| {
        Reply::ok(format!("{{\"n\":{n}}}"))
            .header("etag", "\"v1\"")
            .header("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT")
            .header("cache-control", "max-age=60")
    })
    .await;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(CREDENTIAL).origin(origin).start().await;
    let path = "/api/credentials/etag";

    // The very first request is conditional: the fill still fetches the whole response.
    let first = get(proxy.addr(), path, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(first.status, 304, "{}", first.cache_status());
    assert!(first.body.is_empty());
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    let seen = origin.seen();
    assert!(
        !seen[0].headers.contains_key("if-none-match"),
        "the fill is unconditional"
    );

    let hit = get(proxy.addr(), path, &[("if-none-match", "W/\"v1\", \"v0\"")]).await;
    assert_eq!(hit.status, 304);
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(hit.header("etag"), "\"v1\"");
    assert_eq!(hit.header("cache-control"), "max-age=60");
    assert!(hit.body.is_empty());

    let since = get(
        proxy.addr(),
        path,
        &[("if-modified-since", "Wed, 02 Jan 2030 00:00:00 GMT")],
    )
    .await;
    assert_eq!(since.status, 304);

    let changed = get(proxy.addr(), path, &[("if-none-match", "\"v2\"")]).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.text(), "{\"n\":1}");
    assert_eq!(origin.count(), 1);
    proxy.shutdown().await;
}
