//! A `304 Not Modified` updates a stored response's headers (RFC 9111 §4.3.4), and the updated
//! response must still be one the proxy may store: a 304 that brings `Cache-Control: private`,
//! `Set-Cookie` or a `Cache-Control` line that cannot be read is answered to the client that
//! asked, and the entry in the cache stays as it was (still stale: the next request asks the
//! origin again). Otherwise one client's `Set-Cookie` would be stored and served to everyone.
//!
//! A raw origin answers the first request with a 200 that is stale at once but has an `ETag`
//! (stored to be revalidated), and every conditional request with the case's 304.

mod raw_origin;
mod support;

use raw_origin::{RawOrigin, ok};
use support::{RedisServer, get, start_proxy_with};

const ROUTES: &str = r#"
[[route]]
name = "page"
match = "GET /page/{case}"
ttl = "origin"
"#;

/// The extra line of each case's 304.
fn line_for(case: &str) -> &'static [u8] {
    match case {
        "private" => b"Cache-Control: private, max-age=60",
        "set-cookie" => b"Set-Cookie: session=victim",
        "unreadable" => b"Cache-Control: max-age=60, x=\"a, private",
        _ => b"Cache-Control: max-age=60",
    }
}

#[tokio::test]
async fn a_304_that_makes_the_response_unstorable_leaves_the_cache_as_it_was() {
    let redis = RedisServer::start();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let origin = RawOrigin::start(move |target| {
        let case = target.rsplit('/').next().unwrap_or_default().to_string();
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(case.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            ok(
                &[b"Cache-Control: max-age=0", b"ETag: \"v1\""],
                "stored body",
            )
        } else {
            let mut out = b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n".to_vec();
            out.extend_from_slice(line_for(&case));
            out.extend_from_slice(b"\r\n\r\n");
            out
        }
    })
    .await;
    let proxy = start_proxy_with(origin.addr(), &redis.url(), ROUTES).await;

    for (case, reason) in [
        ("private", "private"),
        ("set-cookie", "set-cookie"),
        ("unreadable", "unreadable-directives"),
    ] {
        let path = format!("/page/{case}");
        assert!(get(proxy.addr(), &path, &[]).await.stored(), "{case}");
        for round in 0..2 {
            let got = get(proxy.addr(), &path, &[]).await;
            assert_eq!(got.text(), "stored body", "{case}");
            assert!(
                got.cache_status()
                    .starts_with("cachalot; fwd=stale; fwd-status=304")
                    && got
                        .cache_status()
                        .ends_with(&format!("detail=page/{reason}"))
                    && !got.stored(),
                "{case} round {round}: {}",
                got.cache_status()
            );
        }
        assert_eq!(origin.count_of(&path), 3, "{case}: revalidated every time");
        let victim = get(proxy.addr(), &path, &[]).await;
        assert!(!victim.hit(), "{case}: {}", victim.cache_status());
    }

    // The control: a plain 304 refreshes the entry, and the next request is a hit.
    let path = "/page/plain";
    get(proxy.addr(), path, &[]).await;
    let refreshed = get(proxy.addr(), path, &[]).await;
    assert!(refreshed.stored(), "{}", refreshed.cache_status());
    assert!(get(proxy.addr(), path, &[]).await.hit());
    assert_eq!(origin.count_of(path), 2);
    proxy.shutdown().await;
}
