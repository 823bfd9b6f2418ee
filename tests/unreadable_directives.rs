//! Directives that cannot be read are not "no directives": a response whose `Cache-Control`,
//! `Pragma` or `Surrogate-Control` line cannot be parsed (a byte outside visible ASCII, a
//! quoted string that never closes) is served but never stored, since the unreadable part
//! may be the `private` meant to keep it out of a shared cache.
//!
//! A raw origin sends the bytes as written (an HTTP library would refuse or re-encode them);
//! the real proxy and a real Redis decide; the origin's request count says what was stored.

mod raw_origin;
mod support;

use raw_origin::{RawOrigin, ok};
use support::{RedisServer, get, start_proxy_with};

const ROUTES: &str = r#"
[[route]]
name = "fixed"
match = "GET /fixed/{id}"
ttl = "60s"

[[route]]
name = "origin"
match = "GET /origin/{id}"
ttl = "origin"
"#;

/// The header line each path's response carries, besides `Cache-Control: max-age=60` for
/// `ttl = "origin"` routes to have freshness.
fn line_for(id: &str) -> &'static [u8] {
    match id {
        "non-ascii" => b"Cache-Control: private, ext=\"caf\xc3\xa9\"",
        "latin1" => b"Cache-Control: ext=\"caf\xe9\", private",
        "unclosed" => b"Cache-Control: x=\"a, private",
        "pragma" => b"Pragma: x=\"a",
        "surrogate" => b"Surrogate-Control: max-age=60, x=\"y",
        // Controls: the same shapes, readable.
        "quoted" => b"Cache-Control: ext=\"cafe\", x=\"a, b\"",
        _ => b"X-Plain: yes",
    }
}

async fn origin() -> RawOrigin {
    RawOrigin::start(|target| {
        let id = target.rsplit('/').next().unwrap_or_default();
        ok(
            &[line_for(id), b"Cache-Control: max-age=60"],
            &format!("body of {target}"),
        )
    })
    .await
}

#[tokio::test]
async fn an_unreadable_directive_line_keeps_the_response_out_of_the_cache() {
    let redis = RedisServer::start();
    let origin = origin().await;
    let proxy = start_proxy_with(origin.addr(), &redis.url(), ROUTES).await;

    for route in ["fixed", "origin"] {
        for id in ["non-ascii", "latin1", "unclosed", "pragma", "surrogate"] {
            let path = format!("/{route}/{id}");
            for round in 0..2 {
                let got = get(proxy.addr(), &path, &[]).await;
                assert_eq!(got.status, 200, "{path}");
                assert_eq!(
                    got.text(),
                    format!("body of {path}"),
                    "{path}: served whole"
                );
                assert!(
                    got.cache_status()
                        .ends_with(&format!("detail={route}/unreadable-directives")),
                    "{path} round {round}: {}",
                    got.cache_status()
                );
            }
            assert_eq!(
                origin.count_of(&path),
                2,
                "{path}: never answered from the cache"
            );
        }
    }
    assert!(redis.entries().is_empty(), "{:?}", redis.entries());
    proxy.shutdown().await;
}

#[tokio::test]
async fn readable_quoted_values_and_plain_lines_are_stored() {
    let redis = RedisServer::start();
    let origin = origin().await;
    let proxy = start_proxy_with(origin.addr(), &redis.url(), ROUTES).await;

    for path in ["/fixed/quoted", "/origin/quoted", "/origin/plain"] {
        assert!(get(proxy.addr(), path, &[]).await.stored(), "{path}");
        let hit = get(proxy.addr(), path, &[]).await;
        assert!(hit.hit(), "{path}: {}", hit.cache_status());
        assert_eq!(origin.count_of(path), 1, "{path}");
    }
    proxy.shutdown().await;
}
